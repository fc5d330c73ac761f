"""Composable compression plans: ordered stages with fine-tuning between, one history.

    result = apply_plan(model, [
        Stage("distill", student=build_cnn(width=0.125), epochs=8),
        Stage("slim", ratio=0.5, epochs=3),
        Stage("prune", target_sparsity=0.7, epochs=3),
        Stage("cluster", n_clusters=16, epochs=1),
        Stage("quantize", epochs=1),
    ], train_ds, validation_data=test_ds, log_dir="logs/plan")
    print(result.table())            # one row per stage: params, sparsity, size, accuracy

Each stage applies its wrapper, compiles with its own optimizer and learning
rate schedule (by default a tenth of the usual training rate), fine-tunes with
an ordinary ``fit`` and the compression callbacks, strips, and measures the
result. Converting to int8 TFLite is the exporter's job, done on
``result.model`` afterwards.
"""

import gzip
import time

import numpy as np

from tfdeploy.model_io import check_model
from tfdeploy._keras import build_fit_state, keras, tf
from tfdeploy._table import render
from tfdeploy.compress.callbacks import callbacks as compression_callbacks
from tfdeploy.compress.cluster import cluster
from tfdeploy.compress.distill import distill
from tfdeploy.compress.graph import copy_model
from tfdeploy.compress.lowrank import low_rank
from tfdeploy.compress.nm import prune_n_m
from tfdeploy.compress.optim import fine_tune_rate, optimizer as make_optimizer
from tfdeploy.compress.precision import to_float32, with_policy
from tfdeploy.compress.prune import prune
from tfdeploy.compress.qat import quantize
from tfdeploy.compress.schedules import steps_of, whole_number
from tfdeploy.compress.slim import slim
from tfdeploy.compress.sparsity import is_model_weight, model_sparsity
from tfdeploy.compress.strip import strip
from tfdeploy.errors import CompressionError

KINDS = ("fine_tune", "distill", "slim", "prune", "n_m", "cluster", "low_rank", "quantize")
_PLAIN = ("fine_tune", "distill", "slim", "low_rank")
_PARAMS = {
    "fine_tune": (),
    "distill": ("student", "temperature", "alpha"),
    "slim": ("ratio", "criterion", "layers"),
    "prune": ("target_sparsity", "schedule", "layers", "policy"),
    "n_m": ("n", "m", "layers"),
    "cluster": ("n_clusters", "init", "layers", "preserve_sparsity"),
    "low_rank": ("energy", "layers"),
    "quantize": ("preserve", "layers", "quantize_configs", "calibration_data", "precision_map"),
}


class Stage:
    """One step of a plan: a technique, its settings and how to fine-tune after it.

    Args:
        kind: one of `KINDS`.
        epochs: fine-tuning epochs after the technique (for "distill": epochs
            of distillation; for "prune": the pruning schedule runs over them).
            0 skips training (e.g. a slim you fine-tune later). Defaults to 1.
        optimizer: name or tf_keras optimizer (see `tfdeploy.compress.optimizer`).
            Defaults to "adam".
        learning_rate: None uses the fine-tuning default (a tenth of the usual
            rate; the usual rate for "distill", whose student starts fresh).
        lr_schedule: "constant", "cosine", "warmup_cosine" or a schedule.
            Defaults to "warmup_cosine".
        precision: None or a mixed-precision policy ("mixed_float16",
            "mixed_bfloat16") for the stage's training; only for stages that
            train a plain model (fine_tune, distill, slim, low_rank).
        **params: the technique's own arguments (e.g. ``ratio=0.5`` for slim).
    """

    def __init__(self, kind, epochs=1, optimizer="adam", learning_rate=None,
                 lr_schedule="warmup_cosine", precision=None, **params):
        if kind not in KINDS:
            raise CompressionError(f"Unrecognized stage kind={kind!r}. Supported kinds are: "
                                   f"{list(KINDS)}.")
        unknown = sorted(set(params) - set(_PARAMS[kind]))
        if unknown:
            raise CompressionError(
                f"Stage {kind!r} does not take {unknown}; it takes {list(_PARAMS[kind])} plus "
                "epochs, optimizer, learning_rate, lr_schedule, precision.")
        epochs = whole_number(epochs, "epochs", 0)
        if precision is not None and kind not in _PLAIN:
            raise CompressionError(
                f"precision={precision!r} is supported on {list(_PLAIN)} stages, not {kind!r} "
                "(tfmot's wrappers train in float32).")
        if kind == "distill" and "student" not in params:
            raise CompressionError("Stage('distill') needs student=<a Keras model>.")
        self.kind, self.epochs, self.optimizer = kind, int(epochs), optimizer
        self.learning_rate, self.lr_schedule, self.precision = learning_rate, lr_schedule, \
            precision
        self.params = params

    def __repr__(self):
        shown = {k: v for k, v in self.params.items() if k != "student"}
        return f"Stage({self.kind!r}, epochs={self.epochs}, {shown})"


