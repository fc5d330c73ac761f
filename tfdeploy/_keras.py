"""The one place that chooses Keras 2 (``tf_keras``) for tfdeploy.

TensorFlow 2.16+ resolves ``tf.keras`` lazily, on first attribute access, to
Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set. The Model Optimization Toolkit
(tfmot) only accepts Keras 2 models, so tfdeploy sets the variable before
TensorFlow resolves ``tf.keras`` and every other module imports ``keras`` from
here. tfmot and keras-tuner are imported lazily (serving must not pull in
training code).
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from tfdeploy.errors import KerasVersionError, ModelTypeError  # noqa: E402

_FIX = (
    "Import tfdeploy (or set the environment variable TF_USE_LEGACY_KERAS=1) before "
    "the first use of `tf.keras`, and build models with `tfdeploy.keras` "
    "(which is `tf_keras`, Keras 2)."
)


def _check_tf_keras():
    resolved = tf.keras
    name = getattr(resolved, "__name__", "")
    if not name.startswith("tf_keras"):
        version = getattr(resolved, "__version__", "3.x")
        raise KerasVersionError(
            f"`tf.keras` in this process already resolved to Keras {version} ({name}), but "
            f"tfdeploy needs Keras 2 (tf_keras). {_FIX}")


_check_tf_keras()


def is_keras3_model(obj):
    """Return True when ``obj`` is a Keras 3 model or layer (not usable with tfmot)."""
    module = type(obj).__module__ or ""
    if isinstance(obj, keras.layers.Layer):
        return False
    return module == "keras" or module.startswith("keras.")


def check_model(model, what="model"):
    """Raise a clear error unless ``model`` is a Keras 2 (tf_keras) ``Model``.

    Args:
        model: the object to check.
        what: how to name the argument in the message. Defaults to "model".

    Returns:
        The model, unchanged.

    Raises:
        ModelTypeError: for a Keras 3 model or anything that is not a Keras model.
    """
    if is_keras3_model(model):
        raise ModelTypeError(
            f"Received a Keras 3 model ({type(model).__module__}.{type(model).__name__}) as "
            f"`{what}`; tfdeploy's compression and export need a Keras 2 model. Build it with "
            "`from tfdeploy import keras` (tf_keras), e.g. `keras.Sequential([...])`, or "
            "`tf.keras` after `import tfdeploy`.")
    if not isinstance(model, keras.Model):
        raise ModelTypeError(
            f"Expected `{what}` to be a Keras model (tf_keras `keras.Model`), received "
            f"{type(model).__name__!r}. Build one with `tfdeploy.keras` or load it with "
            "`tfdeploy.keras.models.load_model`.")
    if not model.built:
        raise ModelTypeError(
            f"`{what}` has not been built yet; give its first layer an input shape "
            "(e.g. `keras.Input((32, 32, 1))`) or call `model.build(input_shape)` first.")
    return model


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

    keras-tuner picks its Keras with ``import keras``; with Keras 3 installed it
    would reject tf_keras models. Importing it while ``sys.modules["keras"]`` is
    temporarily ``tf_keras`` makes it use Keras 2. This is the only place that
    does that.
    """
    global _keras_tuner
    if _keras_tuner is None:
        saved = {k: v for k, v in sys.modules.items() if k == "keras" or k.startswith("keras.")}
        try:
            for k in saved:
                del sys.modules[k]
            sys.modules["keras"] = keras
            import keras_tuner as module
        finally:
            for k in [k for k in sys.modules if k == "keras" or k.startswith("keras.")]:
                del sys.modules[k]
            sys.modules.update(saved)
        _keras_tuner = module
    return _keras_tuner


__all__ = ["tf", "keras", "tfmot", "keras_tuner", "check_model", "is_keras3_model"]
