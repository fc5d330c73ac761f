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

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


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
        import tensorflow_model_optimization as module

        _tfmot = module
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
