"""Benchmark every artifact format × runtime of the quickstart model; print JSON.

Trains the quickstart CNN (width 0.25, digits, 32x32x1), exports it as a
SavedModel, TFLite (float32, float16, dynamic, int8 with float and int8 I/O,
16x8) and ONNX (float, onnxruntime dynamic and static int8), then for each
artifact, in its own runtime: accuracy and agreement with Keras on the test
split, p50/p90/p99 latency at batch 1, throughput at a larger batch, peak
memory, file size, FLOPs per inference and the achieved share of this
machine's measured float32 matmul peak. The float Keras model (a traced
``tf.function``, as served) is the baseline.

    python benchmarks/bench_artifacts.py [--threads N] [--iters 200] [--out results.json]

The last line printed is the JSON document; a table goes to stderr.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="Image directory with train/ and test/ "
                                       "(default: the bundled digits).")
    parser.add_argument("--width", type=float, default=0.25, help="CNN width. Default: 0.25.")
    parser.add_argument("--epochs", type=int, default=8, help="Training epochs. Default: 8.")
    parser.add_argument("--iters", type=int, default=200, help="Batch-1 calls. Default: 200.")
    parser.add_argument("--batch-size", type=int, default=32, help="Throughput batch size.")
    parser.add_argument("--threads", type=int, help="Threads for every runtime.")
    parser.add_argument("--output-dir", help="Where artifacts go (default: a temp dir).")
    parser.add_argument("--out", help="Also write the JSON here.")
    return parser.parse_args(argv)


def main(argv=None):
    args = _args(argv)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import tfdeploy as td
    from tfdeploy.export import ExportFallbackWarning  # noqa: F401  (import check)

    tf.keras.utils.set_random_seed(0)
    out_dir = args.output_dir or tempfile.mkdtemp(prefix="tfdeploy-bench-")
    data_dir = args.data or td.data.write_digits(os.path.join(out_dir, "digits"))
    train = td.data.image_dataset(os.path.join(data_dir, "train"), shuffle=True, seed=0)
    test = td.data.image_dataset(os.path.join(data_dir, "test"))
    x, y = td.data.to_numpy(test)
    names = train.class_names

    start = time.perf_counter()
    model = td.models.build_cnn((32, 32, 1), len(names), width=args.width)
    model.compile(td.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  ["accuracy"])
    model.fit(train, epochs=args.epochs, verbose=0)
    train_s = time.perf_counter() - start

    p = lambda name: os.path.join(out_dir, name)  # noqa: E731
    start = time.perf_counter()
    artifacts = {
        "saved_model": td.export.saved_model(model, p("digits"), class_names=names,
                                             warmup_data=train, overwrite=True, version=1),
        "tflite_float32": td.export.tflite(model, p("float32.tflite")),
        "tflite_float16": td.export.tflite(model, p("float16.tflite"), "float16"),
        "tflite_dynamic": td.export.tflite(model, p("dynamic.tflite"), "dynamic"),
        "tflite_int8": td.export.tflite(model, p("int8.tflite"), "int8",
                                        representative_data=train),
        "tflite_int8_io": td.export.tflite(model, p("int8_io.tflite"), "int8",
                                           representative_data=train, io_type="int8"),
        "tflite_int16x8": td.export.tflite(model, p("int16x8.tflite"), "int16x8",
                                           representative_data=train),
        "onnx_float32": td.export.onnx(model, p("float32.onnx")),
        "onnx_dynamic": td.export.onnx(model, p("dynamic.onnx"), quantize="dynamic"),
        "onnx_static_int8": td.export.onnx(model, p("static.onnx"), quantize="static",
                                           representative_data=train),
    }
    export_s = time.perf_counter() - start

    reports = {r_name: td.verify.verify(path, model, x, y, raise_on_failure=False,
                                        name=r_name)
               for r_name, path in artifacts.items()}
    peak = td.verify.matmul_peak_flops()
    results = [dict(td.verify.bench(model, x, batch_size=args.batch_size, iters=args.iters,
                                    threads=args.threads, name="keras_float32"),
                    accuracy=float((model.predict(x, verbose=0).argmax(-1) == y).mean()),
                    agreement=1.0, max_abs_diff=0.0, verified=True)]
    for r_name, path in artifacts.items():
        r = td.verify.bench(path, x, batch_size=args.batch_size, iters=args.iters,
                            threads=args.threads, name=r_name)
        rep = reports[r_name]
        r.update(accuracy=rep["accuracy"], agreement=rep["agreement"],
                 max_abs_diff=rep["max_abs_diff"], verified=rep["passed"],
                 precision=rep["precision"])
        results.append(r)
    by = {r["name"]: r for r in results}
    speed = td.verify.speedup

    def pair(base, fast):
        return {"throughput": speed(by[base], by[fast]),
                "latency_p50": speed(by[base], by[fast], "p50_ms")}

    doc = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "threads": args.threads, "matmul_peak_gflops": peak / 1e9,
                    "python": sys.version.split()[0], "tensorflow": tf.__version__},
        "model": {"width": args.width, "params": int(model.count_params()),
                  "epochs": args.epochs, "train_s": train_s, "export_s": export_s,
                  "test_samples": int(len(x)),
                  "flops_per_inference": results[0]["flops_per_inference"]},
        "results": [{k: v for k, v in r.items() if k not in ("machine_peak_flops",)}
                    for r in results],
        "speedup": {
            "tflite_int8_vs_keras_float32": pair("keras_float32", "tflite_int8"),
            "tflite_int8_vs_tflite_float32": pair("tflite_float32", "tflite_int8"),
            "onnx_static_int8_vs_onnx_float32": pair("onnx_float32", "onnx_static_int8"),
        },
        "fraction_of_peak": {r["name"]: r["fraction_of_peak"] for r in results},
        "all_verified": all(r["verified"] for r in results),
    }
    print(td.verify.format_table(results), file=sys.stderr)
    text = json.dumps(doc, default=str)
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(doc, indent=2, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
