"""Quickstart figures with tfdeploy vs the same work with plain tfmot calls, in one run.

    python benchmarks/bench_foundation.py [--data DIR] [--repeats 3] > result.json

Prints one JSON document: for each implementation, the final int8 TFLite's gzip size and
accuracy, the unpruned float TFLite's, their ratio and accuracy drop, kernel sparsity read
from the .tflite, and the median wall time of the pruning + QAT fine-tuning (``repeats``
alternating runs from the same baseline weights).
Targets (issue 2): int8 >= 10x smaller (gzip) than unpruned float TFLite at <= 1 point
accuracy drop; tfdeploy's training wall time within 5 % of plain tfmot.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="image dir with train/ and test/ (default digits)")
    p.add_argument("--repeats", type=int, default=5,
                   help="alternating timed runs per implementation (median and min reported)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--prune-epochs", type=int, default=4)
    p.add_argument("--qat-epochs", type=int, default=2)
    args = p.parse_args(argv)

    import tfdeploy as td
    from tfdeploy._keras import keras, tf
    from tfdeploy._keras import tfmot as _tfmot
    from tfdeploy.compress.prune import copy_model

    tfmot = _tfmot()
    tmp = tempfile.mkdtemp(prefix="bench_foundation_")
    data_dir = args.data or td.data.write_digits(os.path.join(tmp, "digits"))
    train = td.data.image_dataset(os.path.join(data_dir, "train"), shuffle=True, seed=0)
    test = td.data.image_dataset(os.path.join(data_dir, "test"))
    x, y = td.data.to_numpy(test)
    steps = int(train.cardinality())

    tf.keras.utils.set_random_seed(0)
    base = td.models.build_cnn((32, 32, 1), len(train.class_names), width=0.25)
    base.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    base.fit(train, epochs=args.epochs, verbose=0)
    base_tfl = td.export.tflite(base, os.path.join(tmp, "base.tflite"))
    baseline = {"accuracy": td.verify.accuracy(td.runtime.load(base_tfl), x, y),
                "gzip_bytes": td.verify.gzip_bytes(base_tfl),
                "file_bytes": td.verify.path_bytes(base_tfl)}

    def compile_(m, lr):
        m.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", ["accuracy"])

    def run_tfdeploy():
        pruned = td.compress.prune(base, 0.8, epochs=args.prune_epochs, steps_per_epoch=train)
        compile_(pruned, 5e-4)
        t0 = time.perf_counter()
        pruned.fit(train, epochs=args.prune_epochs, callbacks=td.compress.callbacks(pruned),
                   verbose=0)
        t_prune = time.perf_counter() - t0
        stripped = td.compress.strip(pruned)
        qat = td.compress.quantize(stripped, preserve="sparsity", calibration_data=train)
        compile_(qat, 1e-4)
        t0 = time.perf_counter()
        qat.fit(train, epochs=args.qat_epochs, verbose=0)
        t_qat = time.perf_counter() - t0
        return qat, t_prune, t_qat, {"schedule": pruned._tfdeploy_pruning}

    def run_plain():
        """What a user writes with tfmot alone (the tfmot guide's per-layer clone_function)."""
        info = {}
        sched = td.compress.PolynomialDecay(0.8).to_tfmot(steps, steps * args.prune_epochs)
        work = copy_model(base)

        def wrap(layer):
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
                return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=sched)
            return layer

        pruned = keras.models.clone_model(work, clone_function=wrap)
        compile_(pruned, 5e-4)
        t0 = time.perf_counter()
        pruned.fit(train, epochs=args.prune_epochs,
                   callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], verbose=0)
        t_prune = time.perf_counter() - t0
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)
        qk = tfmot.quantization.keras

        def annotate(layer):
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense,
                                  keras.layers.MaxPooling2D, keras.layers.Flatten)):
                return qk.quantize_annotate_layer(layer)
            return layer

        with qk.quantize_scope():
            annotated = keras.models.clone_model(stripped, clone_function=annotate)
        try:
            scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
            with qk.quantize_scope():
                qat = qk.quantize_apply(annotated, scheme)
            info["prune_preserving_qat"] = "ok"
        except ValueError as exc:
            info["prune_preserving_qat"] = f"failed: {str(exc)[:160]}"
            with qk.quantize_scope():
                qat = qk.quantize_apply(annotated)
            info["qat_fallback"] = "default 8-bit scheme (does not preserve sparsity)"
        compile_(qat, 1e-4)
        t0 = time.perf_counter()
        qat.fit(train, epochs=args.qat_epochs, verbose=0)
        t_qat = time.perf_counter() - t0
        return qat, t_prune, t_qat, info

    results = {"tfdeploy": [], "plain_tfmot": []}
    final = {}
    for rep in range(args.repeats):
        for name, fn in (("tfdeploy", run_tfdeploy), ("plain_tfmot", run_plain)):
            tf.keras.utils.set_random_seed(rep)
            qat, t_prune, t_qat, info = fn()
            results[name].append({"prune_fit_s": t_prune, "qat_fit_s": t_qat})
            if rep == 0:
                path = td.export.tflite(qat, os.path.join(tmp, f"{name}_int8.tflite"), "int8",
                                        representative_data=train)
                summary = td.verify.weight_summary(path)
                acc = td.verify.accuracy(td.runtime.load(path), x, y)
                final[name] = {
                    "int8_accuracy": acc,
                    "int8_gzip_bytes": td.verify.gzip_bytes(path),
                    "int8_file_bytes": td.verify.path_bytes(path),
                    "int8_kernel_sparsity": summary["sparsity"],
                    "int8_weight_dtypes": summary["dtypes"],
                    "gzip_ratio_vs_float_baseline": baseline["gzip_bytes"]
                    / td.verify.gzip_bytes(path),
                    "accuracy_drop_points": 100 * (baseline["accuracy"] - acc),
                    **{k: v for k, v in info.items() if k != "schedule"},
                }
            print(f"[bench] {name} repeat {rep}: prune {t_prune:.1f}s qat {t_qat:.1f}s",
                  file=sys.stderr)
    for name, runs in results.items():
        total = [r["prune_fit_s"] + r["qat_fit_s"] for r in runs]
        final[name]["train_wall_s_median"] = statistics.median(total)
        final[name]["train_wall_s_min"] = min(total)
        final[name]["train_wall_s_runs"] = total
        final[name]["prune_fit_s_median"] = statistics.median(r["prune_fit_s"] for r in runs)
        final[name]["qat_fit_s_median"] = statistics.median(r["qat_fit_s"] for r in runs)
    ratio = final["tfdeploy"]["train_wall_s_median"] / final["plain_tfmot"]["train_wall_s_median"]
    ratio_min = final["tfdeploy"]["train_wall_s_min"] / final["plain_tfmot"]["train_wall_s_min"]
    out = {
        "baseline_float_tflite": baseline,
        "implementations": final,
        "tfdeploy_vs_plain_train_time_ratio": ratio,
        "tfdeploy_vs_plain_train_time_ratio_of_minimums": ratio_min,
        # per stage: pruning is the same work in both; QAT is not (plain tfmot's
        # pruning-preserving scheme fails on this model, so it falls back to the default
        # scheme, which skips the sparsity masks tfdeploy's QAT applies every step)
        "prune_fit_time_ratio": final["tfdeploy"]["prune_fit_s_median"]
        / final["plain_tfmot"]["prune_fit_s_median"],
        "qat_fit_time_ratio": final["tfdeploy"]["qat_fit_s_median"]
        / final["plain_tfmot"]["qat_fit_s_median"],
        "targets": {
            "int8_gzip_10x_smaller": final["tfdeploy"]["gzip_ratio_vs_float_baseline"] >= 10,
            "accuracy_drop_le_1pt": final["tfdeploy"]["accuracy_drop_points"] <= 1.0,
            "train_time_within_5pct": ratio <= 1.05,
        },
        "settings": vars(args) | {"steps_per_epoch": steps},
    }
    print(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
