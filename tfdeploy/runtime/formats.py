"""Artifact formats: which one a path holds, and the SavedModel's TF Serving extras.

The warmup file's place and TF Serving's limit on its records are read by the
exporter (which writes it) and the server (which replays it) from here.
"""

import os

from tfdeploy.errors import ArtifactError

FORMATS = ("saved_model", "tflite", "onnx")
#: Where a SavedModel version keeps TF Serving's warmup requests (TFRecord of PredictionLog).
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = os.path.join("assets.extra", WARMUP_FILE)
#: TF Serving replays at most this many warmup records per version (and refuses more).
MAX_WARMUP_RECORDS = 1000


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