def _as_stage(item):
    if isinstance(item, Stage):
        return item
    if isinstance(item, str):
        return Stage(item)
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], dict):
        return Stage(item[0], **item[1])
    raise CompressionError(
        f"A plan stage must be a Stage, a kind name or (kind, {{settings}}), received {item!r}.")


VALID_ORDERS = ("any sequence of fine_tune, distill, slim, low_rank, prune, n_m and cluster "
                "stages, then at most one quantize stage, last (QAT models are not rewritten "
                "or re-trained by other stages; prune and n_m need epochs >= 1)")


def check_plan(stages):
    """Validate a whole plan before anything trains; returns the list of `Stage` objects.

    Raises:
        CompressionError: naming the first impossible stage (1-based index and kind)
            and the valid orders.
    """
    stages = [_as_stage(s) for s in stages]
    if not stages:
        raise CompressionError(f"The plan has no stages. Valid orders: {VALID_ORDERS}.")
    quantized_at = None
    for i, stage in enumerate(stages, start=1):
        where = f"Stage {i} ({stage.kind!r})"
        if quantized_at is not None:
            raise CompressionError(
                f"{where} comes after stage {quantized_at} ('quantize'): the model is "
                f"quantization-aware from there on, and {stage.kind} cannot follow QAT. Move "
                f"quantize to the end. Valid orders: {VALID_ORDERS}.")
        if stage.kind in ("prune", "n_m") and stage.epochs < 1:
            raise CompressionError(
                f"{where} has epochs={stage.epochs}; {stage.kind} needs epochs >= 1 to apply "
                f"its mask during training. Valid orders: {VALID_ORDERS}.")
        if stage.kind == "quantize":
            quantized_at = i
    return stages


