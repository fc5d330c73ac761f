"""Time every serving runtime × artifact of a version in-process; print JSON.

Exports a model with every artifact beside its SavedModel
(``td.export.saved_model(..., artifacts=[...])``), then for each (runtime, artifact)
pair the manifest offers (`tfdeploy.serving.runtimes.candidates`):

- RSS delta of loading it, each pair in a fresh child process (the runtime's library
  import included, as a server pays it), measured after one call;
- p50/p90 of ``Runtime.call("serving_default", ...)`` at batch 1 and batch 32, all
  pairs loaded in one process and timed in turns (round-robin, ``--turns`` rounds),
  so load on a shared machine falls on every pair alike.

Models: the quickstart's digits CNN (width 0.25, 32x32x1, fit 3 epochs) and, with ``--mobilenet``,
MobileNetV2 alpha 0.35 @ 96x96 with random weights (timing only: its answers are not
checked for accuracy). The CPU's model name and flags (AVX-512 VNNI / AMX matter for
int8) and the load average are recorded beside the figures.

    python benchmarks/bench_runtimes.py [--mobilenet] [--threads 1] [--turns 5] [--out f.json]

The last line printed is the JSON document.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)   # the checkout this script belongs to, not an installed tfdeploy
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from _record import cpu_info, write_result  # noqa: E402  (bench_serving imports it from here too)
ARTIFACTS = ("tflite_float32", "tflite_int8", "onnx", "onnx_int8")


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mobilenet", action="store_true",
                        help="Also MobileNetV2 alpha 0.35 @ 96 (random weights).")
    parser.add_argument("--threads", type=int, default=1,
                        help="Threads per runtime (TensorFlow: intra-op, process-wide). "
                             "Default: 1.")
    parser.add_argument("--turns", type=int, default=5, help="Round-robin rounds. Default: 5.")
    parser.add_argument("--calls", type=int, default=40,
                        help="Batch-1 calls per pair per turn (batch 32: a quarter). "
                             "Default: 40.")
    parser.add_argument("--output-dir", help="Where the versions go (default: a temp dir).")
    parser.add_argument("--out", help="Also write the JSON here.")
    return parser.parse_args(argv)


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def export_models(out_dir, mobilenet):
    """``{model name: version directory}``, every artifact written beside each SavedModel."""
    import numpy as np

    import tfdeploy as td

    keras = td.keras
    rng = np.random.default_rng(0)
    found = {}
    td.tf.random.set_seed(0)
    # trained (briefly) on the bundled digits: an untrained CNN's near-tied classes would
    # fail the int8 ONNX export's agreement check
    digits = td.data.write_digits(os.path.join(out_dir, "digits_data"))
    train = td.data.image_dataset(os.path.join(digits, "train"), shuffle=True, seed=0)
    cnn = td.models.build_cnn((32, 32, 1), num_classes=len(train.class_names), width=0.25)
    cnn.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    cnn.fit(train, epochs=3, verbose=0)
    calib = td.data.to_numpy(train)[0][:200]
    found["digits_cnn"] = td.export.saved_model(
        cnn, os.path.join(out_dir, "digits_cnn"), class_names=train.class_names,
        artifacts=ARTIFACTS, representative_data=calib)
    if mobilenet:
        model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                               weights=None, classes=10)
        calib = rng.uniform(-1, 1, size=(32, 96, 96, 3)).astype(np.float32)
        try:
            found["mobilenet_v2_0.35_96"] = td.export.saved_model(
                model, os.path.join(out_dir, "mobilenet"), image_bytes=False,
                class_names=[f"c{i}" for i in range(10)], artifacts=ARTIFACTS,
                representative_data=calib)
        except Exception as exc:   # random weights: the int8 ONNX check may refuse it
            print(f"mobilenet with every artifact failed ({exc}); without onnx_int8",
                  file=sys.stderr)
            found["mobilenet_v2_0.35_96"] = td.export.saved_model(
                model, os.path.join(out_dir, "mobilenet"), image_bytes=False,
                class_names=[f"c{i}" for i in range(10)],
                artifacts=[a for a in ARTIFACTS if a != "onnx_int8"],
                representative_data=calib)
    return found


def _input_shape(version_dir):
    from tfdeploy.serving.runtimes import read_artifacts

    sig = read_artifacts(version_dir)[0]["signature"]
    return tuple(next(iter(sig["inputs"].values()))["shape"][1:])


def child_rss(version_dir, runtime, artifact, threads):
    """Run in a fresh process: RSS before and after loading one pair (and one call)."""
    script = (
        "import json, sys, numpy as np\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from benchmarks.bench_runtimes import _rss_mb, _input_shape\n"
        "from tfdeploy.serving.runtimes import load_runtime\n"
        "shape = _input_shape(sys.argv[2])\n"
        "before = _rss_mb()\n"
        "rt = load_runtime(sys.argv[3], sys.argv[2], sys.argv[4], num_threads=int(sys.argv[5]))\n"
        "loaded = _rss_mb()\n"
        "rt.call('serving_default', {'images': np.zeros((1, *shape), np.float32)})\n"
        "print(json.dumps({'rss_before_mb': before, 'rss_loaded_mb': loaded,\n"
        "                  'rss_after_call_mb': _rss_mb()}))\n")
    root = REPO
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", script, root, version_dir, runtime, artifact,
                           str(threads)], capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["rss_delta_mb"] = round(row["rss_after_call_mb"] - row["rss_before_mb"], 1)
    return row


def time_in_turns(version_dir, threads, turns, calls):
    """``{(runtime, artifact): {"batch_1": [...ms], "batch_32": [...ms], "batch_1_cpu": [...ms
    per call, one per turn]}}``, timed round-robin; ``threads``: per call (None: the runtimes'
    default, every core this process may use)."""
    import numpy as np

    from tfdeploy.serving.runtimes import candidates, load_runtime

    shape = _input_shape(version_dir)
    rng = np.random.default_rng(1)
    x1 = rng.uniform(0, 255, size=(1, *shape)).astype(np.float32)
    x32 = rng.uniform(0, 255, size=(32, *shape)).astype(np.float32)
    loaded = {}
    for name, entry in candidates(version_dir):
        loaded[(name, entry["name"])] = load_runtime(name, version_dir, entry,
                                                     num_threads=threads)
    times = {key: {"batch_1": [], "batch_32": [], "batch_1_cpu": []} for key in loaded}
    for key, rt in loaded.items():   # warm up every pair at both sizes
        for x in (x1, x32, x1):
            rt.call("serving_default", {"images": x})
    for _ in range(turns):
        for key, rt in loaded.items():
            # batch 32 then batch 1, each a run of its own: a LiteRT resize happens once
            # per run (the first call, dropped), never inside the timed calls
            for label, x, n in (("batch_32", x32, max(2, calls // 4)), ("batch_1", x1, calls)):
                rt.call("serving_default", {"images": x})
                cpu = time.process_time()
                for _ in range(n):
                    start = time.perf_counter()
                    rt.call("serving_default", {"images": x})
                    times[key][label].append((time.perf_counter() - start) * 1e3)
                if label == "batch_1":   # the process's CPU per call (every thread), per turn
                    times[key]["batch_1_cpu"].append((time.process_time() - cpu) * 1e3 / n)
    described = {key: rt.describe() for key, rt in loaded.items()}
    for rt in loaded.values():
        rt.close()
    return times, described


def main(argv=None):
    args = _args(argv)
    import numpy as np

    cpu = cpu_info()
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    out_dir = args.output_dir or tempfile.mkdtemp(prefix="bench_runtimes_")
    start = time.perf_counter()
    versions = export_models(out_dir, args.mobilenet)
    export_s = time.perf_counter() - start
    results = {}
    for model, version_dir in versions.items():
        times, described = time_in_turns(version_dir, args.threads, args.turns, args.calls)
        rows = []
        fastest = min(float(np.median(t["batch_1"])) for t in times.values())
        tf_p50 = float(np.median(times[("tensorflow", "saved_model")]["batch_1"]))
        for (runtime, artifact), t in times.items():
            row = {"runtime": runtime, "artifact": artifact,
                   "precision": described[(runtime, artifact)]["precision"],
                   "file": described[(runtime, artifact)]["file"]}
            for label, values in t.items():
                row[f"{label}_p50_ms"] = round(float(np.median(values)), 4)
                row[f"{label}_p90_ms"] = round(float(np.percentile(values, 90)), 4)
            row["batch_1_speedup_vs_tensorflow"] = round(tf_p50 / row["batch_1_p50_ms"], 2)
            row["is_fastest_batch_1"] = row["batch_1_p50_ms"] == round(fastest, 4)
            row.update(child_rss(version_dir, runtime, artifact, args.threads))
            rows.append(row)
        results[model] = rows
        print(f"{model}: " + ", ".join(
            f"{r['runtime']}/{r['artifact']} {r['batch_1_p50_ms']:.3f} ms" for r in rows),
            file=sys.stderr)
    cpu["loadavg_end"] = os.getloadavg()
    doc = {"benchmark": "bench_runtimes", "cpu": cpu, "threads": args.threads,
           "turns": args.turns, "calls_per_turn": args.calls, "export_s": round(export_s, 1),
           "note": ("in-process Runtime.call, no server; pairs timed round-robin in one "
                    "process; RSS delta from a fresh child per pair (library import "
                    "included). The machine's cores may be shared with other work: "
                    "see loadavg."),
           "models": results}
    write_result(doc, args.out, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
