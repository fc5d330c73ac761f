"""Runtime: load an exported artifact and predict. Inference only, no training code.

    runner = load("saved_models/digits")        # SavedModel (latest version)
    runner = load("saved_models/digits.tflite") # LiteRT interpreter
    probabilities = runner.predict(images)
"""

import os

from tfdeploy.errors import ArtifactError
from tfdeploy.runtime.saved_model import SavedModelRunner
from tfdeploy.runtime.tflite import TFLiteRunner


def detect_format(path):
    """Return "saved_model" or "tflite" for ``path``, or raise ArtifactError."""
    if os.path.isdir(path):
        return "saved_model"
    if not os.path.exists(path):
        raise ArtifactError(f"Artifact {path!r} does not exist.")
    if path.endswith(".tflite"):
        return "tflite"
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    raise ArtifactError(
        f"Cannot tell the format of {path!r}: expected a SavedModel directory or a .tflite file.")


def load(path, **kwargs):
    """Load any supported artifact and return a runner with ``predict``/``run``."""
    fmt = detect_format(path)
    return {"saved_model": SavedModelRunner, "tflite": TFLiteRunner}[fmt](path, **kwargs)


__all__ = ["load", "detect_format", "SavedModelRunner", "TFLiteRunner"]
