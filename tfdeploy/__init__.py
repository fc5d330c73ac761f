"""tfdeploy: take a Keras model from training to deployment.

Training code (``data``, ``models``, ``compress``, ``export``, ``pipeline``)
selects Keras 2 (``tf_keras``) for TensorFlow when it is first imported, in
``tfdeploy/_keras.py``; so does the first access to ``tfdeploy.keras`` or
``tfdeploy.tf``. Inference-only code (``runtime``, ``serving``, the client)
needs no Keras: importing it leaves the process's Keras as it was. Submodules
are imported on first attribute access.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("data", "models", "compress", "export", "runtime", "verify", "serving",
               "pipeline", "bridge", "model_io")
_FROM_KERAS = ("keras", "tf")


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"tfdeploy.{name}")
    elif name in _FROM_KERAS:
        module = getattr(importlib.import_module("tfdeploy._keras"), name)
    else:
        raise AttributeError(f"module 'tfdeploy' has no attribute {name!r}")
    globals()[name] = module
    return module


__all__ = ["keras", "tf", "__version__", *_SUBMODULES]
