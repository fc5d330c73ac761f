"""How long an isolated model's worker takes to start, and to be replaced after a SIGKILL, per
``IsolatedModel`` start method (``forkserver``: forked from a process that imported TensorFlow
once; ``exec``: a new interpreter that imports it), with the memory each process holds.

The methods are timed in turns (forkserver, exec, forkserver, ...) so that load from other
work on the machine falls on both alike. Per turn: the first model's start (for forkserver this
includes starting the fork server), a second model's start while the first is loaded, and
``--kills`` replacements of the first model's worker (SIGKILL, then until a new worker is
ready). Model: the unknown-rank conv SavedModel of tests/test_serving_isolation.py.

    python benchmarks/bench_isolation_start.py [--turns 2] [--kills 3] [--out results.json]

Prints one JSON object.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from _record import run_info, write_result  # noqa: E402


def memory_mb(pid):
    """``{"rss": MB, "pss": MB}`` of a process (PSS splits pages shared with forked siblings)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("Rss", "Pss"):
                out[key.lower()] = round(int(line.split()[1]) / 1024, 1)
    return out


def one_turn(path, method, kills):
    from tfdeploy.serving.isolation import IsolatedModel

    t0 = time.perf_counter()
    first = IsolatedModel(path, start_method=method, restart_backoff=(0.0, 5.0))
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = IsolatedModel(path, start_method=method)
    second_s = time.perf_counter() - t0
    memory = {"worker": memory_mb(first.pids[0])}
    server = first._pool.forkserver
    if server is not None:
        memory["fork_server"] = memory_mb(server.pid)
    replace = []
    for _ in range(kills):
        old = first.pids[0]
        t0 = time.perf_counter()
        os.kill(old, signal.SIGKILL)
        while first.pids[0] == old:
            time.sleep(0.001)
        assert first.wait_ready(300), "the killed worker was not replaced"
        replace.append(time.perf_counter() - t0)
    second.close()
    first.close()
    return {"first_model_start_s": round(first_s, 3), "second_model_start_s": round(second_s, 3),
            "replace_after_sigkill_s": [round(x, 3) for x in replace], "memory_mb": memory}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    run = run_info()
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    directory = tempfile.mkdtemp(prefix="bench_isolation_start_")
    path = os.path.join(directory, "conv")
    subprocess.run([sys.executable, "-c", "import sys; from test_serving_isolation import "
                    "build_unknown_rank_conv as b; b(sys.argv[1])", path], check=True,
                   cwd=os.path.join(ROOT, "tests"), capture_output=True)
    load = [os.getloadavg()[0]]
    turns = {"forkserver": [], "exec": []}
    for _ in range(args.turns):
        for method in turns:
            turns[method].append(one_turn(path, method, args.kills))
            load.append(os.getloadavg()[0])
    summary = {}
    for method, runs in turns.items():
        summary[method] = {
            "first_model_start_s_median": statistics.median(r["first_model_start_s"] for r in runs),
            "second_model_start_s_median": statistics.median(
                r["second_model_start_s"] for r in runs),
            "replace_after_sigkill_s_median": statistics.median(
                x for r in runs for x in r["replace_after_sigkill_s"])}
    result = {"run": run, "load_average_1min": [round(x, 2) for x in load],
              "summary": summary, "turns": turns}
    write_result(result, args.out, indent=1)

if __name__ == "__main__":
    main()
