"""Export: SavedModel (TF Serving layout) and TFLite, each written atomically."""

from tfdeploy.errors import ExportError
from tfdeploy.export.saved_model import saved_model, versions
from tfdeploy.export.tflite import tflite

FORMATS = ("saved_model", "tflite")


def export(model, path, format="saved_model", **kwargs):  # noqa: A002
    """Export ``model`` to ``path`` in ``format`` ("saved_model" or "tflite")."""
    if format not in FORMATS:
        raise ExportError(
            f"Unrecognized format={format!r}. Supported formats are: {list(FORMATS)}.")
    return {"saved_model": saved_model, "tflite": tflite}[format](model, path, **kwargs)


__all__ = ["export", "saved_model", "tflite", "versions", "FORMATS"]
