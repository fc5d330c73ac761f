"""Helper process for tests/test_distributed_training.py (not a test module).

    python tests/distributed_train.py mirrored OUT.json SINGLE.npz
    python tests/distributed_train.py worker INDEX PORT0,PORT1 OUT.json SINGLE.npz

"mirrored": two logical CPUs, MirroredStrategy; prunes (and trains QAT) there and, for
comparison, prunes and trains QAT on the same model in one process without a strategy (the
"single" runs); also checks the typed errors raised before training. "worker": one
MultiWorkerMirroredStrategy worker of a two-process cluster on 127.0.0.1 that prunes and
trains QAT on the same model. Every run sees the same global batches of 32 (a worker, the
half of each batch its shard holds), so the workers' pruned weights must equal the single
process's within float tolerance, and so must every QAT step started from the single
process's variables (`qat_runs`); each run writes what the test compares. The single
process's QAT run is trained once, first, by "mirrored", which writes it to SINGLE.npz; the
workers read it from there (`single_qat`) once their pruning is done.
"""

import hashlib
import json
import os
import sys
import time

MODE = sys.argv[1]
if MODE == "worker":
    from tfdeploy.compress.distribute import tf_config

    os.environ["TF_CONFIG"] = tf_config(int(sys.argv[2]), sys.argv[3].split(","))

import numpy as np  # noqa: E402

import tfdeploy as td  # noqa: E402
from tfdeploy._keras import keras, tf  # noqa: E402
from tfdeploy.compress import distribute  # noqa: E402

C = td.compress
TARGET, EPOCHS = 0.75, 2
if MODE == "mirrored":
    distribute.logical_cpus(2)
else:  # collective ops must be configured before the first TensorFlow op runs
    WORKER_STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
rng = np.random.RandomState(0)
x = rng.rand(256, 16, 16, 1).astype("float32") * 255
y = rng.randint(0, 10, 256)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).with_options(options)
STEPS = int(ds.cardinality())


def pruned(strategy=None):
    scope = strategy.scope() if strategy is not None else _Null()
    with scope:
        keras.utils.set_random_seed(0)
        model = C.prune(td.models.build_cnn((16, 16, 1), 10, width=0.125), TARGET,
                        epochs=EPOCHS, steps_per_epoch=STEPS)
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    batches = _BatchLosses()
    history = model.fit(ds, epochs=EPOCHS, verbose=0, callbacks=C.callbacks(model) + [batches])
    steps = sorted({int(v.numpy()) for layer in model.layers
                    for v in [getattr(layer, "pruning_step", None)] if v is not None})
    agree = distribute.replicas_agree(model)
    stripped = C.strip(model)
    zeros = b"".join((w == 0).tobytes() for w in stripped.get_weights())
    return {"sparsity_by_layer": C.sparsity_by_layer(stripped), "pruning_steps": steps,
            "replicas_agree": agree, "zeros_md5": hashlib.md5(zeros).hexdigest(),
            "replicas": strategy.num_replicas_in_sync if strategy is not None else 1,
            "weights": _weights(stripped), "loss": history.history["loss"],
            "batch_losses": batches.losses, "traces": _traces(model)}


def _traces(model):
    """How many times ``fit`` traced the model's train step."""
    return model.train_function.experimental_get_tracing_count()


class _BatchLosses(keras.callbacks.Callback):
    """The loss ``fit`` reports in each batch's ``logs`` (what a progress bar shows)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def _weights(model):
    """``[[variable name, flat values], ...]`` of every variable (this process's replica), in
    the model's order (names may differ by a ``_1`` suffix between processes)."""
    return [[w.name, np.asarray(w.numpy()).ravel().tolist()] for w in model.weights]


def _qat_model(strategy=None, build=None):
    """The QAT model (``build_cnn``, or ``build()``) from seed 0, compiled with plain SGD
    (Adam's first steps move every weight by the sign of its gradient, so a gradient that
    is noise around 0 would move by a full step in either direction)."""
    scope = strategy.scope() if strategy is not None else _Null()
    with scope:
        keras.utils.set_random_seed(0)
        base = build() if build else td.models.build_cnn((16, 16, 1), 10, width=0.125)
        model = C.quantize(base)
        model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    return model


def synchronized_bn_cnn():
    """Rescaling, then Conv-BatchNormalization(synchronized=True)-ReLU twice, pooling and a
    softmax Dense: QAT with batch statistics of the whole global batch."""
    L = keras.layers
    inputs = keras.Input((16, 16, 1))
    x = L.Rescaling(1.0 / 255.0)(inputs)
    for i in (1, 2):
        x = L.Conv2D(8, 3, padding="same", name=f"conv{i}")(x)
        x = L.BatchNormalization(synchronized=True, name=f"bn{i}")(x)
        x = L.ReLU(name=f"relu{i}")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(10, activation="softmax", name="probabilities")(x))


class _Steps(keras.callbacks.Callback):
    """Records every variable (this process's replica) after each training step; given
    ``states``, first sets the variables to ``states[step]`` before each step."""

    def __init__(self, states=None):
        super().__init__()
        self.states, self.after = states, []

    def on_train_batch_begin(self, batch, logs=None):
        if self.states is not None:
            for variable, value in zip(self.model.weights, self.states[batch]):
                variable.assign(value)

    def on_train_batch_end(self, batch, logs=None):
        self.after.append([np.asarray(v.numpy()) for v in self.model.weights])