def measure(model, validation_data=None):
    """Params, non-zero params, kernel sparsity, float32 and gzip bytes, accuracy of a model.

    Only the layers' own parameters count (kernels, biases, BatchNorm
    statistics), not the training-only variables of pruning/QAT/clustering
    wrappers. ``gzip_bytes`` is the gzip size of those parameters as float32.
    """
    weights = [w.numpy() for w in model.weights if is_model_weight(w)]
    raw = b"".join(np.asarray(w, np.float32).tobytes() for w in weights)
    out = {"params": int(sum(w.size for w in weights)),
           "nonzero_params": int(sum(np.count_nonzero(w) for w in weights)),
           "sparsity": float(model_sparsity(model)),
           "float32_bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 6))}
    if validation_data is not None:
        out["accuracy"] = _accuracy(model, validation_data)
    return out


def _accuracy(model, data):
    correct = total = 0
    batches = data if isinstance(data, tf.data.Dataset) else [data]
    for x, y in batches:
        pred = np.argmax(model(x, training=False), axis=-1)
        correct += int(np.sum(pred == np.asarray(y)))
        total += len(pred)
    return correct / total if total else float("nan")


class PlanResult:
    """The final model and one history entry per stage (entry 0 is the input model)."""

    def __init__(self, model, history):
        self.model, self.history = model, history

    def table(self):
        cols = ["stage", "params", "nonzero_params", "sparsity", "gzip_bytes", "accuracy",
                "seconds"]
        rows = [[str(h.get(c, "")) if not isinstance(h.get(c), float)
                 else f"{h[c]:.4f}" for c in cols] for h in self.history]
        return render(cols, rows, rule_sep="  ")

    __str__ = table


def _apply(stage, model, train_data, spe):
    p = stage.params
    if stage.kind == "fine_tune":
        return copy_model(model)
    if stage.kind == "distill":
        return distill(model, p["student"], p.get("temperature", 3.0), p.get("alpha", 0.1))
    if stage.kind == "slim":
        return slim(model, p.get("ratio", 0.5), p.get("criterion", "l1"), p.get("layers"),
                    calibration_data=train_data)
    if stage.kind == "prune":
        return prune(model, p.get("target_sparsity", 0.8), p.get("schedule", "polynomial_decay"),
                     epochs=stage.epochs, steps_per_epoch=spe, layers=p.get("layers"),
                     policy=p.get("policy"))
    if stage.kind == "n_m":
        return prune_n_m(model, p.get("n", 2), p.get("m", 4), p.get("layers"))
    if stage.kind == "cluster":
        return cluster(model, p.get("n_clusters", 16), p.get("init", "kmeans++"),
                       p.get("layers"), p.get("preserve_sparsity", "auto"))
    if stage.kind == "low_rank":
        return low_rank(model, p.get("energy", 0.9), p.get("layers"))
    return quantize(model, p.get("preserve", "auto"), p.get("layers"),
                    p.get("quantize_configs"), p.get("calibration_data", train_data),
                    precision_map=p.get("precision_map"))


def _steps(data):
    return steps_of(data) if isinstance(data, tf.data.Dataset) else None


def apply_plan(model, stages, train_data, validation_data=None, loss=None, log_dir=None,
               callbacks=None, jit_compile=False):
    """Apply ``stages`` in order, fine-tuning after each, and record one history.

    The input model is untouched. After every stage the result is measured
    (params, non-zero params, kernel sparsity, float32 and gzip bytes, and
    accuracy on ``validation_data``) and, with ``log_dir``, written to
    TensorBoard under ``log_dir/plan`` (step = stage index) together with each
    stage's training curves under ``log_dir/<i>_<kind>``.

    Args:
        model: a trained, built Keras 2 model.
        stages: a list of `Stage` objects, kind names, or ``(kind, {settings})``.
        train_data: a ``tf.data.Dataset`` of ``(x, y)`` for fine-tuning.
        validation_data: a dataset or ``(x, y)`` arrays for the accuracy column.
            Defaults to None.
        loss: training loss; None uses sparse categorical cross-entropy on
            probabilities (the classifier models tfdeploy builds). Defaults to None.
        log_dir: TensorBoard directory. Defaults to None.
        callbacks: extra Keras callbacks for every stage's fit. Defaults to None.
        jit_compile: compile every stage's training step with XLA (passed to
            ``model.compile``; `benchmarks/bench_tune.py` measures the step time
            with and without it). Defaults to False.

    Returns:
        A `PlanResult`: ``.model`` (stripped; QAT models keep their quantize
        wrappers for the TFLite converter) and ``.history`` (list of dicts).

    Raises:
        CompressionError: a bad stage, or an impossible order (anything after
            quantize, prune without epochs), raised before any training by
            `check_plan`.
    """
    model = check_model(model, graph=True)
    stages = check_plan(stages)
    loss = loss or "sparse_categorical_crossentropy"
    spe = _steps(train_data)
    history = [dict(stage="baseline", **measure(model, validation_data), seconds=0.0)]
    writer = tf.summary.create_file_writer(f"{log_dir}/plan") if log_dir else None
    _log(writer, 0, history[0])
    current = model
    for i, stage in enumerate(stages, start=1):
        start = time.time()
        wrapped = _apply(stage, current, train_data, spe)
        if stage.precision and stage.kind != "distill":
            wrapped = with_policy(wrapped, stage.precision)
        elif stage.precision:
            wrapped.student = with_policy(wrapped.student, stage.precision)
        rate = stage.learning_rate
        if rate is None:
            name = stage.optimizer if isinstance(stage.optimizer, str) else "adam"
            rate = fine_tune_rate(name, 1.0 if stage.kind == "distill" else 0.1)
        total = (spe or 1) * max(stage.epochs, 1)
        opt = make_optimizer(stage.optimizer, rate, stage.lr_schedule, total)
        if stage.kind == "distill":
            wrapped.compile(opt, metrics=["accuracy"], jit_compile=jit_compile)
        else:
            wrapped.compile(opt, loss, metrics=["accuracy"], jit_compile=jit_compile)
        if stage.epochs:
            cbs = [] if stage.kind == "distill" else compression_callbacks(wrapped)
            if log_dir:
                cbs.append(keras.callbacks.TensorBoard(f"{log_dir}/{i}_{stage.kind}"))
            build_fit_state(wrapped, train_data)  # one trace of the train step, not two
            wrapped.fit(train_data, epochs=stage.epochs, verbose=0,
                        callbacks=cbs + list(callbacks or []))
        result = wrapped.student if stage.kind == "distill" else wrapped
        if stage.precision:
            result = to_float32(result)
        current = strip(result)
        entry = dict(stage=stage.kind, epochs=stage.epochs, **measure(current, validation_data))
        entry["seconds"] = round(time.time() - start, 2)
        history.append(entry)
        _log(writer, i, entry)
    if writer is not None:
        with writer.as_default(step=len(stages)):
            tf.summary.text("plan/table", "```\n" + PlanResult(current, history).table() + "\n```")
        writer.close()
    return PlanResult(current, history)


def _log(writer, step, entry):
    if writer is None:
        return
    with writer.as_default(step=step):
        for key, value in entry.items():
            if isinstance(value, (int, float)) and key != "epochs":
                tf.summary.scalar(f"plan/{key}", value)
    writer.flush()
