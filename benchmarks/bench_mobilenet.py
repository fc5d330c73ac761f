"""MobileNetV2 on the offline digits transfer task: transfer vs scratch, then PTQ vs QAT vs slim.

    python benchmarks/bench_mobilenet.py [--seeds 0 1 2] [--alpha 0.35] [--image-size 32]
        [--configs 0.35:96 1.0:224] [--parts transfer variants speed] [--out result.json]

Prints one JSON document (``--out FILE`` also writes it there), with the run's CPU, load
average at start and end, command and date (``run``).

1. Transfer vs scratch, for every seed: a MobileNetV2 base pretrained on digits 0-4, saved
   to a file and loaded by path (frozen, new head, then fine-tuned), against the same
   architecture trained from scratch on the same 10 % of the labelled 5-9 images, same
   epochs and seed (`tfdeploy.recipes.mobilenet_transfer.transfer_vs_scratch`).
2. For every ``--configs ALPHA:SIZE`` (MobileNetV2 width and input side), on the same
   digits transfer task at that size (base pretrained on 0-4, transferred to 5-9 with
   ``--variant-label-fraction`` of the labels, seed 0), side by side: float TFLite; plain
   ``TFLiteConverter`` post-training full int8 (what a user would do instead); tfdeploy QAT
   int8; then for every ``--slim-ratios`` (50 % and 70 % of the channels removed) the
   slimmed float model, recovered by ``--slim-epochs`` of distillation from the float model
   (rate warmed up to 5e-4 over the first epoch, cosine decay after; ``--recovery labels``:
   a plain fine-tune), and its QAT int8 file; every QAT fine-tune
   is distilled from the float model too (each fine-tune keeps its epoch with the best
   accuracy on the labelled training images; the test images only score). Params, gzip
   bytes, accuracy in LiteRT on the 5-9 test images, LiteRT p50 latency at batch 1 with 1
   and 2 threads (`tfdeploy.verify.bench`), speedups over float TFLite.
3. ``--parts speed``, random weights, per ``--configs``: what tfdeploy's input fold and
   ``slim(divisor=8)`` change in 1-thread latency (in turns): the plain converter's float
   file against tfdeploy's folded one, for the full and the ``--speed-ratio`` slimmed model;
   the slimmed model without and with the divisor, float and QAT int8.

Targets (issue 8): QAT int8 accuracy >= PTQ int8 accuracy; slimmed + int8 >= 4x faster
than float TFLite at <= 1 point accuracy drop; transfer beats scratch on every seed. The
JSON says whether each was met.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _record import run_info, write_result  # noqa: E402


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ptq_int8(model, x, path):
    """Post-training full-int8 with the plain TFLiteConverter, as a user would write it."""
    import numpy as np
    import tensorflow as tf

    def representative():
        for row in x[:200]:
            yield [np.asarray(row, np.float32)[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with open(path, "wb") as f:
        f.write(converter.convert())
    return path


def _without_xnnpack_ms(path, x, iters):
    """Batch-1 p50 (1 thread) with LiteRT's builtin kernels only (no default XNNPACK delegate):
    says whether XNNPACK runs the file, and how int8 compares without it."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=path, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    index = it.get_input_details()[0]["index"]
    times = []
    for i in range(iters + 5):
        row = np.asarray(x[i % len(x)][None], np.float32)
        start = time.perf_counter()
        it.set_tensor(index, row)
        it.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times[5:]) * 1e3)


def _op_counts(path):
    """``{op name: count}`` of a .tflite file's operators."""
    import collections

    from tfdeploy import verify

    return dict(collections.Counter(op["op"] for op in verify.operators(path)))


