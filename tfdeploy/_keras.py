"""The one place that chooses Keras 2 (``tf_keras``) for tfdeploy.

TensorFlow 2.16+ resolves ``tf.keras`` lazily, on first attribute access, to
Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set. The Model Optimization Toolkit
(tfmot) only accepts Keras 2 models, so tfdeploy sets the variable (making
``tf.keras`` tf_keras when TensorFlow has not resolved it yet) and every other
module imports ``keras`` from here: tfdeploy uses ``tf_keras`` directly, never
``tf.keras``. A process whose ``tf.keras`` already resolved to Keras 3 works
too: tfmot picks ``tf_keras`` itself when ``tf.keras`` is Keras 3
(``tensorflow_model_optimization/python/core/keras/compat.py``), and Keras 3
models reach tfdeploy through `tfdeploy.model_io.check_model`. tfmot and
keras-tuner are imported lazily (serving must not pull in training code).
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from tfdeploy import _walk  # noqa: E402


def is_keras3_model(obj):
    """Return True when ``obj`` is a Keras 3 model or layer (user subclasses included)."""
    if isinstance(obj, keras.layers.Layer):
        return False
    keras3 = sys.modules.get("keras")  # a Keras 3 object implies Keras 3 was imported
    base = getattr(getattr(keras3, "layers", None), "Layer", None)
    if keras3 is not keras and isinstance(base, type) and isinstance(obj, base):
        return True
    module = type(obj).__module__ or ""
    return module == "keras" or module.startswith("keras.")


_tfmot = None


def tfmot():
    """Return the ``tensorflow_model_optimization`` module (imported on first use)."""
    global _tfmot
    if _tfmot is None:
        from tfdeploy._tfmot import load  # without tfmot's stray import of Keras 3

        _tfmot = load()
    return _tfmot


_keras_tuner = None


def keras_tuner():
    """Return ``keras_tuner`` bound to Keras 2.

    keras-tuner picks its Keras with ``import keras`` and then imports
    ``tensorflow.keras``; with Keras 3 installed it would reject tf_keras models.
    Importing it while ``sys.modules["keras"]`` and ``sys.modules["tensorflow.keras"]``
    are temporarily ``tf_keras`` makes it use Keras 2 — also in a process that
    imported Keras 3 first, where TensorFlow's package path maps
    ``tensorflow.keras`` to Keras 3's own shim. This is the only place that does that.
    """
    global _keras_tuner
    if _keras_tuner is None:
        def swapped(name):
            return name in ("keras", "tensorflow.keras") or name.startswith(
                ("keras.", "tensorflow.keras."))

        saved = {k: v for k, v in sys.modules.items() if swapped(k)}
        try:
            for k in saved:
                del sys.modules[k]
            sys.modules["keras"] = sys.modules["tensorflow.keras"] = keras
            import keras_tuner as module
        finally:
            for k in [k for k in sys.modules if swapped(k)]:
                del sys.modules[k]
            sys.modules.update(saved)
        _keras_tuner = module
    return _keras_tuner


__all__ = ["tf", "keras", "tfmot", "keras_tuner", "is_keras3_model"]


def _build_slots(optimizer, variables):
    """Create ``optimizer``'s slots for ``variables`` as its first ``apply_gradients`` would."""
    if isinstance(optimizer, keras.optimizers.legacy.Optimizer):
        # as in OptimizerV2.apply_gradients
        with tf.name_scope(optimizer._name):
            optimizer._create_all_weights(variables)
    elif hasattr(optimizer, "inner_optimizer"):
        # as in LossScaleOptimizerV3.apply_gradients: no name scope
        optimizer.build(variables)
    else:  # as in Optimizer.apply_gradients
        with tf.name_scope(optimizer.name or "optimizer"):
            optimizer.build(variables)


def _slots_buildable(optimizer):
    """True for an optimizer whose slots `_build_slots` creates as Keras would: a Keras
    optimizer, new or legacy, but not a legacy loss-scaled one."""
    legacy = isinstance(optimizer, keras.optimizers.legacy.Optimizer)
    if legacy:
        return not hasattr(optimizer, "inner_optimizer")
    return isinstance(optimizer, keras.optimizers.Optimizer)


def build_optimizer_state(model):
    """Create the slots of a compiled ``model``'s (new, not yet used) optimizer before ``fit``.

    For an optimizer swapped in mid-fit (`tfdeploy.models.FineTune`), whose slots Keras
    would create in the first trace of the new train step, tracing it twice (see
    `build_fit_state`). Does nothing for an optimizer `build_fit_state` leaves alone (a
    legacy loss-scaled one) or a model that is not compiled.

    Returns:
        ``model``.
    """
    optimizer = getattr(model, "optimizer", None)
    if not _slots_buildable(optimizer):
        return model
    with model.distribute_strategy.scope():
        _build_slots(optimizer, model.trainable_variables)
    return model


def build_fit_state(model, data):
    """Create a compiled ``model``'s optimizer slots and metric variables before ``fit``.

    Keras creates them inside the first trace of its train step. A ``tf.function``
    whose first trace creates variables is traced a second time (TensorFlow's
    variable-free version of the function), so every ``fit`` of a fresh model paid
    for two traces. Creating the same variables first, from the output structure
    and the ``data``'s element spec, leaves one trace; the variables, their order
    and the training itself are the same as Keras's own.

    Does nothing (Keras then builds them as usual) for a model that is not
    compiled, not functional/Sequential (its output structure is only known from a
    call), or already has them; or when ``data`` is not a ``tf.data.Dataset`` (or
    iterator) of ``(x, y, ...)`` or an ``(x, y)`` pair of numeric arrays.

    Args:
        model: a compiled ``tf_keras`` model.
        data: what ``fit`` will receive: a ``tf.data.Dataset`` or ``(x, y)``; or the
            iterator ``fit`` passes its train function (`compress.callbacks` does that),
            also a ``tf.distribute`` one (each replica's spec is used).

    Returns:
        ``model``.
    """
    optimizer = getattr(model, "optimizer", None)
    if (not _slots_buildable(optimizer)
            or not _walk.is_graph_network(model)
            or getattr(model, "compiled_metrics", None) is None):
        return model
    if isinstance(data, (tf.data.Dataset, tf.data.Iterator, tf.distribute.DistributedIterator,
                         tf.distribute.DistributedDataset)):
        # a distributed iterator's spec holds one spec per replica (PerReplicaSpec), all alike
        spec = tf.nest.map_structure(lambda s: getattr(s, "_value_specs", (s,))[0],
                                     data.element_spec)
    elif (isinstance(data, tuple) and len(data) == 2
          and all(isinstance(a, np.ndarray) and a.dtype.kind in "biuf" for a in data)):
        spec = tuple(tf.TensorSpec(a.shape, a.dtype) for a in data)
    else:
        return model
    if not isinstance(spec, tuple) or len(spec) < 2:
        return model
    with model.distribute_strategy.scope():
        _build_slots(optimizer, model.trainable_variables)
        y_pred = model._nested_outputs
        if not getattr(model.compiled_loss, "_built", False):
            model.compiled_loss.build(y_pred)
        if not getattr(model.compiled_metrics, "_built", False):
            model.compiled_metrics.build(y_pred, spec[1])
    return model
