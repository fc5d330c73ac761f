"""Other artifacts of a SavedModel version, written into its version directory with a manifest.

`tfdeploy.export.saved_model(..., artifacts=[...])` calls `write` while the version
is still a temporary directory, so the files and ``assets.extra/artifacts.json``
appear together with the SavedModel or not at all. The manifest's format and its
reader live in `tfdeploy.runtime.artifacts`.
"""

import json
import os

import numpy as np

from tfdeploy.compress.wrappers import is_quantization_aware
from tfdeploy.errors import ExportError
from tfdeploy.export._onnx import onnx as export_onnx
from tfdeploy.export._tflite import tflite as export_tflite
from tfdeploy.runtime import load as load_artifact
from tfdeploy.export._warmup import samples
from tfdeploy.runtime.artifacts import (FORMAT_RUNTIMES, MANIFEST_PATH, MANIFEST_VERSION,
                                        VERIFICATION_KEY, VERIFICATION_PATH, sha256_of)

#: artifact name -> (format, file name, exporter keyword arguments)
ARTIFACTS = {
    "tflite_float32": ("tflite", "model_float32.tflite", {"quantization": "float32"}),
    "tflite_float16": ("tflite", "model_float16.tflite", {"quantization": "float16"}),
    "tflite_int8": ("tflite", "model_int8.tflite", {"quantization": "int8"}),
    "onnx": ("onnx", "model_float32.onnx", {}),
    "onnx_int8": ("onnx", "model_int8.onnx", {"quantize": "static"}),
}
_CALIBRATED = ("tflite_int8", "onnx_int8")
#: Records in the verification set (fewer when they would pass `VERIFICATION_BYTES`).
NUM_VERIFICATION = 256
#: Largest verification set, in bytes of its stored (uncompressed) array.
VERIFICATION_BYTES = 64 << 20


def normalize(artifacts, representative_data):
    """``{artifact name: source model or None}`` from a list of names or such a dict.

    Raises:
        ExportError: unknown names, or an int8 artifact without representative data.
    """
    if artifacts is None:
        return {}
    if isinstance(artifacts, str):
        raise ExportError(
            f"artifacts must be a list of names (or a dict name -> model), received the string "
            f"{artifacts!r}; write artifacts=[{artifacts!r}].")
    chosen = dict(artifacts) if isinstance(artifacts, dict) else {a: None for a in artifacts}
    unknown = [a for a in chosen if a not in ARTIFACTS]
    if unknown:
        raise ExportError(f"Unrecognized artifacts {unknown}. Supported artifacts are: "
                          f"{list(ARTIFACTS)}.")
    calibrated = [a for a in chosen if a in _CALIBRATED]
    if calibrated and representative_data is None:
        raise ExportError(
            f"Artifacts {calibrated} are int8 and need representative_data (e.g. the training "
            "dataset) to calibrate activation ranges. Nothing was written.")
    return chosen


def check_single_io(model, chosen):
    """Refuse, before anything is written, a model whose signature a file cannot stand for."""
    if not chosen:
        return
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(
            f"artifacts={list(chosen)} need a model with one input and one output; "
            f"{model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs. "
            "Export those files separately with tfdeploy.export.tflite/onnx. Nothing was "
            "written.")


def _spec(tensor):
    shape = [-1 if d is None else int(d) for d in tensor.shape.as_list()]
    return {"dtype": tensor.dtype.name, "shape": shape}


def signature_of(module):
    """``{"key", "inputs", "outputs"}`` of the module's ``serving_default`` signature."""
    fn = module.serve.get_concrete_function()
    inputs = {spec.name: _spec(spec) for spec in fn.structured_input_signature[0]}
    outputs = {name: _spec(t) for name, t in fn.structured_outputs.items()}
    return {"key": "serving_default", "inputs": inputs, "outputs": outputs}


def _tensor_names(path):
    """``(input names, output names)`` of an exported file, read by its own runtime."""
    runner = load_artifact(path)
    return [i[0] for i in runner.inputs], [o[0] for o in runner.outputs]


