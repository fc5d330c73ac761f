"""The quickstart pipeline: train → prune → pruning-preserving QAT → export → verify.

Each stage uses the public API exactly as a user's own script would.
"""

import json
import os
import shutil
import time

import numpy as np

from tfdeploy import compress, data, export, model_io, models, runtime, verify, viz
from tfdeploy._atomic import atomic_file
from tfdeploy._keras import build_fit_state, keras, tf
from tfdeploy._table import render
from tfdeploy.errors import DataError

COLUMNS = ("variant", "params", "sparsity", "file bytes", "gzip bytes", "accuracy", "ms/sample")


def _fit(model, train_ds, epochs, lr, log_dir, extra_callbacks=(), verbose=2):
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", ["accuracy"])
    build_fit_state(model, train_ds)  # one trace of the train step, not two
    cbs = list(extra_callbacks)
    if log_dir:
        cbs.append(keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=1))
    return model.fit(train_ds, epochs=epochs, callbacks=cbs, verbose=verbose)


def _row(variant, target, path, x, y, params, sparsity, technique, quantization, fmt, rt):
    return {
        "variant": variant, "technique": technique, "quantization": quantization,
        "format": fmt, "runtime": rt,
        "params": int(params),
        "sparsity": float(sparsity),
        "file_bytes": verify.path_bytes(path) if path else None,
        "gzip_bytes": verify.gzip_bytes(path) if path else None,
        "accuracy": verify.accuracy(target, x, y),
        "ms_per_sample": verify.latency_ms(target, x),
        "path": path,
    }


def _copy_artifact(version_dir, artifact, path, class_names):
    """Copy the version directory's ``artifact`` file to ``path`` (replacing it atomically) with
    its labels file beside it, as `tfdeploy.export.tflite` writes them; returns ``path``."""
    entry = next(e for e in runtime.read_artifacts(version_dir) if e["name"] == artifact)
    with atomic_file(path, overwrite=True) as tmp:
        shutil.copyfile(entry["path"], tmp)
    with atomic_file(os.path.splitext(path)[0] + ".labels.txt", overwrite=True) as tmp:
        with open(tmp, "w") as f:
            f.write("\n".join(str(c) for c in class_names) + "\n")
    return path


