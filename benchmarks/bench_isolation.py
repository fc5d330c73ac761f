"""What running a model in an isolated worker process costs (issue 20: containment of aborts).

Compares, per call, ``Servable.call``'s in-process invocation (``fn(**tf.constant(feeds))`` then
``.numpy()``) with ``IsolatedModel.call`` (the same in a worker, feeds and outputs pickled over a
socket pair), for a small MLP (64-128-10) and the 32x32x1 CNN of the serving tests, at batch 1
and 32, from 1 and 4 client threads; isolated with one worker running one call at a time, one
worker running up to 4 at once (``concurrency=4``), and (CNN) two workers. The modes are timed in turns (in-process, isolated,
in-process, ...), so that load from other work on the machine falls on all of them alike.
Also: RSS of the parent and of a worker, and how long a worker takes to start and to restart.

    python benchmarks/bench_isolation.py [--calls 200] [--turns 3] [--out results.json]

Prints one JSON object.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(directory):
    """Write the MLP and the CNN SavedModels (run in a subprocess: it imports Keras)."""
    sys.path.insert(0, ROOT)
    import tensorflow as tf

    from tests.test_serving_support import build_digits_classifier

    build_digits_classifier(os.path.join(directory, "cnn"), version=1)

    class MLP(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            self.w1 = tf.Variable(rng.normal(size=(64, 128)).astype(np.float32) * 0.1)
            self.b1 = tf.Variable(np.zeros(128, np.float32))
            self.w2 = tf.Variable(rng.normal(size=(128, 10)).astype(np.float32) * 0.1)
            self.b2 = tf.Variable(np.zeros(10, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def serve(self, x):
            h = tf.nn.relu(x @ self.w1 + self.b1)
            return {"probabilities": tf.nn.softmax(h @ self.w2 + self.b2)}

    mlp = MLP()
    tf.saved_model.save(mlp, os.path.join(directory, "mlp", "1"),
                        signatures={"serving_default": mlp.serve})


def rss_mb(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q)) * 1000.0   # ms


def run_cell(call, feeds, threads, calls):
    """``calls`` calls spread over ``threads`` threads; (latencies in s, wall seconds)."""
    latencies = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    per_thread = max(1, calls // threads)

    def work(i):
        barrier.wait()
        out = latencies[i]
        for _ in range(per_thread):
            t0 = time.perf_counter()
            call(feeds)
            out.append(time.perf_counter() - t0)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    return [x for lat in latencies for x in lat], wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per mode, turn and cell")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--build", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build(args.build)
        return

    sys.path.insert(0, ROOT)
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    tmp = tempfile.mkdtemp(prefix="bench_isolation_")
    subprocess.run([sys.executable, __file__, "--build", tmp], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rss_start = rss_mb()
    import tensorflow as tf

    from tfdeploy.serving.isolation import IsolatedModel

    rss_tf = rss_mb()
    models = {"mlp": os.path.join(tmp, "mlp", "1"), "cnn": os.path.join(tmp, "cnn", "1")}
    loaded, isolated, startup, worker_rss = {}, {}, {}, {}
    for name, path in models.items():
        loaded[name] = tf.saved_model.load(path, tags=["serve"])
    rss_models = rss_mb()
    for name, path in models.items():
        t0 = time.perf_counter()
        isolated[name] = IsolatedModel(path)
        startup[name] = round(time.perf_counter() - t0, 2)
    isolated["cnn_w2"] = IsolatedModel(models["cnn"], workers=2)
    for name, path in models.items():
        isolated[f"{name}_c4"] = IsolatedModel(path, concurrency=4)

    results = {}
    try:
        for name in models:
            fn = loaded[name].signatures["serving_default"]
            (input_name, spec), = fn.structured_input_signature[1].items()
            rng = np.random.default_rng(0)
            for batch in (1, 32):
                shape = [batch] + [int(d) for d in spec.shape[1:]]
                dtype = spec.dtype.as_numpy_dtype
                feeds = {input_name: (rng.random(shape) * 255).astype(dtype)}

                def in_process(f, fn=fn):
                    out = fn(**{k: tf.constant(v) for k, v in f.items()})
                    return {k: v.numpy() for k, v in out.items()}

                modes = {"in_process": in_process,
                         "isolated": lambda f, m=isolated[name]: m.call("serving_default", f)}
                modes["isolated_concurrency_4"] = (
                    lambda f, m=isolated[f"{name}_c4"]: m.call("serving_default", f))
                if name == "cnn":
                    modes["isolated_2_workers"] = (
                        lambda f, m=isolated["cnn_w2"]: m.call("serving_default", f))
                same = in_process(feeds)
                got = modes["isolated"](feeds)
                assert set(same) == set(got)
                for k in same:
                    if same[k].dtype.kind in "OSU":
                        assert np.array_equal(same[k], got[k]), k
                    else:
                        np.testing.assert_allclose(same[k], got[k], rtol=1e-5)
                for threads in (1, 4):
                    acc = {m: ([], 0.0, 0) for m in modes}
                    for mode, call in modes.items():     # warm up
                        run_cell(call, feeds, threads, 20)
                    for _ in range(args.turns):
                        for mode, call in modes.items():
                            lat, wall = run_cell(call, feeds, threads, args.calls)
                            all_lat, total, n = acc[mode]
                            acc[mode] = (all_lat + lat, total + wall, n + len(lat))
                    cell = {}
                    for mode, (lat, wall, n) in acc.items():
                        cell[mode] = {"p50_ms": round(percentile(lat, 50), 3),
                                      "p99_ms": round(percentile(lat, 99), 3),
                                      "calls_per_s": round(n / wall, 1)}
                    cell["isolated_minus_in_process_p50_ms"] = round(
                        cell["isolated"]["p50_ms"] - cell["in_process"]["p50_ms"], 3)
                    results[f"{name}/batch{batch}/threads{threads}"] = cell
        for name in models:
            worker_rss[name] = rss_mb(isolated[name].pids[0])
        # Restart: SIGKILL the CNN's worker and time until a new one answers.
        m = isolated["cnn"]
        t0 = time.perf_counter()
        os.kill(m.pids[0], signal.SIGKILL)
        while m.ready:
            time.sleep(0.001)
        m.wait_ready(300)
        restart_s = round(time.perf_counter() - t0, 2)
    finally:
        for m in isolated.values():
            m.close()
        shutil.rmtree(tmp, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    model_name = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model_name = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                           if line.startswith("Model name")), "")
    except OSError:
        pass
    report = {
        "cpu": model_name, "cpus": os.cpu_count(), "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: TF default)"),
        "loadavg_before": load_before, "loadavg_after": load_after,
        "note": "shared machine: other work ran beside this benchmark; modes timed in turns",
        "calls_per_cell": args.calls * args.turns, "turns": args.turns,
        "latency": results,
        "rss_mb": {"parent_before_tf": rss_start, "parent_with_tf": rss_tf,
                   "parent_with_tf_and_both_models": rss_models,
                   "worker_mlp": worker_rss.get("mlp"), "worker_cnn": worker_rss.get("cnn")},
        "worker_start_s": startup, "worker_restart_after_sigkill_s": restart_s,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
