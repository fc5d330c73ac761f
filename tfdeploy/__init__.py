"""tfdeploy: take a Keras model from training to deployment.

Importing tfdeploy selects Keras 2 (``tf_keras``) for TensorFlow; build models
with ``tfdeploy.keras``. Submodules (``data``, ``models``, ``compress``,
``export``, ``runtime``, ``verify``) are imported on first attribute access.
"""

import importlib

from tfdeploy._keras import keras, tf  # noqa: F401  (selects Keras 2 first)

__version__ = "0.1.0"

_SUBMODULES = ("data", "models", "compress", "export", "runtime", "verify", "serving",
               "pipeline")


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"tfdeploy.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'tfdeploy' has no attribute {name!r}")


__all__ = ["keras", "tf", "__version__", *_SUBMODULES]
