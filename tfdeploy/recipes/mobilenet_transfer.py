"""MobileNet transfer: frozen base + head, fine-tune, prune/slim, QAT, export 3 formats, verify.

Without ``--data`` this is an honest offline transfer demonstration on the
bundled digits: a MobileNet base is pretrained on classes 0-4, its weights are
saved to a file, then loaded by path (frozen base, new head, then fine-tuned)
to learn classes 5-9 from a small labelled fraction; the same architecture
trained from scratch on the same fraction, epochs and seed is the comparison.
With ``--data DIR`` (``DIR/train/<class>/``, ``DIR/test/<class>/``) the base
weights come from ``--weights`` (a file, ``imagenet``, or ``none``).

The transferred model is then compressed (``--compress prune`` or ``slim``),
fine-tuned with int8 QAT, exported as a SavedModel, a full-int8 TFLite file and
ONNX, and each artifact is verified in its own runtime with a per-class report.

    tfdeploy run mobilenet_transfer --arch mobilenet_v2 --epochs 6
    python recipes/mobilenet_transfer.py --data my_images --weights imagenet --image-size 96 96
"""

import argparse
import os
import time

import numpy as np

from tfdeploy._architectures import ARCHITECTURES, architecture
from tfdeploy.errors import DataError, TfdeployError
from tfdeploy.recipes._harness import Rows, Run, seed as set_seed
from tfdeploy.recipes._harness import main as run_main

NAME = "mobilenet_transfer"

PRETRAIN_CLASSES = ("0", "1", "2", "3", "4")
TARGET_CLASSES = ("5", "6", "7", "8", "9")


def _dataset(x, y, seed, batch_size=32, augment=False, shuffle=True):
    from tfdeploy import data
    from tfdeploy._keras import tf
    ds = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y.astype("int64")))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if augment:
        ds = data.augment(ds, flip=None, rotation=0.05, zoom=0.1, contrast=0.1, seed=seed)
    return ds


def _subset(x, y, class_names, keep):
    index = [class_names.index(c) for c in keep]
    mask = np.isin(y, index)
    remap = {old: new for new, old in enumerate(index)}
    return x[mask], np.array([remap[v] for v in y[mask]], dtype=np.int64)