def _compact(inputs):
    """The smallest dtype that keeps the records' values: uint8 for whole pixel values, else
    float16 when it holds them within its precision, else float32."""
    if np.all(inputs == np.round(inputs)) and inputs.min() >= 0 and inputs.max() <= 255:
        return inputs.astype(np.uint8)
    if np.all(np.isfinite(inputs)) and np.abs(inputs).max() < 6e4:
        return inputs.astype(np.float16)
    return inputs


def write_verification(version_tmp, data, input_name, source):
    """Write the verification set: up to `NUM_VERIFICATION` records of ``data`` (at most
    `VERIFICATION_BYTES`) into ``assets.extra``; return its manifest entry."""
    first = samples(data, 1)
    stored = _compact(first)
    budget = max(1, VERIFICATION_BYTES // max(1, stored.nbytes))
    inputs = _compact(samples(data, min(NUM_VERIFICATION, budget)))
    path = os.path.join(version_tmp, VERIFICATION_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **{VERIFICATION_KEY: inputs})
    return {"file": VERIFICATION_PATH, "input": input_name, "records": int(len(inputs)),
            "dtype": inputs.dtype.name, "shape": list(inputs.shape[1:]), "source": source,
            "bytes": os.path.getsize(path), "sha256": sha256_of(path)}


def write(version_tmp, model, chosen, signature, class_names, representative_data,
          num_calibration=200, verification_data=None):
    """Export every chosen artifact into ``version_tmp`` and write the manifest.

    The verification set (`write_verification`) comes from ``verification_data``, else
    from ``representative_data``; none is written without either.

    Returns:
        The manifest dict written to ``assets.extra/artifacts.json``.
    """
    outputs = signature["outputs"]
    primary = "probabilities" if "probabilities" in outputs else next(iter(outputs))
    derived = {}
    if "class_index" in outputs:
        derived["class_index"] = f"argmax:{primary}"
    if "class_label" in outputs:
        derived["class_label"] = "label:class_index"
    entries = []
    for name, source in chosen.items():
        fmt, file_name, kwargs = ARTIFACTS[name]
        source = model if source is None else source
        path = os.path.join(version_tmp, file_name)
        calibration = ({"representative_data": representative_data,
                        "num_calibration": num_calibration} if name in _CALIBRATED else {})
        if fmt == "tflite":
            export_tflite(source, path, **kwargs, **calibration)
            precision = kwargs["quantization"]
        else:
            if is_quantization_aware(source):
                kwargs = {}   # the QAT graph keeps its own Q/DQ nodes
            export_onnx(source, path, **kwargs, **calibration)
            precision = "int8" if (kwargs or is_quantization_aware(source)) else "float32"
        file_inputs, file_outputs = _tensor_names(path)
        if len(file_inputs) != 1 or len(file_outputs) != 1:
            raise ExportError(
                f"{file_name} has inputs {file_inputs} and outputs {file_outputs}; one of each "
                "was expected. Nothing was written.")
        entries.append({
            "name": name, "file": file_name, "format": fmt,
            "runtimes": list(FORMAT_RUNTIMES[fmt]), "precision": precision,
            "bytes": os.path.getsize(path), "sha256": sha256_of(path),
            "inputs": {next(iter(signature["inputs"])): file_inputs[0]},
            "outputs": {primary: file_outputs[0]}, "derived": derived,
            "source_model": source.name})
    manifest = {"manifest_version": MANIFEST_VERSION,
                "class_labels": list(class_names) if class_names else None,
                "signature": signature, "artifacts": entries}
    data = verification_data if verification_data is not None else representative_data
    if data is not None:
        manifest["verification"] = write_verification(
            version_tmp, data, next(iter(signature["inputs"])),
            "verification_data" if verification_data is not None else "representative_data")
    path = os.path.join(version_tmp, MANIFEST_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest
