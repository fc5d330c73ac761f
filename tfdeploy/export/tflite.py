"""TFLite export: float32 and full-integer int8, written atomically."""

import os

from tfdeploy._keras import check_model, tf
from tfdeploy.data.representative import representative_data as _representative
from tfdeploy.export._atomic import atomic_file
from tfdeploy.errors import ExportError

QUANTIZATIONS = ("float32", "int8")


def tflite(model, path, quantization="float32", representative_data=None, num_calibration=200,
           class_names=None):
    """Convert a Keras model to a ``.tflite`` file.

    Args:
        model: a Keras 2 model: stripped float, or quantization-aware (QAT).
        path: output file, e.g. ``saved_models/digits_int8.tflite``.
        quantization: "float32", or "int8" for full-integer quantization (int8
            weights and activations, float32 input/output so clients send raw
            pixels unchanged). Defaults to "float32".
        representative_data: calibration inputs for "int8": a ``tf.data.Dataset``
            of ``(images, labels)`` or a numpy array (the training set is right).
            Required for "int8".
        num_calibration: calibration samples used. Defaults to 200.
        class_names: if given, written one per line to ``<path minus .tflite>.labels.txt``.

    Returns:
        ``path``.

    Raises:
        ExportError: unknown quantization, missing calibration data, or a
            conversion failure (with the converter's message).
    """
    check_model(model)
    if quantization not in QUANTIZATIONS:
        raise ExportError(
            f"Unrecognized quantization={quantization!r}. Supported quantizations are: "
            f"{list(QUANTIZATIONS)}.")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "int8":
        if representative_data is None:
            raise ExportError(
                "quantization='int8' needs representative_data (e.g. the training dataset) to "
                "calibrate activation ranges.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative_data, num_calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # the converter raises many types
        raise ExportError(f"TFLite conversion ({quantization}) failed: {exc}") from exc
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
    if class_names:
        labels = os.path.splitext(path)[0] + ".labels.txt"
        with atomic_file(labels) as tmp:
            with open(tmp, "w") as f:
                f.write("\n".join(str(c) for c in class_names) + "\n")
    return path
