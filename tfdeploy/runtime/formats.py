"""Which artifact format a path holds (SavedModel directory, ``.tflite`` or ``.onnx``)."""

import os

from tfdeploy.errors import ArtifactError

FORMATS = ("saved_model", "tflite", "onnx")


def detect_format(path):
    """Return "saved_model", "tflite" or "onnx" for ``path``, or raise ArtifactError."""
    if os.path.isdir(path):
        return "saved_model"
    if not os.path.exists(path):
        raise ArtifactError(f"Artifact {path!r} does not exist.")
    if path.endswith(".tflite"):
        return "tflite"
    if path.endswith(".onnx"):
        return "onnx"
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    raise ArtifactError(
        f"Cannot tell the format of {path!r}: expected a SavedModel directory, a .tflite file "
        "or a .onnx file.")
