"""How a file runtime's threads serve 1 and 8 concurrent callers (issue 21: threads policy).

For one model version, each setup below is loaded in this process and timed in alternating
rounds at batch 1: requests/s and the process's CPU time per call (every thread: a runtime's
own workers count) from 1 caller and from 8 caller threads, and the CPU the process burns
while idle for 0.3 s after (spinning worker threads). The CPU columns hold on a loaded
machine; the requests/s need idle cores.

    python benchmarks/bench_runtime_threads.py --version_dir saved_models/mobilenet_v2/1 \\
        [--rounds 5] [--setups litert_mixed,ort_nospin] [--out results.json]

Setups (``N``: the cores this process may use): ``litert_one`` (one N-thread interpreter),
``litert_single`` (N one-thread interpreters), ``litert_mixed`` (the default: a lone call on
the N-thread interpreter, overlapping calls on one-thread ones), ``ort_spin`` / ``ort_nospin``
(one ONNX Runtime session, N intra-op threads, spinning on / off: off is the default),
``ort_single`` (1 thread), ``ov_latency`` (the default) / ``ov_throughput`` (OpenVINO's
PERFORMANCE_HINT, N streams).
"""

import argparse
import os
import sys
import threading
import time

from _record import run_info, write_result


def setups(cores):
    """``{name: (runtime, artifact precision, options)}``."""
    return {
        "litert_one": ("litert", "int8", {"num_threads": cores, "instances": 1}),
        "litert_single": ("litert", "int8", {"num_threads": 1, "instances": cores}),
        "litert_mixed": ("litert", "int8", {"num_threads": cores, "instances": cores}),
        "ort_spin": ("onnxruntime", "float32", {"num_threads": cores, "spinning": True}),
        "ort_nospin": ("onnxruntime", "float32", {"num_threads": cores, "spinning": False}),
        "ort_single": ("onnxruntime", "float32", {"num_threads": 1}),
        "ov_latency": ("openvino", "float32", {"num_threads": cores,
                                               "performance_hint": "LATENCY"}),
        "ov_throughput": ("openvino", "float32", {"num_threads": cores, "num_streams": cores,
                                                  "performance_hint": "THROUGHPUT"}),
    }


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version_dir", required=True,
                        help="A version directory with its artifacts (assets.extra/"
                             "artifacts.json), e.g. saved_models/mobilenet_v2/1.")
    parser.add_argument("--setups", help="Comma-separated setups (default: all).")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds. Default: 5.")
    parser.add_argument("--calls", type=int, default=40,
                        help="Calls per round from 1 caller (8 callers: a fifth each). "
                             "Default: 40.")
    parser.add_argument("--out", help="Also write the JSON here.")
    return parser.parse_args(argv)


def _one(call, calls):
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(calls):
        call()
    return calls / (time.perf_counter() - start), (time.process_time() - cpu) * 1e3 / calls


def _many(call, callers, each):
    barrier = threading.Barrier(callers + 1)

    def work():
        barrier.wait()
        for _ in range(each):
            call()

    threads = [threading.Thread(target=work) for _ in range(callers)]
    for t in threads:
        t.start()
    barrier.wait()
    cpu, start = time.process_time(), time.perf_counter()
    for t in threads:
        t.join()
    n = callers * each
    return n / (time.perf_counter() - start), (time.process_time() - cpu) * 1e3 / n


def main(argv=None):
    args = _args(argv)
    run = run_info(argv)   # (the load at the start)
    import numpy as np

    from tfdeploy.runtime.artifacts import read_artifacts
    from tfdeploy.serving.runtimes import load_runtime
    from tfdeploy.serving.runtimes.base import default_threads

    cores = default_threads()
    table = setups(cores)
    names = args.setups.split(",") if args.setups else list(table)
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise SystemExit(f"Unrecognized setups {unknown}. Supported setups are: {list(table)}.")
    entries = read_artifacts(args.version_dir)
    signature = entries[0].get("signature") or {}
    (input_name, spec), = signature["inputs"].items()
    x = np.random.default_rng(1).uniform(0, 255, [1] + spec["shape"][1:]).astype(np.float32)
    loaded = {}
    for name in names:
        runtime, precision, options = table[name]
        entry = next((e for e in entries if runtime in e["runtimes"]
                      and e.get("precision") == precision), None)
        if entry is None:
            print(f"{name}: no {precision} artifact for {runtime}; skipped", file=sys.stderr)
            continue
        rt = loaded[name] = load_runtime(runtime, args.version_dir, entry, **options)
        for _ in range(5):
            rt.call("serving_default", {input_name: x})
    cells = {name: {"c1_rps": [], "c1_cpu_ms": [], "c8_rps": [], "c8_cpu_ms": [],
                    "idle_cpu_ms_per_0.3s": []} for name in loaded}
    for r in range(args.rounds):
        for name in (list(loaded) if r % 2 == 0 else list(loaded)[::-1]):
            call = lambda rt=loaded[name]: rt.call("serving_default", {input_name: x})  # noqa
            rps, cpu = _one(call, args.calls)
            cells[name]["c1_rps"].append(rps)
            cells[name]["c1_cpu_ms"].append(cpu)
            idle = time.process_time()
            time.sleep(0.3)
            cells[name]["idle_cpu_ms_per_0.3s"].append((time.process_time() - idle) * 1e3)
            rps, cpu = _many(call, 8, max(1, args.calls // 5))
            cells[name]["c8_rps"].append(rps)
            cells[name]["c8_cpu_ms"].append(cpu)
    results = {}
    for name, rt in loaded.items():
        info = rt.describe()
        results[name] = {**{k: round(float(np.median(v)), 2) for k, v in cells[name].items()},
                         "runtime": info["runtime"], "artifact": info["artifact"],
                         "threads": info["threads"], "instance_threads": info["instance_threads"],
                         "options": table[name][2]}
        rt.close()
    write_result({"benchmark": "bench_runtime_threads", "run": run,
                  "version_dir": args.version_dir, "cores": cores, "rounds": args.rounds,
                  "calls": args.calls, "note": "medians of alternating rounds, in process, "
                  "batch 1; CPU: the process's, every thread", "setups": results},
                 args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
