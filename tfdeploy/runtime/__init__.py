"""Runtime: load an exported artifact and predict. Inference only, no training code.

    runner = load("saved_models/digits")        # SavedModel (latest version)
    runner = load("saved_models/digits.tflite") # LiteRT interpreter
    runner = load("saved_models/digits.onnx")   # onnxruntime
    probabilities = runner.predict(images)

Every runner has ``format``, ``path``, ``inputs`` and ``outputs`` (lists of
``(name, shape, dtype)``, -1 for a free dimension), ``run(x) -> {name: array}``
and ``predict(x) -> array`` (the primary output, float). ``OpenVINORunner(path)`` runs a
``.onnx`` file with OpenVINO (extra ``tfdeploy[openvino]``); ``read_artifacts(version_dir)``
lists the files a version directory holds beside its SavedModel (``assets.extra/artifacts.json``).
"""

from tfdeploy.runtime.artifacts import read_artifacts
from tfdeploy.runtime.formats import FORMATS, detect_format
from tfdeploy.runtime.inspect import describe, inspect
from tfdeploy.runtime.onnx import ONNXRunner
from tfdeploy.runtime.openvino import OpenVINORunner
from tfdeploy.runtime.saved_model import SavedModelRunner
from tfdeploy.runtime.tflite import TFLiteRunner

_RUNNERS = {"saved_model": SavedModelRunner, "tflite": TFLiteRunner, "onnx": ONNXRunner}


def load(path, num_threads=None, **kwargs):
    """Load any supported artifact and return a runner with ``predict``/``run``.

    Args:
        path: a SavedModel directory (or TF Serving base path), ``.tflite`` or ``.onnx``.
        num_threads: threads for TFLite/onnxruntime; None lets the runtime choose
            (TensorFlow's threads are process-wide: set them with
            ``tf.config.threading`` before anything runs). Defaults to None.
        **kwargs: passed to the runner (e.g. ``signature=`` for SavedModels).

    Raises:
        ArtifactError: missing, corrupt or unknown artifact.
    """
    fmt = detect_format(path)
    if fmt != "saved_model":
        kwargs["num_threads"] = num_threads
    return _RUNNERS[fmt](path, **kwargs)


__all__ = ["load", "detect_format", "SavedModelRunner", "TFLiteRunner", "ONNXRunner",
           "OpenVINORunner", "FORMATS", "inspect", "describe", "read_artifacts"]
