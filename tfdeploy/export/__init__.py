"""Export: SavedModel (TF Serving layout), TFLite and ONNX, each written atomically.

The public functions are ``saved_model``, ``tflite`` and ``onnx``; each format lives in
a private module of its own (``_saved_model``, ``_tflite``, ``_onnx``), so the function
names never shadow a module.
"""

from tfdeploy.errors import ExportError
from tfdeploy.export.model_card import read as read_model_card
from tfdeploy.export._onnx import ExportFallbackWarning, onnx
from tfdeploy.export._saved_model import saved_model, signature_names, versions
from tfdeploy.export.text import retrieval_saved_model, text_saved_model, text_tflite
from tfdeploy.export._tflite import QUANTIZATIONS, flex_ops, sensitivity, tflite
from tfdeploy.export.mixed_precision import OBJECTIVES, PRECISIONS, Sensitivity

FORMATS = ("saved_model", "tflite", "onnx")


def export(model, path, format="saved_model", **kwargs):  # noqa: A002
    """Export ``model`` to ``path`` in ``format`` ("saved_model", "tflite" or "onnx").

    Keyword arguments go to `saved_model`, `tflite` or `onnx`.
    """
    if format not in FORMATS:
        raise ExportError(
            f"Unrecognized format={format!r}. Supported formats are: {list(FORMATS)}.")
    return {"saved_model": saved_model, "tflite": tflite, "onnx": onnx}[format](
        model, path, **kwargs)


__all__ = ["export", "saved_model", "tflite", "onnx", "versions", "signature_names", "flex_ops",
           "read_model_card", "sensitivity", "Sensitivity", "PRECISIONS", "OBJECTIVES",
           "ExportFallbackWarning", "FORMATS", "QUANTIZATIONS",
           "text_saved_model", "retrieval_saved_model", "text_tflite"]
