"""Runtimes: run one artifact of a model version as its SavedModel's signatures answer.

    from tfdeploy.serving.runtimes import load_runtime, read_artifacts
    runtime = load_runtime("litert", "saved_models/digits/3")   # the first .tflite listed
    runtime.call("serving_default", {"images": x})
    # {"probabilities": float32 [n, 10], "class_index": int64 [n], "class_label": bytes [n]}

``tensorflow`` runs the SavedModel (every signature); ``litert`` (``.tflite``),
``onnxruntime`` and ``openvino`` (``.onnx``, extra ``tfdeploy[openvino]``) run the
files the exporter wrote beside it (``serving_default`` only). Inference only: no
Keras, no training code; each runtime imports its library when it loads.
"""

from tfdeploy.runtime.artifacts import read_artifacts
from tfdeploy.serving.runtimes.base import DEFAULT_SIGNATURE, FileRuntime, Runtime
from tfdeploy.serving.runtimes.litert import LiteRTRuntime
from tfdeploy.serving.runtimes.onnxruntime import ONNXRuntime
from tfdeploy.serving.runtimes.openvino import OpenVINORuntime
from tfdeploy.serving.runtimes.tensorflow import TensorFlowRuntime
from tfdeploy.errors import ArtifactError

RUNTIMES = {cls.name: cls for cls in (TensorFlowRuntime, LiteRTRuntime, ONNXRuntime,
                                      OpenVINORuntime)}


def runtime_class(name):
    """The `Runtime` subclass called ``name``; ValueError naming the choices otherwise."""
    if name not in RUNTIMES:
        raise ValueError(f"Unrecognized runtime={name!r}. Supported runtimes are: "
                         f"{list(RUNTIMES)}.")
    return RUNTIMES[name]


def candidates(version_dir):
    """Every ``(runtime name, artifact entry)`` a version offers, the SavedModel first."""
    return [(name, entry) for entry in read_artifacts(version_dir) for name in entry["runtimes"]
            if name in RUNTIMES]


def load_runtime(name, version_dir, artifact=None, num_threads=None, **options):
    """Load ``version_dir`` in runtime ``name``.

    Args:
        name: "tensorflow", "litert", "onnxruntime" or "openvino".
        version_dir: the version directory.
        artifact: the entry of ``read_artifacts(version_dir)`` to run, or its ``name``
            (e.g. "tflite_int8"); None takes the first entry the runtime can run.
            Defaults to None.
        num_threads: threads per call; None lets the runtime choose. Defaults to None.
        **options: passed to the runtime (``instances=`` for LiteRT: one-thread
            interpreters kept for overlapping calls).

    Returns:
        A `Runtime`.

    Raises:
        ValueError: unknown runtime name.
        ArtifactError: the version has no artifact for that runtime, or it is corrupt.
        MissingDependencyError: the runtime's library is not installed (an ImportError
            naming what to install).
    """
    cls = runtime_class(name)
    if artifact is None or isinstance(artifact, str):
        entries = [e for e in read_artifacts(version_dir) if name in e["runtimes"]
                   and (artifact is None or e["name"] == artifact)]
        if not entries:
            offered = [f"{e['name']} ({', '.join(e['runtimes'])})"
                       for e in read_artifacts(version_dir)]
            raise ArtifactError(
                f"Version {version_dir!r} has no artifact "
                f"{'' if artifact is None else repr(artifact) + ' '}for the {name} runtime; "
                f"it has {offered}. Export it with tfdeploy.export.saved_model(..., "
                "artifacts=[...]).")
        artifact = entries[0]
    return cls(version_dir, artifact, num_threads=num_threads, **options)


__all__ = ["Runtime", "FileRuntime", "TensorFlowRuntime", "LiteRTRuntime", "ONNXRuntime",
           "OpenVINORuntime", "RUNTIMES", "DEFAULT_SIGNATURE", "runtime_class", "candidates",
           "load_runtime", "read_artifacts"]