def quickstart(data_dir=None, output_dir="saved_models", log_dir="logs/quickstart", name="digits",
               epochs=8, prune_epochs=4, qat_epochs=2, sparsity=0.8, width=0.25,
               image_size=(32, 32), seed=0, verbose=2, report_dir="reports/quickstart",
               visuals=True):
    """Run the whole worked example and return the comparison rows.

    Args:
        data_dir: image directory with ``train/`` and ``test/`` class folders; None
            writes the bundled digits to ``data/digits`` first.
        output_dir: where artifacts land (SavedModel under ``output_dir/name/N``).
        log_dir: TensorBoard logs root (None disables logging).
        name: model name. epochs / prune_epochs / qat_epochs: epochs per stage.
        sparsity: pruning target. width: CNN width multiplier.
        image_size: input size. seed: random seed. verbose: Keras verbosity.
        report_dir: where ``report.md``/``report.html`` go (None: no report).
        visuals: render the plots, saliency maps, HParams and report
            (`tfdeploy.viz.visualize`); False keeps only the text table.

    Returns:
        A dict with ``rows`` (one per variant), ``artifacts``, ``class_names``,
        ``timings`` and ``report`` (paths, or None).
    """
    keras.utils.set_random_seed(seed)
    if data_dir is None:
        data_dir = data.write_digits(data.DEFAULT_DIR)
    train_dir, test_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "test")
    for d in (train_dir, test_dir):
        if not os.path.isdir(d):
            raise DataError(
                f"{data_dir!r} must contain train/ and test/ folders, each with one sub-folder "
                f"per class; {d!r} is missing.")
    train = data.image_dataset(train_dir, image_size=image_size, shuffle=True, seed=seed)
    test = data.image_dataset(test_dir, image_size=image_size)
    if train.class_names != test.class_names:
        raise DataError(f"train/ classes {train.class_names} differ from test/ classes "
                        f"{test.class_names}.")
    x_test, y_test = data.to_numpy(test)
    logs = (lambda stage: os.path.join(log_dir, stage)) if log_dir else (lambda stage: None)
    timings = {}

    # 1. baseline
    start = time.perf_counter()
    base = models.build_cnn((*image_size, 1), len(train.class_names), width=width)
    _fit(base, train, epochs, 1e-3, logs("baseline"), verbose=verbose)
    timings["baseline_s"] = time.perf_counter() - start

    # 2. magnitude pruning, fine-tuned with the pruning callbacks
    start = time.perf_counter()
    pruned = compress.prune(base, sparsity, epochs=prune_epochs, steps_per_epoch=train)
    _fit(pruned, train, prune_epochs, 5e-4, logs("prune"),
         compress.callbacks(pruned, log_dir=logs("prune")), verbose=verbose)
    pruned = compress.strip(pruned)
    timings["prune_s"] = time.perf_counter() - start

    # 3. pruning-preserving quantization-aware training
    start = time.perf_counter()
    qat = compress.quantize(pruned, preserve="sparsity", calibration_data=train)
    _fit(qat, train, qat_epochs, 1e-4, logs("qat"),
         compress.callbacks(qat, log_dir=logs("qat")), verbose=verbose)
    timings["qat_s"] = time.perf_counter() - start

    # 4. export
    start = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    names = train.class_names
    # the version directory also holds the float and int8 .tflite files and the float .onnx
    # file with a manifest (assets.extra/artifacts.json), so every runtime can serve it
    sm_path = export.saved_model(pruned, os.path.join(output_dir, name), class_names=names,
                                 warmup_data=train, representative_data=train,
                                 artifacts={"tflite_float32": None, "tflite_int8": qat,
                                            "onnx": None})
    # a re-run of the quickstart replaces its own files (the SavedModel gets a new version);
    # the pruned float and int8 files beside it are the version directory's, not converted twice
    base_tfl = export.tflite(base, os.path.join(output_dir, f"{name}_baseline_float32.tflite"),
                             class_names=names, overwrite=True)
    float_tfl = _copy_artifact(sm_path, "tflite_float32",
                               os.path.join(output_dir, f"{name}_float32.tflite"), names)
    int8_tfl = _copy_artifact(sm_path, "tflite_int8",
                              os.path.join(output_dir, f"{name}_int8.tflite"), names)
    keras_base = os.path.join(output_dir, f"{name}_baseline.keras")
    keras_pruned = os.path.join(output_dir, f"{name}_pruned.keras")
    model_io.save_model(base, keras_base)      # with its technique history
    model_io.save_model(pruned, keras_pruned)
    timings["export_s"] = time.perf_counter() - start

    # 5. verify every artifact in its own runtime
    start = time.perf_counter()
    base_params = base.count_params()
    targets = {"keras baseline float32": verify.KerasTarget(base),
               "tflite baseline float32": runtime.load(base_tfl),
               "saved_model pruned float32": runtime.load(sm_path),
               "tflite pruned float32": runtime.load(float_tfl),
               "tflite pruned+QAT int8": runtime.load(int8_tfl)}
    t = targets
    rows = [
        _row("keras baseline float32", t["keras baseline float32"], None, x_test, y_test,
             base_params, compress.model_sparsity(base), "baseline", "float32", "keras",
             "keras"),
        _row("tflite baseline float32", t["tflite baseline float32"], base_tfl, x_test, y_test,
             base_params, verify.weight_summary(base_tfl)["sparsity"], "baseline", "float32",
             "tflite", "litert"),
        _row("saved_model pruned float32", t["saved_model pruned float32"], sm_path, x_test,
             y_test, pruned.count_params(), verify.weight_summary(sm_path)["sparsity"], "prune",
             "float32", "saved_model", "tensorflow"),
        _row("tflite pruned float32", t["tflite pruned float32"], float_tfl, x_test, y_test,
             pruned.count_params(), verify.weight_summary(float_tfl)["sparsity"], "prune",
             "float32", "tflite", "litert"),
        _row("tflite pruned+QAT int8", t["tflite pruned+QAT int8"], int8_tfl, x_test, y_test,
             pruned.count_params(), verify.weight_summary(int8_tfl)["sparsity"], "prune+qat",
             "int8", "tflite", "litert"),
    ]
    timings["verify_s"] = time.perf_counter() - start
    result = {"rows": rows, "class_names": names, "timings": timings, "report": None,
              "artifacts": {"saved_model": sm_path, "tflite_baseline_float32": base_tfl,
                            "tflite_float32": float_tfl, "tflite_int8": int8_tfl,
                            "keras_baseline": keras_base, "keras_pruned": keras_pruned}}
    if log_dir and not visuals:
        _log_table(rows, os.path.join(log_dir, "comparison"))
    if visuals and (log_dir or report_dir):
        start = time.perf_counter()
        pruned_kernels = viz.model_kernels(pruned)
        out = viz.visualize(
            rows, x_test, y_test, names, targets, log_dir=log_dir, report_dir=report_dir,
            models={"float baseline": base, "pruned": pruned, "pruned+QAT (int8 sim.)": qat},
            kernels={"baseline": viz.model_kernels(base), "pruned 80%": pruned_kernels,
                     "int8 .tflite (levels)": viz.tflite_kernels(int8_tfl, pruned_kernels)},
            sparsity_logs={"prune": logs("prune"), "qat": logs("qat")} if log_dir else None,
            title=f"tfdeploy quickstart: {name}", compressed="tflite pruned+QAT int8",
            notes=["Seconds per stage: " + ", ".join(f"{k[:-2]} {v:.1f}"
                                                     for k, v in timings.items()) + "."])
        result["report"] = out["report"]
        result["saliency"] = out["saliency"]
        timings["visuals_s"] = time.perf_counter() - start
    return result


def format_table(rows):
    """Render the comparison rows as an aligned text table."""
    cells = [(r["variant"], f"{r['params']:,}", f"{r['sparsity']:.1%}",
              "-" if r["file_bytes"] is None else f"{r['file_bytes']:,}",
              "-" if r["gzip_bytes"] is None else f"{r['gzip_bytes']:,}",
              f"{r['accuracy']:.2%}", f"{r['ms_per_sample']:.3f}") for r in rows]
    return render(COLUMNS, cells, align="l" + "r" * (len(COLUMNS) - 1), sep=" | ",
                  rule_sep="-+-")


def _log_table(rows, log_dir):
    """Write the comparison as TensorBoard text (the HParams sessions carry the numbers)."""
    writer = tf.summary.create_file_writer(log_dir)
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join(
        f"| {r['variant']} | {r['params']:,} | {r['sparsity']:.1%} | {r['file_bytes'] or '-'} | "
        f"{r['gzip_bytes'] or '-'} | {r['accuracy']:.2%} | {r['ms_per_sample']:.3f} |\n"
        for r in rows)
    with writer.as_default(step=0):
        tf.summary.text("comparison", header + body)
        tf.summary.text("comparison_json", json.dumps(rows, default=str))
    writer.close()


def json_rows(rows):
    """The rows as JSON-ready dicts."""
    return [{k: (float(v) if isinstance(v, np.floating) else v) for k, v in r.items()}
            for r in rows]
