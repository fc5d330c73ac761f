"""The artifacts of one model version: the manifest beside the SavedModel, and its reader.

A version directory written by ``tfdeploy.export.saved_model(..., artifacts=...)``
holds, beside ``saved_model.pb``, other files exported from the same model
(``model_float32.tflite``, ``model_int8.tflite``, ``model_float32.onnx``, ...)
and ``assets.extra/artifacts.json`` listing them::

    {"manifest_version": 1,
     "class_labels": ["digit_0", ...],            # or null
     "signature": {"key": "serving_default",
                   "inputs": {"images": {"dtype": "float32", "shape": [-1, 32, 32, 1]}},
                   "outputs": {"probabilities": {"dtype": "float32", "shape": [-1, 10]},
                               "class_index": {"dtype": "int64", "shape": [-1]},
                               "class_label": {"dtype": "string", "shape": [-1]}}},
     "artifacts": [
       {"name": "tflite_int8", "file": "model_int8.tflite", "format": "tflite",
        "runtimes": ["litert"], "precision": "int8", "bytes": 5184, "sha256": "...",
        "inputs": {"images": "serving_default_images:0"},      # signature name -> file tensor
        "outputs": {"probabilities": "StatefulPartitionedCall:0"},
        "derived": {"class_index": "argmax:probabilities", "class_label": "label:class_index"}},
       ...],
     "verification": {"file": "assets.extra/verification_inputs.npz", "input": "images",
                      "records": 256, "dtype": "uint8", "bytes": 123456, "sha256": "..."}}

``verification`` (optional) is the verification set: a few hundred real inputs (the
representative or validation data, never the test split) that ``--runtime auto`` checks every
artifact on against the SavedModel; `read_verification` reads it, SHA-checked.

The SavedModel itself is never listed: `read_artifacts` always returns it first.
This module is the one reader of the manifest (the exporter writes it with the
names defined here; the serving runtimes read it through `read_artifacts`).
"""

import hashlib
import json
import os

from tfdeploy.errors import ArtifactError

MANIFEST_FILE = "artifacts.json"
MANIFEST_PATH = os.path.join("assets.extra", MANIFEST_FILE)
MANIFEST_VERSION = 1
#: format -> the serving runtimes that can run it (first: the file's own runtime).
FORMAT_RUNTIMES = {"saved_model": ("tensorflow",), "tflite": ("litert",),
                   "onnx": ("onnxruntime", "openvino")}
#: The verification set (numpy ``.npz``, key ``VERIFICATION_KEY``) beside the manifest.
VERIFICATION_FILE = "verification_inputs.npz"
VERIFICATION_PATH = os.path.join("assets.extra", VERIFICATION_FILE)
VERIFICATION_KEY = "inputs"
#: Outputs a file may lack, computed from the one named after the colon.
DERIVED_OPS = ("argmax", "label")


def sha256_of(path):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def saved_model_entry(version_dir, manifest=None):
    """The entry standing for the SavedModel itself (run by the TensorFlow runtime)."""
    manifest = manifest or {}
    return {"name": "saved_model", "file": ".", "format": "saved_model",
            "runtimes": list(FORMAT_RUNTIMES["saved_model"]), "precision": "float32",
            "path": os.path.abspath(version_dir), "class_labels": manifest.get("class_labels"),
            "signature": manifest.get("signature")}


