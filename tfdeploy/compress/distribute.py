"""Compression under ``tf.distribute``: what tfmot can train there, and checks that it did.

tfdeploy's wrappers and callbacks run under TensorFlow's own strategies:
build and wrap the model inside ``strategy.scope()``, compile there, and call
``fit`` as usual::

    strategy = tf.distribute.MirroredStrategy()        # or MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = td.compress.prune(build_model(), 0.8, epochs=3, steps_per_epoch=train_ds)
        model.compile(...)
    model.fit(train_ds, epochs=3, callbacks=td.compress.callbacks(model))

tfmot's pruning updates its masks with a cross-replica ``merge_call`` (every
replica gets the same mask, computed from the mean weights), the pruning step
is a mirrored variable advanced in the training step, QAT's ranges and the
cluster indices are ordinary (mirrored / on-read) variables. QAT's fake-quants
take their ranges from the min/max of the whole global batch, gathered across
replicas and workers in the training step
(`tfdeploy._tfmot.global_batch_ranges`, installed by ``quantize`` and
``callbacks``): tfmot alone takes them from each replica's share of the batch.
So each distributed prune or QAT step computes what one process computes on the
same global batch, within float round-off (over many QAT steps a round-off can
move a value across a fake-quant rounding boundary, and the runs drift apart).
Per replica, as in Keras: ``BatchNormalization`` statistics (Keras's
``synchronized=True`` gives the global batch's; ``quantize`` keeps it) and
dropout masks. Under ``MultiWorkerMirroredStrategy`` tf_keras reports each
batch's loss summed over the workers; ``callbacks`` adds
`tfdeploy.compress.callbacks.GlobalBatchLogs`, which reports the global batch's.
`check_training` refuses, before any training, XLA (``jit_compile=True``) with several
replicas on CPU devices, which would fail in the first step; `check_scope`
(called by every wrapper) refuses to wrap a distributed model outside its
strategy's scope, which would silently train a one-device copy.
`replica_values` reads every replica's copy of the wrappers' variables, so
tests and users can check that the replicas agree.
"""

import json

import numpy as np

from tfdeploy._keras import tf
from tfdeploy.compress.sparsity import is_model_weight
from tfdeploy.errors import DistributionError


def _strategies(model):
    """The distinct strategies holding the model's variables (None for plain variables)."""
    found = {}
    for v in model.variables:
        strategy = getattr(v, "_distribute_strategy", None)
        found[id(strategy)] = strategy
    return list(found.values())


def check_scope(model, wrapper):
    """Refuse to wrap a distributed model outside its strategy's scope (called by the wrappers).

    Outside the scope the wrapper would build a plain copy that trains on one
    device, silently, while the user believes it is distributed.

    Raises:
        DistributionError: ``model``'s variables belong to a strategy whose
            scope is not active.
    """
    current = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    for strategy in _strategies(model):
        if strategy is not None and strategy is not current:
            raise DistributionError(
                f"Model {model.name!r} was built under {type(strategy).__name__}, but "
                f"{wrapper}() was called outside its scope: the wrapped copy would train on "
                "one device. Call the wrapper (and compile) inside `with strategy.scope():`.")
    return model


def check_training(model):
    """Raise before training for a setup that would fail in its first training step.

    Called by `tfdeploy.compress.callbacks`; call it yourself when you build
    your own callback list.

    Raises:
        DistributionError: a model compiled with ``jit_compile=True`` under a
            strategy with several replicas on CPU devices (XLA cannot read a
            variable placed on another logical device).
    """
    strategies = [s for s in _strategies(model) if s is not None]
    strategy = strategies[0] if strategies else None
    if strategy is not None and getattr(model, "_jit_compile", False):
        devices = list(getattr(strategy.extended, "worker_devices", []))
        if len(devices) > 1 and all("CPU" in d.upper() for d in devices):
            raise DistributionError(
                f"Model {model.name!r} is compiled with jit_compile=True under "
                f"{type(strategy).__name__} with {len(devices)} replicas on CPU devices: XLA "
                "cannot read a variable placed on another logical device "
                "(https://www.tensorflow.org/xla/known_issues), so the first training step "
                "would fail. Compile with jit_compile=False here; XLA works for plain and "
                "tfdeploy-wrapped models on one device (one replica, or one per worker).")
    return model


def _replica_parts(variable):
    """Each replica's copy of ``variable`` (the variable itself without a strategy)."""
    strategy = getattr(variable, "_distribute_strategy", None)
    return list(strategy.experimental_local_results(variable)) if strategy is not None \
        else [variable]


def replica_values(model):
    """``{variable name: [value on each replica]}`` for the wrappers' variables.

    Covers the pruning masks, thresholds and steps, cluster indices and QAT
    ranges (the variables a wrapper adds, not the layers' weights). Without a
    strategy each list has one entry.
    """
    out = {}
    for v in model.variables:
        if is_model_weight(v) or v.trainable:
            continue
        out[v.name] = [np.asarray(x.numpy() if hasattr(x, "numpy") else x)
                       for x in _replica_parts(v)]
    return out


def replicas_agree(model):
    """True when every replica holds the same value of every wrapper variable."""
    for values in replica_values(model).values():
        if any(not np.array_equal(values[0], other) for other in values[1:]):
            return False
    return True


def logical_cpus(n=2):
    """Split the first physical CPU into ``n`` logical devices (for MirroredStrategy on a CPU).

    Must run before TensorFlow initialises its devices (before the first op).
    Returns the logical device names, e.g. ``["/device:CPU:0", "/device:CPU:1"]``.

    Raises:
        DistributionError: TensorFlow's devices are already initialised.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(int(n))])
    except RuntimeError as exc:
        raise DistributionError(
            f"Cannot split the CPU into {n} logical devices: {exc}. Call "
            "tfdeploy.compress.distribute.logical_cpus() at the start of the program, before "
            "any TensorFlow op runs.") from exc
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def tf_config(index, ports, host="127.0.0.1"):
    """The ``TF_CONFIG`` JSON for worker ``index`` of a MultiWorkerMirroredStrategy cluster.

    Example:
        >>> os.environ["TF_CONFIG"] = tf_config(0, [23456, 23457])   # in worker 0
    """
    workers = [f"{host}:{int(p)}" for p in ports]
    if not 0 <= int(index) < len(workers):
        raise DistributionError(f"index must be in [0, {len(workers)}), received {index!r}.")
    return json.dumps({"cluster": {"worker": workers},
                       "task": {"type": "worker", "index": int(index)}})


__all__ = ["check_training", "replica_values", "replicas_agree", "logical_cpus", "tf_config"]