def _measure(name, path, x, y, iters, params):
    from tfdeploy import runtime, verify

    row = {"variant": name, "file": os.path.basename(path), "path": path,
           "params": int(params), "gzip_bytes": verify.gzip_bytes(path),
           "file_bytes": verify.path_bytes(path)}
    if y is not None:
        row["accuracy"] = verify.accuracy(runtime.load(path), x, y)
    for threads in (1, 2):
        res = verify.bench(path, x[:64], batch_size=1, iters=iters, threads=threads,
                           progress=False, name=name)
        row[f"p50_ms_{threads}t"] = res["p50_ms"]
    row["p50_ms_1t_no_xnnpack"] = _without_xnnpack_ms(path, x[:64], max(20, iters // 2))
    row["ops"] = _op_counts(path)
    row["load_avg_1m"] = os.getloadavg()[0]
    _log(json.dumps(row))
    return row


def _keep_best(student, val, tag):
    """A callback: ``student``'s accuracy on ``val`` (the labelled training images) before
    training and after every epoch, logged; the best epoch's weights are restored at the end.

    The slim recovery starts from a near-chance model (a 50 % slimmed MobileNetV2 scores
    about 18 % before it), and one 6-epoch run of it ended at 20.1 % where another reached
    90.5 %: model selection on held-in labelled images keeps a collapsed last epoch from
    being the result. The test images are never read here.
    """
    from tfdeploy import verify
    from tfdeploy._keras import keras

    x, y = val

    class KeepBest(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.curve, self.best, self.weights = [], -1.0, None

        def _check(self, label):
            acc = verify.accuracy(student, x, y)
            self.curve.append(acc)
            _log(f"{tag}: {label} accuracy on the labelled images {acc:.3f}")
            if acc > self.best:
                self.best, self.weights = acc, student.get_weights()

        def on_train_begin(self, logs=None):
            self._check("before")

        def on_epoch_end(self, epoch, logs=None):
            self._check(f"epoch {epoch + 1}")

        def on_train_end(self, logs=None):
            student.set_weights(self.weights)

    return KeepBest()


def _fine_tune(student, teacher, train_ds, epochs, recovery, lr, val, tag, seed=0,
               warmup=False):
    """Train ``student`` in place: on the labels alone (``recovery="labels"``), or
    distilled from the float ``teacher`` (its soft targets at T=4) on ``train_ds``: with
    ``"distill"`` the labelled images plus 30 % of the label loss, with ``"distill_all"``
    every training image of the task, labels unused. The epoch (or the start) with the best
    accuracy on ``val`` (the labelled training images) is kept; returns ``(student, curve)``,
    the curve being that accuracy before training and after every epoch. ``warmup``: the
    rate rises linearly over the first epoch, then decays along a cosine
    (`compress.optim.WarmupCosine`), instead of staying at ``lr``."""
    from tfdeploy import compress
    from tfdeploy._keras import keras
    from tfdeploy.compress.optim import WarmupCosine
    from tfdeploy.recipes.mobilenet_transfer import _compile

    keras.utils.set_random_seed(seed)
    keep = _keep_best(student, val, tag)
    if warmup:
        steps = len(train_ds)
        lr = WarmupCosine(lr, epochs * steps, steps) if epochs > 1 else lr
    if recovery == "labels":
        _compile(student, lr)
        student.fit(train_ds, epochs=epochs, verbose=0, callbacks=[keep])
        return student, keep.curve
    distiller = compress.Distiller(student, teacher, temperature=4.0, alpha=_alpha(recovery))
    distiller.compile(keras.optimizers.legacy.Adam(lr), metrics=["accuracy"])
    distiller.fit(train_ds, epochs=epochs, verbose=0, callbacks=[keep])
    return student, keep.curve


def _alpha(recovery):
    return 0.0 if recovery == "distill_all" else 0.3


def _variants(model, train, x, y, tmp, iters, tag, qat_epochs, slim_epochs,
              slim_ratios=(0.5,), recovery="distill", divisor=8, unlabelled=None):
    """Float, PTQ int8, QAT int8, then per slim ratio the slimmed float model and its QAT
    int8 file; one row each. ``recovery`` ("distill" or "labels") is how the QAT and
    slimmed models are fine-tuned: distilled from ``model`` or on the labels alone.

    ``train``: ``(images, labels)`` to fine-tune and calibrate on, or None (random-weight
    latency runs: calibrate on ``x``, no fine-tuning).
    """
    import numpy as np

    from tfdeploy import compress, export, verify
    from tfdeploy.recipes.mobilenet_transfer import _dataset

    calib_x = x if train is None else train[0]
    train_ds = None if train is None else _dataset(*train, seed=0)
    if train is not None and recovery == "distill_all":
        # the teacher labels every training image of the task; the labels are not read
        train_ds = _dataset(unlabelled, np.zeros(len(unlabelled), np.int64), seed=0)
    rows = [_measure("float32 TFLite", export.tflite(model, f"{tmp}/{tag}_f32.tflite"),
                     x, y, iters, model.count_params())]
    _log(f"{tag}: float done")
    rows.append(_measure("PTQ int8 (plain TFLiteConverter)",
                         _ptq_int8(model, calib_x, f"{tmp}/{tag}_ptq.tflite"), x, y, iters,
                         model.count_params()))
    _log(f"{tag}: PTQ done")

    curves = {}

    def qat_of(float_model, epochs, name):
        q = compress.quantize(float_model, calibration_data=calib_x[:256])
        if train_ds is None or not epochs:
            return q
        # distilled at 1e-5: on 216 images, hard labels at 1e-4 pulled it below plain PTQ
        q, curves[name] = _fine_tune(q, model, train_ds, epochs, recovery,
                                     1e-4 if recovery == "labels" else 1e-5, train, name)
        return q

    qat = qat_of(model, qat_epochs, "tfdeploy QAT int8")
    rows.append(_measure("tfdeploy QAT int8",
                         export.tflite(qat, f"{tmp}/{tag}_qat.tflite", "int8",
                                       representative_data=calib_x), x, y, iters,
                         model.count_params()))
    _log(f"{tag}: QAT done")
    for ratio in slim_ratios:
        pct = f"{ratio:.0%}"
        slim = compress.slim(model, ratio, calibration_data=calib_x, divisor=divisor or None)
        name = f"tfdeploy {pct} slim float32"
        if train_ds is not None and slim_epochs:
            slim.trainable = True  # trained whole; its BatchNorm stays in inference mode
            # warm-up: at a constant 5e-4 the 50 % slimmed model (about 18 % before it)
            # stayed at chance for 5 epochs, at 1e-4 it recovered but slowly
            slim, curves[name] = _fine_tune(slim, model, train_ds, slim_epochs, recovery,
                                            5e-4, train, name, warmup=True)
        rows.append(_measure(name, export.tflite(
            slim, f"{tmp}/{tag}_slim{pct}.tflite"), x, y, iters, slim.count_params()))
        sq = qat_of(slim, qat_epochs, f"tfdeploy {pct} slim + QAT int8")
        rows.append(_measure(f"tfdeploy {pct} slim + QAT int8",
                             export.tflite(sq, f"{tmp}/{tag}_slim{pct}_qat.tflite", "int8",
                                           representative_data=calib_x), x, y, iters,
                             slim.count_params()))
        _log(f"{tag}: {pct} slim + QAT done")
    # the per-file figures above were taken one file after another; these take turns
    # (7 rounds x 30 calls of each file, 1 thread), so every ratio shares its conditions
    turns = verify.interleaved_latency({r["variant"]: r.pop("path") for r in rows}, x[:16])
    base = rows[0]
    for r in rows:
        r["p50_ms_1t_interleaved"] = turns[r["variant"]]["p50_ms"]
        r["rounds_ms_1t_interleaved"] = turns[r["variant"]]["rounds_ms"]
    for r in rows:
        for t in (1, 2):
            r[f"speedup_{t}t"] = base[f"p50_ms_{t}t"] / r[f"p50_ms_{t}t"]
        r["speedup_1t_interleaved"] = base["p50_ms_1t_interleaved"] / r["p50_ms_1t_interleaved"]
        r["size_ratio"] = base["gzip_bytes"] / r["gzip_bytes"]
        if r["variant"] in curves:
            r["recovery_curve_labelled"] = curves[r["variant"]]
    return rows


def _plain_float(model, path):
    """Float TFLite with the plain converter (no fold), as a user would write it."""
    import tensorflow as tf

    with open(path, "wb") as f:
        f.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def _speed(alpha, side, ratio, tmp):
    """Part 3, random weights: what the input fold and the slim divisor change in latency.

    Side by side, in turns (`verify.interleaved_latency`, 1 thread): the full and the
    ``ratio``-slimmed MobileNetV2, each as the plain converter's float file (its
    ``x/127.5-1`` and grayscale copy as CONCATENATION + MUL + ADD) and as tfdeploy's
    folded float file; then the slimmed model without and with ``divisor=8``, float and
    calibrated QAT int8. Accuracy is not measured here (no training): only speed.
    """
    import numpy as np

    from tfdeploy import compress, export, models, verify

    t0 = time.perf_counter()
    x = np.random.default_rng(0).uniform(0, 255, (32, side, side, 1)).astype("float32")
    model = models.build_mobilenet((side, side, 1), 5, arch="mobilenet_v2", alpha=alpha)
    pct = f"{ratio:.0%}"
    paths = {"float32, plain converter": _plain_float(model, f"{tmp}/s_plain.tflite"),
             "float32, tfdeploy (folded)": export.tflite(model, f"{tmp}/s_fold.tflite")}
    for divisor in (None, 8):
        slim = compress.slim(model, ratio, calibration_data=x, divisor=divisor)
        tag = f"{pct} slim, divisor {divisor or 1}"
        if divisor is None:
            paths[f"{tag}, float32, plain converter"] = _plain_float(
                slim, f"{tmp}/s_slim_plain.tflite")
        paths[f"{tag}, float32"] = export.tflite(slim, f"{tmp}/s_slim_{divisor}.tflite")
        qat = compress.quantize(slim, calibration_data=x)
        paths[f"{tag}, QAT int8"] = export.tflite(qat, f"{tmp}/s_slim_{divisor}_q.tflite",
                                                  "int8", representative_data=x)
        _log(f"speed: {tag} exported")
    turns = verify.interleaved_latency(paths, x[:16])
    base = turns["float32, plain converter"]["p50_ms"]
    rows = []
    for name, path in paths.items():
        rows.append({"variant": name, "p50_ms_1t_interleaved": turns[name]["p50_ms"],
                     "rounds_ms_1t_interleaved": turns[name]["rounds_ms"],
                     "speedup_1t_interleaved": base / turns[name]["p50_ms"],
                     "ops": _op_counts(path), "gzip_bytes": verify.gzip_bytes(path)})
        _log(json.dumps(rows[-1]))
    by = {r["variant"]: r["p50_ms_1t_interleaved"] for r in rows}
    slim_tag = f"{pct} slim, divisor 1"
    return {"alpha": alpha, "image_size": side, "weights": "random", "slim_ratio": ratio,
            "rows": rows,
            "fold_saves_ms": {
                "full": by["float32, plain converter"] - by["float32, tfdeploy (folded)"],
                "slim": by[f"{slim_tag}, float32, plain converter"] - by[f"{slim_tag}, float32"]},
            "divisor_8_speedup": {
                kind: by[f"{slim_tag}, {kind}"] / by[f"{pct} slim, divisor 8, {kind}"]
                for kind in ("float32", "QAT int8")},
            "load_avg_1m": os.getloadavg()[0], "seconds": time.perf_counter() - t0}


def _all_target_images(digits, side):
    """Every training image of classes 5-9 (the labelled 30 % and the rest), no labels."""
    from tfdeploy import data
    from tfdeploy.recipes import mobilenet_transfer as mt

    train = data.image_dataset(os.path.join(digits, "train"), image_size=(side, side))
    x, y = data.to_numpy(train)
    return mt._subset(x, y, list(train.class_names), mt.TARGET_CLASSES)[0]


def _config_variants(digits, alpha, side, args, tmp):
    """Part 2 for one MobileNetV2 width/input size: pretrain, transfer, then the 4 variants."""
    from tfdeploy.recipes import mobilenet_transfer as mt

    from tfdeploy import model_io

    t0 = time.perf_counter()
    task = mt.digits_task(digits, (side, side), args.variant_label_fraction, 0)
    cache = args.cache or tmp
    os.makedirs(cache, exist_ok=True)
    tag = f"{alpha}_{side}_p{args.variant_pretrain_epochs}_e{args.variant_epochs}"
    path, saved = f"{cache}/base_{tag}.h5", f"{cache}/transfer_{tag}.h5"
    if os.path.isfile(saved):  # --cache: the same seed-0 model a previous run trained
        model = model_io.load_model(saved)
        _log(f"alpha {alpha} @ {side}: transfer model read from {saved}")
    else:
        if not os.path.isfile(path):
            mt.pretrain_base(*task["pretrain"], path, "mobilenet_v2", alpha,
                             args.variant_pretrain_epochs, 0)
        model = mt.train_classifier(*task["train"], len(task["class_names"]), path,
                                    "mobilenet_v2", alpha, args.variant_epochs, seed=0)
        model_io.save_model(model, saved)
        _log(f"alpha {alpha} @ {side}: transfer model trained "
             f"({time.perf_counter() - t0:.0f} s)")
    rows = _variants(model, task["train"], *task["test"], tmp, args.iters,
                     f"a{alpha}_{side}", args.qat_epochs, args.slim_epochs, args.slim_ratios,
                     args.recovery, args.slim_divisor, _all_target_images(digits, side))
    by = {r["variant"]: r for r in rows}
    f32, ptq = by["float32 TFLite"], by["PTQ int8 (plain TFLiteConverter)"]
    qat = by["tfdeploy QAT int8"]
    targets = {"qat_int8_accuracy_ge_ptq_int8": {"qat": qat["accuracy"], "ptq": ptq["accuracy"],
                                                 "met": qat["accuracy"] >= ptq["accuracy"]}}
    for ratio in args.slim_ratios:
        slim = by[f"tfdeploy {ratio:.0%} slim + QAT int8"]
        targets[f"slim_{ratio:.0%}_int8_4x_faster_within_1_point"] = {
            "speedup_1t_interleaved": slim["speedup_1t_interleaved"],
            "speedup_1t": slim["speedup_1t"], "speedup_2t": slim["speedup_2t"],
            "accuracy_drop": f32["accuracy"] - slim["accuracy"],
            "met": slim["speedup_1t_interleaved"] >= 4.0 and
            f32["accuracy"] - slim["accuracy"] <= 0.01}
    return {"alpha": alpha, "image_size": side, "weights": "transferred (digits 0-4 base)",
            "train_images": int(len(task["train"][0])), "test_images": int(len(task["test"][0])),
            "pretrain_epochs": args.variant_pretrain_epochs, "epochs": args.variant_epochs,
            "qat_epochs": args.qat_epochs, "slim_epochs": args.slim_epochs,
            "slim_ratios": args.slim_ratios, "slim_divisor": args.slim_divisor,
            "recovery": args.recovery,
            "rows": rows, "targets": targets, "seconds": time.perf_counter() - t0}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--alpha", type=float, default=0.35, help="part 1 width")
    p.add_argument("--image-size", type=int, default=32, help="part 1 input side")
    p.add_argument("--epochs", type=int, default=10, help="part 1 transfer/scratch epochs")
    p.add_argument("--pretrain-epochs", type=int, default=12, help="part 1")
    p.add_argument("--label-fraction", type=float, default=0.1, help="part 1")
    p.add_argument("--configs", nargs="*", default=["0.35:96", "1.0:224"],
                   metavar="ALPHA:SIZE", help="part 2 MobileNetV2 widths and input sides")
    p.add_argument("--variant-pretrain-epochs", type=int, default=4, help="part 2")
    p.add_argument("--variant-epochs", type=int, default=6, help="part 2 transfer epochs")
    p.add_argument("--variant-label-fraction", type=float, default=0.3, help="part 2")
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--slim-epochs", type=int, default=8,
                   help="recovery epochs after slimming (before QAT)")
    p.add_argument("--slim-ratios", type=float, nargs="+", default=[0.5, 0.7],
                   help="fractions of channels slimmed away, one pair of rows each")
    p.add_argument("--slim-divisor", type=int, default=8,
                   help="slimmed layers keep a multiple of this many channels (0: exactly the "
                        "ratio); XNNPACK's int8 convolutions pad channels to 8 on x86")
    p.add_argument("--recovery", choices=("distill_all", "distill", "labels"),
                   default="distill_all",
                   help="how the QAT and slimmed models are fine-tuned. distill_all: they "
                        "learn the float model's soft targets on every training image of "
                        "5-9 (labels unused); distill: on the labelled ones, plus 30 %% of "
                        "the label loss; labels: plain fine-tune on the labels")
    p.add_argument("--cache", default=None,
                   help="directory keeping the pretrained base and the trained transfer model "
                        "of each config, reused by the next run with the same settings")
    p.add_argument("--iters", type=int, default=100, help="timed batch-1 calls per artifact")
    p.add_argument("--data", default=None, help="where the digits tree is written")
    p.add_argument("--parts", nargs="+", default=["transfer", "variants"],
                   choices=("transfer", "variants", "speed"),
                   help="transfer: part 1 (transfer vs scratch over seeds); variants: part 2; "
                        "speed: part 3 (random weights, per --configs: input fold and slim "
                        "divisor latency)")
    p.add_argument("--speed-ratio", type=float, default=0.7, help="part 3 slim ratio")
    p.add_argument("--out", help="Also write the JSON here.")
    args = p.parse_args(argv)
    run = run_info(argv)

    import numpy as np

    from tfdeploy import data
    from tfdeploy.recipes import mobilenet_transfer as mt

    start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="bench_mobilenet_")
    digits = data.write_digits(args.data or os.path.join(tmp, "digits"))
    size = (args.image_size, args.image_size)
    seeds, targets, configs = [], {}, []
    if "transfer" in args.parts:
        for seed in args.seeds:
            task = mt.digits_task(digits, size, args.label_fraction, seed)
            path, _ = mt.pretrain_base(*task["pretrain"], f"{tmp}/base_{seed}.h5",
                                       "mobilenet_v2", args.alpha, args.pretrain_epochs, seed)
            res = mt.transfer_vs_scratch(task, path, "mobilenet_v2", args.alpha, args.epochs,
                                         seed)
            _log(f"seed {seed}: transfer {res['transfer_accuracy']:.3f} scratch "
                 f"{res['scratch_accuracy']:.3f}")
            seeds.append({"seed": seed, "transfer_accuracy": res["transfer_accuracy"],
                          "scratch_accuracy": res["scratch_accuracy"], "margin": res["margin"],
                          "train_images": int(len(task["train"][0]))})
        margins = [s["margin"] for s in seeds]
        targets["transfer_beats_scratch_every_seed"] = {"margins": margins,
                                                        "met": min(margins) > 0}
    if "variants" in args.parts:
        for config in args.configs:
            alpha, side = config.split(":")
            configs.append(_config_variants(digits, float(alpha), int(side), args, tmp))
    speed = []
    if "speed" in args.parts:
        for config in args.configs:
            alpha, side = config.split(":")
            speed.append(_speed(float(alpha), int(side), args.speed_ratio, tmp))
    margins = [s["margin"] for s in seeds]
    out = {
        "run": run,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                    "note": "shared machine; latencies are inflated by other jobs, ratios are "
                            "measured side by side in one run"},
        "transfer_task": {"arch": "mobilenet_v2", "alpha": args.alpha,
                          "image_size": args.image_size, "label_fraction": args.label_fraction,
                          "epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs},
        "transfer_vs_scratch": {"seeds": seeds,
                                "mean_margin": float(np.mean(margins)) if margins else None,
                                "min_margin": float(np.min(margins)) if margins else None},
        "variants": configs,
        "speed": speed,
        "targets": targets,
        "total_s": time.perf_counter() - start,
    }
    write_result(out, args.out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