def read_artifacts(version_dir):
    """The artifacts of a version directory, the SavedModel first.

    Each entry is a dict as written in the manifest (see the module docstring),
    plus ``path`` (the file's absolute path), ``class_labels`` and ``signature``
    (the manifest's, shared by every entry), so one entry is all a runtime needs.
    A version without a manifest has just the SavedModel.

    Raises:
        ArtifactError: the manifest is unreadable, of an unknown version, or names a
            file outside the version directory or one that does not exist.
    """
    path = os.path.join(version_dir, MANIFEST_PATH)
    if not os.path.exists(path):
        return [saved_model_entry(version_dir)]
    try:
        with open(path) as f:
            manifest = json.load(f)
        entries = manifest["artifacts"]
        found = manifest.get("manifest_version")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"Artifact manifest {path!r} cannot be read ({exc}); re-export the version with "
            "tfdeploy.export.saved_model(..., artifacts=...) or delete the manifest to serve "
            "the SavedModel alone.") from exc
    if found != MANIFEST_VERSION:
        raise ArtifactError(
            f"Artifact manifest {path!r} has manifest_version={found!r}; this tfdeploy reads "
            f"version {MANIFEST_VERSION}. Re-export the version with this tfdeploy.")
    root = os.path.realpath(version_dir)
    result = [saved_model_entry(version_dir, manifest)]
    for entry in entries:
        file_path = os.path.realpath(os.path.join(root, entry["file"]))
        if os.path.dirname(file_path) != root:
            raise ArtifactError(
                f"Artifact manifest {path!r} names {entry['file']!r}, which is not a file of "
                "the version directory; re-export the version.")
        if entry.get("format") not in FORMAT_RUNTIMES or entry["format"] == "saved_model":
            raise ArtifactError(
                f"Artifact manifest {path!r} lists {entry['file']!r} with format "
                f"{entry.get('format')!r}; expected one of ['tflite', 'onnx'].")
        if not os.path.isfile(file_path):
            raise ArtifactError(
                f"Artifact {file_path!r} listed in {path!r} does not exist; the version "
                "directory was changed after export. Re-export it.")
        result.append({**entry, "path": file_path, "class_labels": manifest.get("class_labels"),
                       "signature": manifest.get("signature")})
    return result


def check_file(entry):
    """Raise ArtifactError when an entry's file differs from what the manifest recorded."""
    path = entry["path"]
    size = os.path.getsize(path)
    if entry.get("bytes") is not None and size != entry["bytes"]:
        raise ArtifactError(
            f"Artifact {path!r} has {size} bytes, the manifest recorded {entry['bytes']}: the "
            "file is corrupt or was replaced after export. Re-export the version.")
    if entry.get("sha256") and sha256_of(path) != entry["sha256"]:
        raise ArtifactError(
            f"Artifact {path!r} does not match the SHA-256 recorded in its manifest: the file "
            "is corrupt or was replaced after export. Re-export the version.")


def read_verification(version_dir):
    """The version's verification set: ``(inputs, entry)``, or None when it has none.

    ``inputs`` is a float32 array of the records (batch first) for the signature input
    ``entry["input"]``; ``entry`` is the manifest's ``verification`` dict.

    Raises:
        ArtifactError: the manifest is unreadable, or the file is missing, outside the
            version directory, differs from its recorded size/SHA-256, or is not an array of
            the recorded record count.
    """
    import numpy as np

    path = os.path.join(version_dir, MANIFEST_PATH)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            entry = json.load(f).get("verification")
    except (OSError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"Artifact manifest {path!r} cannot be read ({exc}); re-export "
                            "the version.") from exc
    if not entry:
        return None
    root = os.path.realpath(version_dir)
    file_path = os.path.realpath(os.path.join(root, str(entry.get("file"))))
    if not file_path.startswith(root + os.sep) or not os.path.isfile(file_path):
        raise ArtifactError(
            f"The verification set {entry.get('file')!r} listed in {path!r} is not a file of the "
            "version directory; the version was changed after export. Re-export it.")
    check_file({**entry, "path": file_path})
    try:
        with np.load(file_path, allow_pickle=False) as data:
            inputs = np.asarray(data[VERIFICATION_KEY], dtype=np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"The verification set {file_path!r} cannot be read ({exc}); "
                            "re-export the version.") from exc
    if inputs.ndim < 1 or len(inputs) != entry.get("records"):
        raise ArtifactError(
            f"The verification set {file_path!r} holds {len(inputs) if inputs.ndim else 0} "
            f"records, the manifest recorded {entry.get('records')}; re-export the version.")
    return inputs, entry