def _qat_fit(strategy=None, build=None):
    """One epoch of QAT from seed 0: the model, its variables before and after each step, the
    loss, and the wrapper variables (QAT ranges) before the fit (``replica_values``)."""
    model = _qat_model(strategy, build)
    start = [np.asarray(v.numpy()) for v in model.weights]
    ranges = {k: v[0].copy() for k, v in distribute.replica_values(model).items()}
    steps = _Steps()
    history = model.fit(ds, epochs=1, verbose=0, callbacks=C.callbacks(model) + [steps])
    return model, start, steps.after, float(history.history["loss"][-1]), ranges


def _max_differences(run, reference, names):
    """``{variable name: max |run - reference|}`` over two lists of arrays in model order."""
    return {name: float(np.max(np.abs(a - b))) if a.size else 0.0
            for name, a, b in zip(names, run, reference)}


def write_single_qat(path):
    """Train the single process's QAT epoch (`_qat_fit` without a strategy) and write what
    `qat_runs` compares with to ``path`` (atomically: the workers wait for the file)."""
    _, start, single, loss, _ = _qat_fit(None)
    arrays = {f"start_{i}": a for i, a in enumerate(start)}
    for step, values in enumerate(single):
        arrays.update({f"step{step}_{i}": a for i, a in enumerate(values)})
    with open(path + ".tmp", "wb") as f:
        np.savez(f, loss=np.float64(loss), steps=np.int64(len(single)),
                 count=np.int64(len(start)), **arrays)
    os.replace(path + ".tmp", path)
    return start, single, loss


def single_qat(path, timeout=600):
    """``(start, single, single_loss)`` of `write_single_qat`, once "mirrored" wrote it."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} was not written in {timeout} s")
        time.sleep(0.2)
    with np.load(path) as f:
        n, steps = int(f["count"]), int(f["steps"])
        start = [f[f"start_{i}"] for i in range(n)]
        single = [[f[f"step{s}_{i}"] for i in range(n)] for s in range(steps)]
        return start, single, float(f["loss"])


def qat_runs(strategy, build=None, single=None):
    """QAT for one epoch under ``strategy`` and, in this process, without one (the
    "single" run, on the whole global batches): ``lockstep`` (for every step, each
    variable's max |difference| when the distributed model starts the step from the
    single run's variables), ``free`` (the largest difference after each step when both
    train on their own from the same seed), ``moved`` (the largest change of a variable in
    each step of the single run), the single run's loss, and this replica's final
    variables, loss, iterations and QAT ranges moved after the free run. ``single``: the
    single run's ``(start, variables after each step, loss)`` when already trained.

    The lockstep steps run in a second ``fit`` of the distributed model (its training step
    is traced once): every step first sets all of its variables to the single run's, so
    nothing of the free run carries over (plain SGD keeps no optimizer state)."""
    if single is None:
        _, start, single, single_loss, _ = _qat_fit(None, build=build)
    else:
        start, single, single_loss = single
    model, _, free, loss, before = _qat_fit(strategy, build=build)
    names = [v.name for v in model.weights]
    after = distribute.replica_values(model)
    out = {"free": [max(_max_differences(a, b, names).values()) for a, b in zip(free, single)],
           "weights": _weights(model), "iterations": int(model.optimizer.iterations.numpy()),
           "loss": loss, "single_loss": single_loss,
           "ranges_moved": sum("max" in k and not np.allclose(v[0], before[k])
                               for k, v in after.items()),
           "replicas_agree": distribute.replicas_agree(model)}
    states = [start] + single[:-1]
    lockstep = _Steps(states)
    model.fit(ds, epochs=1, verbose=0, callbacks=C.callbacks(model) + [lockstep])
    out["lockstep"] = [_max_differences(a, b, names) for a, b in zip(lockstep.after, single)]
    out["moved"] = [max(_max_differences(a, b, names).values()) for a, b in zip(single, states)]
    out["lockstep_replicas_agree"] = distribute.replicas_agree(model)
    out["traces"] = _traces(model)  # both fits
    return out


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def errors(strategy):
    out = {}
    with strategy.scope():
        model = C.prune(td.models.build_cnn((16, 16, 1), 10, width=0.125), TARGET,
                        epochs=1, steps_per_epoch=STEPS)
        model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    try:
        C.callbacks(model)
        out["jit"] = None
    except td.errors.DistributionError as exc:
        out["jit"] = str(exc)
    with strategy.scope():
        base = td.models.build_cnn((16, 16, 1), 10, width=0.125)
    try:
        C.prune(base, TARGET, epochs=1, steps_per_epoch=STEPS)  # wrapped outside the scope
        out["outside"] = None
    except td.errors.DistributionError as exc:
        out["outside"] = str(exc)
    return out


if MODE == "mirrored":
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = write_single_qat(sys.argv[3])  # first: the workers wait for it
    result = {"mirrored": pruned(strategy), "single": pruned(None), "errors": errors(strategy),
              "qat_runs": qat_runs(strategy, single=single),
              "qat_bn_runs": qat_runs(strategy, synchronized_bn_cnn)}
    out_path = sys.argv[2]
else:
    strategy = WORKER_STRATEGY
    result = {"worker": pruned(strategy)}
    result.update(qat=qat_runs(strategy, single=single_qat(sys.argv[5])),
                  index=int(sys.argv[2]))
    out_path = sys.argv[4]
with open(out_path, "w") as f:
    json.dump(result, f)