def _fraction(x, y, fraction, seed):
    """A stratified ``fraction`` of the samples (at least 2 per class), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        picked.extend(idx[:max(2, int(round(len(idx) * fraction)))])
    picked = np.sort(np.asarray(picked))
    return x[picked], y[picked]


def digits_task(data_dir, image_size=(32, 32), label_fraction=0.1, seed=0):
    """The offline transfer task on the digits tree: pretrain on 0-4, transfer to 5-9.

    Returns:
        A dict of numpy arrays: ``pretrain`` (all train images of 0-4),
        ``train`` (a stratified ``label_fraction`` of the train images of 5-9),
        ``test`` (every test image of 5-9; labels 0-4 standing for 5-9) and
        ``class_names`` (``["5", ..., "9"]``).
    """
    from tfdeploy import data
    if not 0 < label_fraction <= 1:
        raise DataError(f"label_fraction must be in (0, 1], received {label_fraction!r}.")
    train = data.image_dataset(os.path.join(data_dir, "train"), image_size=image_size)
    test = data.image_dataset(os.path.join(data_dir, "test"), image_size=image_size)
    names = list(train.class_names)
    missing = [c for c in PRETRAIN_CLASSES + TARGET_CLASSES if c not in names]
    if missing:
        raise DataError(f"The digits task needs class folders 0-9; {missing} are missing in "
                        f"{data_dir!r}. Pass --data for your own images instead.")
    x, y = data.to_numpy(train)
    xt, yt = data.to_numpy(test)
    return {"pretrain": _subset(x, y, names, PRETRAIN_CLASSES),
            "train": _fraction(*_subset(x, y, names, TARGET_CLASSES), label_fraction, seed),
            "test": _subset(xt, yt, names, TARGET_CLASSES),
            "class_names": list(TARGET_CLASSES)}


def _compile(model, lr, train):
    # The legacy Adam applies each update with one fused op: tracing a MobileNetV2 train step
    # with it takes 2.5x less CPU than with the new Adam (15 ops per variable), and this
    # recipe traces six train steps (seconds each) for a few dozen cheap steps;
    # build_fit_state makes that one trace per fit instead of two.
    from tfdeploy._keras import build_fit_state, keras
    model.compile(keras.optimizers.legacy.Adam(lr), "sparse_categorical_crossentropy",
                  ["accuracy"])
    build_fit_state(model, train)


def pretrain_base(x, y, path, arch="mobilenet_v2", alpha=0.35, epochs=10, seed=0, verbose=0):
    """Train a MobileNet from scratch on ``(x, y)`` and save its base weights to ``path``.

    Returns:
        ``(path, model)``.
    """
    from tfdeploy import models
    set_seed(seed)
    model = models.build_mobilenet(x.shape[1:], int(y.max()) + 1, arch=arch, alpha=alpha,
                                   trainable_base=True, bn_momentum=0.9, dropout=0.1)
    train = _dataset(x, y, seed, augment=True)
    _compile(model, 2e-3, train)
    model.fit(train, epochs=epochs, verbose=verbose)
    models.save_base_weights(model, path)
    return path, model


def train_classifier(x, y, num_classes, weights, arch="mobilenet_v2", alpha=0.35, epochs=10,
                     fine_tune_at=None, unfreeze=None, seed=0, verbose=0, log_dir=None):
    """Train a MobileNet classifier on ``(x, y)``: transfer (``weights`` given) or from scratch.

    Transfer: frozen base + new head at 1e-3, then `FineTune` unfreezes the top
    ``unfreeze`` base layers (None: all) at epoch ``fine_tune_at`` (None: half
    way) with a 10x lower rate. Scratch (``weights=None``): the same
    architecture with a trainable base, same epochs and seed.

    Returns:
        The trained ``keras.Model``.
    """
    from tfdeploy import models
    from tfdeploy._keras import keras
    set_seed(seed)
    scratch = weights is None
    model = models.build_mobilenet(x.shape[1:], num_classes, arch=arch, alpha=alpha,
                                   weights=weights, trainable_base=scratch,
                                   bn_momentum=0.9 if scratch else None, dropout=0.1)
    train = _dataset(x, y, seed, augment=True)
    _compile(model, 2e-3 if scratch else 1e-3, train)
    cbs = []
    if not scratch:
        at = epochs // 2 if fine_tune_at is None else fine_tune_at
        cbs.append(models.FineTune(at_epoch=at, unfreeze=unfreeze, lr_factor=0.1))
    if log_dir:
        cbs.append(keras.callbacks.TensorBoard(log_dir=log_dir))
    model.fit(train, epochs=epochs, callbacks=cbs, verbose=verbose)
    return model


def transfer_vs_scratch(task, weights_path, arch="mobilenet_v2", alpha=0.35, epochs=10,
                        seed=0, verbose=0, log_dir=None):
    """Train transfer and scratch models on ``task["train"]``; test accuracy of both.

    Returns:
        ``{"transfer": model, "scratch": model, "transfer_accuracy", "scratch_accuracy",
        "margin", "targets"}``; ``targets`` holds each model as a `tfdeploy.verify.KerasTarget`
        (traced once here, so the comparison rows reuse it).
    """
    from tfdeploy import verify
    (x, y), (xt, yt) = task["train"], task["test"]
    n = len(task["class_names"])
    logs = (lambda s: os.path.join(log_dir, s)) if log_dir else (lambda s: None)
    transfer = train_classifier(x, y, n, weights_path, arch, alpha, epochs, seed=seed,
                                verbose=verbose, log_dir=logs("transfer"))
    scratch = train_classifier(x, y, n, None, arch, alpha, epochs, seed=seed, verbose=verbose,
                               log_dir=logs("scratch"))
    targets = {"transfer": verify.KerasTarget(transfer), "scratch": verify.KerasTarget(scratch)}
    t, s = (verify.accuracy(targets[k], xt, yt) for k in ("transfer", "scratch"))
    return {"transfer": transfer, "scratch": scratch, "transfer_accuracy": t,
            "scratch_accuracy": s, "margin": t - s, "targets": targets}


def _row(variant, model_params, target, path, x, y):
    from tfdeploy import verify
    return {"variant": variant, "params": int(model_params),
            "sparsity": float(verify.weight_summary(path)["sparsity"])
            if path and path.endswith(".tflite") else 0.0,
            "file_bytes": verify.path_bytes(path) if path else None,
            "gzip_bytes": verify.gzip_bytes(path) if path else None,
            "accuracy": verify.accuracy(target, x, y),
            "ms_per_sample": verify.latency_ms(target, x), "path": path}


def run(data_dir=None, arch="mobilenet_v2", alpha=0.35, weights=None, image_size=(32, 32),
        epochs=8, pretrain_epochs=10, compress_epochs=2, qat_epochs=1, method="prune",
        amount=0.5, label_fraction=0.1, output_dir="saved_models", log_dir="logs/mobilenet",
        name="mobilenet_transfer", seed=0, verbose=0, progress=print, digits_dir=None):
    """The whole recipe; returns ``{"rows", "verification", "transfer", "artifacts", ...}``.

    See the module docstring. ``method`` is "prune" (``amount`` = target
    sparsity) or "slim" (``amount`` = share of channels removed). ``digits_dir``:
    where the demo writes the bundled digits (None: ``data/digits``).
    """
    from tfdeploy import compress, data, export, verify

    start = time.perf_counter()
    if method not in ("prune", "slim"):
        raise DataError(f"Unrecognized compress method {method!r}; use 'prune' or 'slim'.")
    os.makedirs(output_dir, exist_ok=True)
    logs = (lambda s: os.path.join(log_dir, s)) if log_dir else (lambda s: None)
    summary = {}
    if data_dir is None:
        progress("1/6 digits transfer task: pretrain the base on classes 0-4")
        digits = data.write_digits(digits_dir or data.DEFAULT_DIR)
        task = digits_task(digits, image_size, label_fraction, seed)
        weights_path = os.path.join(output_dir, f"{name}_pretrained_base.h5")
        pretrain_base(*task["pretrain"], weights_path, arch, alpha, pretrain_epochs, seed,
                      verbose)
        progress(f"2/6 transfer (weights from {weights_path}) vs scratch on "
                 f"{len(task['train'][0])} labelled images of 5-9")
        result = transfer_vs_scratch(task, weights_path, arch, alpha, epochs, seed, verbose,
                                     log_dir)
        model, model_target = result["transfer"], result["targets"]["transfer"]
        summary = {k: result[k] for k in ("transfer_accuracy", "scratch_accuracy", "margin")}
        summary.update(weights=weights_path, train_images=int(len(task["train"][0])))
        (x, y), (x_test, y_test), names = task["train"], task["test"], task["class_names"]
    else:
        progress(f"1/6 read {data_dir}")
        train = data.image_dataset(os.path.join(data_dir, "train"), image_size=image_size,
                                   color_mode="rgb")
        test = data.image_dataset(os.path.join(data_dir, "test"), image_size=image_size,
                                  color_mode="rgb")
        names = list(train.class_names)
        (x, y), (x_test, y_test) = data.to_numpy(train), data.to_numpy(test)
        w = None if weights in (None, "none") else weights
        progress(f"2/6 transfer from weights={w} ({arch}, alpha {alpha})")
        model = train_classifier(x, y, len(names), w, arch, alpha, epochs, seed=seed,
                                 verbose=verbose, log_dir=logs("transfer")) if w else \
            train_classifier(x, y, len(names), None, arch, alpha, epochs, seed=seed,
                             verbose=verbose, log_dir=logs("scratch"))
        model_target = verify.KerasTarget(model)
        summary = {"transfer_accuracy": verify.accuracy(model_target, x_test, y_test),
                   "weights": w}
    train_ds = _dataset(x, y, seed)

    progress(f"3/6 compress: {method} {amount:.0%}, fine-tune {compress_epochs} epoch(s)")
    if method == "prune":
        small = compress.prune(model, amount, epochs=compress_epochs, steps_per_epoch=train_ds)
        _compile(small, 2e-4, train_ds)
        small.fit(train_ds, epochs=compress_epochs, verbose=verbose,
                  callbacks=compress.callbacks(small, log_dir=logs("compress")))
        small = compress.strip(small)
    else:
        # BatchNorm statistics re-estimated on the training images: the frozen base's BN
        # layers run in inference mode in the fine-tune, so stale ones are never repaired
        small = compress.slim(model, amount, calibration_data=train_ds)
        small.trainable = True
        _compile(small, 2e-4, train_ds)
        small.fit(train_ds, epochs=compress_epochs, verbose=verbose)

    progress(f"4/6 int8 quantization-aware training, {qat_epochs} epoch(s)")
    qat = compress.quantize(small, calibration_data=train_ds)
    _compile(qat, 1e-4, train_ds)
    qat.fit(train_ds, epochs=qat_epochs, verbose=verbose,
            callbacks=compress.callbacks(qat, log_dir=logs("qat")))

    progress("5/6 export SavedModel, int8 TFLite, ONNX")
    paths = {
        "saved_model": export.saved_model(small, os.path.join(output_dir, name),
                                          class_names=names, overwrite=True),
        "tflite_int8": export.tflite(qat, os.path.join(output_dir, f"{name}_int8.tflite"),
                                     "int8", representative_data=train_ds, class_names=names),
        "onnx": export.onnx(small, os.path.join(output_dir, f"{name}.onnx"), class_names=names),
    }
    keras_path = os.path.join(output_dir, f"{name}_compressed.keras")
    small.save(keras_path)
    paths["keras"] = keras_path

    progress("6/6 verify every artifact in its own runtime")
    from tfdeploy import runtime

    # each artifact against the Keras model it was exported from: the int8 file against the
    # QAT model (its fake-quantized float twin, trained further than `small`)
    keras_small, keras_qat = verify.KerasTarget(small), verify.KerasTarget(qat)
    # each artifact loaded once in its runtime: verified, then measured for its row
    runners = {k: runtime.load(paths[k]) for k in ("saved_model", "tflite_int8", "onnx")}
    results = [verify.verify(runners[k], ref, x_test, y_test, class_names=names,
                             raise_on_failure=False, name=k)
               for k, ref in (("saved_model", keras_small), ("tflite_int8", keras_qat),
                              ("onnx", keras_small))]
    done = {"prune": "pruned", "slim": "slimmed"}[method]
    transfer_label = f"keras transfer float32 ({arch})"
    # variant: (Keras model it was made from, artifact path or None, its runtime)
    variants = {transfer_label: (model, None, model_target),
                f"keras {done} float32": (small, None, keras_small)}
    for key, label in (("saved_model", f"saved_model {done} float32"),
                       ("tflite_int8", f"tflite {done}+QAT int8"),
                       ("onnx", f"onnx {done} float32")):
        variants[label] = (small, paths[key], runners[key])
    if "scratch_accuracy" in summary:
        variants[f"keras scratch float32 ({arch})"] = (
            result["scratch"], None, result["targets"]["scratch"])
    targets = {label: target for label, (_, _, target) in variants.items()}
    # the table: the transfer model, the scratch model beside it, then the compressed ones
    order = [transfer_label] + [v for v in variants if "scratch" in v] + \
        [v for v in variants if v != transfer_label and "scratch" not in v]
    rows = Rows(_row(label, variants[label][0].count_params(), variants[label][2],
                     variants[label][1], x_test, y_test) for label in order).as_list()
    report_dir = os.path.join(output_dir, f"{name}_report")
    from tfdeploy import viz

    visuals = viz.visualize(
        rows, x_test, y_test, names, targets, log_dir=log_dir, report_dir=report_dir,
        sparsity_logs={"compress": logs("compress")} if log_dir and method == "prune" else None,
        title=f"MobileNet transfer ({arch}, alpha {alpha})",
        compressed=f"tflite {done}+QAT int8",
        notes=[f"transfer: {summary}"])
    return {"rows": rows, "verification": results, "transfer": summary, "artifacts": paths,
            "class_names": names, "total_s": time.perf_counter() - start,
            "report": compress.report(qat), "report_files": visuals["report"]}


def _arch(name):
    try:
        return architecture(name)
    except TfdeployError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser(prog=f"tfdeploy run {NAME}"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1].strip())
    p.add_argument("--data", default=None,
                   help="image directory with train/ and test/ class folders (default: the "
                        "offline digits transfer demo, written to data/digits)")
    p.add_argument("--arch", default="mobilenet_v2", type=_arch,
                   help=f"base architecture: {', '.join(ARCHITECTURES)} (or v1, v2, "
                        "v3_small, v3_large) (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.35, help="width multiplier (default: 0.35)")
    p.add_argument("--weights", default=None,
                   help="with --data: a base weights file, 'imagenet' or 'none' (default: none;"
                        " the digits demo pretrains its own and loads it by path)")
    p.add_argument("--image-size", type=int, nargs=2, default=(32, 32), metavar=("H", "W"),
                   help="input size, at least 32 32 (default: 32 32)")
    p.add_argument("--epochs", type=int, default=8,
                   help="transfer (and scratch) training epochs; fine-tuning starts half way "
                        "(default: %(default)s)")
    p.add_argument("--pretrain-epochs", type=int, default=10,
                   help="digits demo: epochs pretraining the base on 0-4 (default: %(default)s)")
    p.add_argument("--digits", default=None, metavar="DIR",
                   help="digits demo: where the bundled digits are written (default: "
                        "data/digits)")
    p.add_argument("--label-fraction", type=float, default=0.1,
                   help="digits demo: labelled share of 5-9 used (default: %(default)s)")
    p.add_argument("--compress", default="prune", choices=("prune", "slim"),
                   help="compression before QAT (default: %(default)s)")
    p.add_argument("--amount", type=float, default=0.5,
                   help="target sparsity (prune) or channel share removed (slim) "
                        "(default: %(default)s)")
    p.add_argument("--compress-epochs", type=int, default=2, help="default: %(default)s")
    p.add_argument("--qat-epochs", type=int, default=1, help="default: %(default)s")
    p.add_argument("--output", default="saved_models", help="artifacts (default: %(default)s)")
    p.add_argument("--logs", default="logs/mobilenet_transfer",
                   help="TensorBoard logs (default: %(default)s)")
    p.add_argument("--name", default="mobilenet_transfer", help="model name (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--json", default=None, help="also write the comparison rows as JSON here "
                   "(paths in it are relative to its directory)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch Keras output")
    return p


def main(argv=None):
    """Run the MobileNet transfer recipe; returns the exit status."""
    return run_main(NAME, build_parser, _main, argv)


def _main(args):
    from tfdeploy import verify
    from tfdeploy.pipeline import format_table, json_rows
    with Run(NAME, args) as session:
        result = run(args.data, args.arch, args.alpha, args.weights, tuple(args.image_size),
                     args.epochs, args.pretrain_epochs, args.compress_epochs, args.qat_epochs,
                     args.compress, args.amount, args.label_fraction, args.output, args.logs,
                     args.name, args.seed, verbose=0 if args.quiet else 2,
                     digits_dir=args.digits)
        t = dict(result["transfer"])
        print()
        if "scratch_accuracy" in t:
            print(f"transfer {t['transfer_accuracy']:.2%} vs scratch "
                  f"{t['scratch_accuracy']:.2%} ({t['margin'] * 100:+.1f} points) on "
                  f"{t['train_images']} labelled images")
        for res in result["verification"]:
            print(f"\n{res['artifact']} (its own runtime):")
            print(verify.format_classification_report(res["classification_report"]))
        print()
        print(verify.format_results(result["verification"]))
        print()
        print(format_table(result["rows"]))
        print("\nartifacts:")
        for key, path in result["artifacts"].items():
            print(f"  {key:<12} {path}")
        if result["report_files"]:
            print(f"  {'report':<12} {result['report_files']['html']}")
        if t.get("weights") and os.path.isfile(t["weights"]):
            t["weights"] = session.path(t["weights"])
        report = result["report_files"]
        session.finish({
            "rows": json_rows(result["rows"]), "transfer": t,
            "verification": [{k: r[k] for k in ("artifact", "accuracy", "passed")}
                             for r in result["verification"]],
            "artifacts": {k: session.path(p) for k, p in result["artifacts"].items()},
            "report": {k: session.path(p) for k, p in report.items()} if report else report})
    return 0
