"""TFLite export: float32, float16, dynamic range, full int8, 16x8 and automatic mixed
precision ("auto", see `tfdeploy.export.mixed_precision`), written atomically.

Conversion first runs with TFLite's builtin ops only. A model that would need
TensorFlow (Flex / "Select TF") ops is detected there and reported with the op
names before anything is written; ``allow_flex=True`` converts it anyway.
"""

import os
import tempfile

from tfdeploy.model_io import check_model
from tfdeploy._keras import tf
from tfdeploy.compress.fold import fold_input_preprocessing
from tfdeploy.compress.wrappers import is_quantization_aware
from tfdeploy.compress.calibrate import unset_input_ranges
from tfdeploy.compress.history import history
from tfdeploy.data.representative import representative_data as _representative
from tfdeploy._atomic import atomic_file
from tfdeploy.export import mixed_precision as _mixed
from tfdeploy.export import model_card as _card
from tfdeploy.export._twin import float_twin
from tfdeploy.errors import ExportError

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8", "int16x8", "auto")
_IO_TYPES = {"float32": ("float32",), "float16": ("float32",), "dynamic": ("float32",),
             "int8": ("float32", "int8", "uint8"), "int16x8": ("float32", "int16"),
             "auto": ("float32",)}
_CALIBRATED = ("int8", "int16x8", "auto")


def labels_path(path):
    """The labels file written beside a ``.tflite`` or ``.onnx`` artifact."""
    return os.path.splitext(path)[0] + ".labels.txt"


def write_labels(path, class_names):
    """Write ``class_names`` one per line beside ``path``; returns the labels path."""
    labels = labels_path(path)
    with atomic_file(labels) as tmp:
        with open(tmp, "w") as f:
            f.write("\n".join(str(c) for c in class_names) + "\n")
    return labels


def check_input_ranges(qat_model, what):
    """Refuse a QAT model whose input fake-quant range was never set (`unset_input_ranges`)."""
    unset = unset_input_ranges(qat_model)
    if unset:
        raise ExportError(
            f"Cannot {what}: the input range of QAT model {qat_model.name!r} at {unset} was "
            "never set (tfmot starts it at [0, 0] and sets it in the first training step), so "
            "every input would be quantized to 0. Calibrate it with "
            "tfdeploy.compress.quantize(model, calibration_data=train_images), or fit the QAT "
            "model before exporting it. Nothing was written.")


def refuse_existing(path, overwrite):
    """Raise ExportError when ``path`` exists and ``overwrite`` is False."""
    if not overwrite and os.path.exists(path):
        raise ExportError(
            f"{path!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it, "
            "or choose another path.")


class _Variables(tf.Module):
    """What the conversion SavedModel tracks: the model's variables, nothing Keras-specific."""

    def __init__(self, model):
        super().__init__(name="tfdeploy_conversion")
        self.tracked = list(model.variables)


def _serving_function(model):
    """``model(inputs, training=False)`` as a concrete function with Keras's default signature
    (inputs named like the model's, outputs keyed by ``model.output_names``), or None when the
    model's inputs are not a plain tensor list."""
    inputs = model.inputs
    if not inputs or not isinstance(inputs, (list, tuple)):
        return None
    specs = [tf.TensorSpec([None] + list(t.shape[1:]), t.dtype, name=t.name.split(":")[0])
             for t in inputs]
    names = list(model.output_names)

    def serve(*xs):
        out = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        return dict(zip(names, out if isinstance(out, (list, tuple)) else [out]))

    return tf.function(serve, input_signature=specs).get_concrete_function()


def _saved_model_converter(saved_dir):
    """``tf.lite.TFLiteConverter.from_saved_model(saved_dir)`` for a SavedModel whose only
    signature is ``serving_default``, without its two full TF2 loads of the SavedModel.

    ``from_saved_model`` loads the SavedModel (every function rebuilt in Python) to list its
    signatures, and ``convert`` loads it again only to read its debug info; the converter
    itself reads the graph through a TF1 import. This builds the same converter class
    (the same conversion metadata: a SavedModel) for the signature we saved, and takes the
    debug info from the SavedModel's file (``save_debug_info=True``): the same flatbuffer,
    byte for byte (``tests/test_export_tflite.py``), 40 % less CPU for an int8 MobileNetV2.
    TensorFlow Lite's converter internals (checked with TF 2.21); None when they moved
    (the caller then takes ``from_saved_model``).
    """
    try:
        from tensorflow.lite.python import lite
        from tensorflow.python.saved_model import loader_impl

        base, model_type = lite.TFLiteSavedModelConverterV2, lite.conversion_metadata_fb
        debug_info_of, debug_func = lite._get_debug_info, lite._convert_debug_info_func
        export_metrics = lite._export_metrics
        parse = loader_impl.parse_saved_model_with_debug_info
    except (ImportError, AttributeError):
        return None

    class Converter(base):
        @export_metrics
        def convert(self):
            graph_def, _, _ = self._load_saved_model(self.saved_model_dir,
                                                     self._saved_model_tags)
            self._debug_info = debug_info_of(debug_func(parse(self.saved_model_dir)[1]),
                                             graph_def)
            return self._convert_from_saved_model(graph_def)

    lite.TFLiteConverterBase._set_original_model_type(model_type.ModelType.TF_SAVED_MODEL)
    return Converter(saved_dir, {tf.saved_model.SERVING}, ["serving_default"])


def _converter(model, quantization, io_type, representative_data, num_calibration, ops,
               sparse=False, saved_dir=None, lean=True):
    converter = None
    if saved_dir is not None:
        # TFLiteConverter.from_keras_model saves the model as a Keras SavedModel first, which
        # traces every layer's call for Keras metadata the converter never reads: 2/3 of an
        # int8 MobileNetV2 conversion. Saving only the serving function and the variables it
        # reads gives the converter the same graph. Models whose graph reads other resources
        # (lookup tables) or whose inputs are not a tensor list take Keras's path.
        try:
            fn = _serving_function(model)
            if fn is not None:
                tf.saved_model.save(_Variables(model), saved_dir, signatures=fn,
                                    options=tf.saved_model.SaveOptions(save_debug_info=True))
                converter = (_saved_model_converter(saved_dir) if lean else None) or \
                    tf.lite.TFLiteConverter.from_saved_model(saved_dir)
        except (ValueError, TypeError, AssertionError, tf.errors.OpError):
            converter = None
    if converter is None:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization in _CALIBRATED:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative_data, num_calibration)
        if quantization == "int8":
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + ops[1:]
        else:
            ops = [tf.lite.OpsSet.
                   EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8] + ops[1:]
        if io_type != "float32":
            converter.inference_input_type = tf.as_dtype(io_type)
            converter.inference_output_type = tf.as_dtype(io_type)
    converter.target_spec.supported_ops = ops
    if sparse:
        converter.optimizations = list(converter.optimizations or []) + [
            tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return converter


def _convert(model, quantization, io_type, representative_data, num_calibration, ops,
             sparse=False):
    """The flatbuffer of ``model`` converted with `_converter`'s settings."""
    with tempfile.TemporaryDirectory(prefix="tfdeploy_tflite_") as tmp:
        return _converter(model, quantization, io_type, representative_data, num_calibration,
                          ops, sparse, saved_dir=os.path.join(tmp, "saved_model")).convert()


def _flex_ops_of(exc):
    """Op names from a converter error that asks for Flex (Select TF) ops, else None."""
    errors = getattr(exc, "errors", None) or []
    needs_flex = any("NEEDS_FLEX_OPS" in str(e) for e in errors)
    message = str(exc)
    marker = "TF Select ops: "
    if marker in message:
        line = message.split(marker, 1)[1].splitlines()[0]
        return sorted({op.strip() for op in line.split(",") if op.strip()})
    if needs_flex:
        import re

        return sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op",
                                     message))) or ["<unknown>"]
    return None


def flex_ops(model):
    """Return the TensorFlow ops ``model`` would need as TFLite Flex ops ([] if none).

    Runs a builtin-ops-only conversion in memory and reads the converter's
    report; nothing is written.

    Raises:
        ExportError: the conversion fails for another reason.
    """
    model = check_model(model)
    try:
        _convert(model, "float32", "float32", None, 0, [tf.lite.OpsSet.TFLITE_BUILTINS])
    except Exception as exc:  # the converter raises many types
        ops = _flex_ops_of(exc)
        if ops is None:
            raise ExportError(f"TFLite conversion (float32) failed: {exc}") from exc
        return ops
    return []


def _convert_builtin_or_flex(model, quantization, io_type, representative_data,
                             num_calibration, sparse, allow_flex):
    """Convert with builtin ops; with Flex ops too only when ``allow_flex``."""
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return _convert(model, quantization, io_type, representative_data, num_calibration,
                        builtins, sparse)
    except Exception as exc:  # the converter raises many types
        ops = _flex_ops_of(exc)
        if ops is None:
            raise ExportError(f"TFLite conversion ({quantization}) failed: {exc}") from exc
        if not allow_flex:
            raise ExportError(
                f"Model {model.name!r} needs TensorFlow ops that TFLite has no builtin kernel "
                f"for (Flex ops): {ops}. Nothing was written. Replace those layers, or pass "
                "allow_flex=True (the .tflite file then needs the Flex delegate, "
                "tensorflow-lite-select-tf-ops, wherever it runs).") from exc
    try:
        return _convert(model, quantization, io_type, representative_data, num_calibration,
                        builtins + [tf.lite.OpsSet.SELECT_TF_OPS], sparse)
    except Exception as exc2:
        raise ExportError(
            f"TFLite conversion ({quantization}) with Flex ops failed: {exc2}") from exc2


def recorded_precision_map(model):
    """The precision map a QAT model was annotated from (``compress.quantize(...,
    precision_map=...)``), else None."""
    if not is_quantization_aware(model):
        return None
    for entry in reversed(history(model)):
        if entry.get("technique") == "quantized":
            return (entry.get("params") or {}).get("precision_map")
    return None


def float_flatbuffer(model):
    """The float32 ``.tflite`` flatbuffer of ``model`` (input preprocessing folded), in memory:
    what `sensitivity` and ``quantization="auto"`` build every candidate from."""
    model = check_model(model)
    if is_quantization_aware(model):
        raise ExportError(
            f"Model {model.name!r} is quantization-aware; sensitivity and the mixed-precision "
            "search start from the float model (pass the model before quantize()).")
    try:
        return _convert(fold_input_preprocessing(model), "float32", "float32", None, 0,
                        [tf.lite.OpsSet.TFLITE_BUILTINS])
    except Exception as exc:  # the converter raises many types
        raise ExportError(f"TFLite conversion (float32) failed: {exc}") from exc


def sensitivity(model, representative_data, validation_data, num_calibration=200):
    """Measure how much each layer of ``model`` loses to int8, on its exported file, in LiteRT.

    The float ``.tflite`` is converted once; for every layer (the operators the
    converter made from one Keras layer) ai-edge-quantizer then builds a file
    where only that layer is int8, and one where only that layer stays float,
    and each runs in LiteRT on ``validation_data``.

    Args:
        model: a float Keras 2 model.
        representative_data: calibration inputs (``tf.data.Dataset`` or array; the
            training set).
        validation_data: ``(x, y)`` or a dataset of ``(x, y)`` batches, carved from
            the training data (the test split is for the final report).
        num_calibration: calibration samples. Defaults to 200.

    Returns:
        A `tfdeploy.export.mixed_precision.Sensitivity`: ``.rows`` ranked most
        sensitive first (output error and accuracy drop with that layer alone int8,
        accuracy gain with it alone float), ``.table()``, ``.to_json(path)``;
        ``tfdeploy.viz.log_sensitivity(log_dir, result)`` writes the TensorBoard image.

    Raises:
        ExportError: a QAT model, missing calibration data, or a failed conversion.
        DataError: validation data that is not ``(x, y)``.
        MissingDependencyError: ai-edge-quantizer is not installed.

    Example:
        >>> result = sensitivity(model, train_images, (val_images, val_labels))
        >>> print(result.table())
    """
    # bad validation data is refused before the model is converted
    validation_data = _mixed.validation_arrays(validation_data)
    return _mixed.measure_sensitivity(float_flatbuffer(model), representative_data,
                                      validation_data, num_calibration)


def tflite(model, path, quantization="float32", representative_data=None, num_calibration=200,
           class_names=None, io_type="float32", allow_flex=False, model_card=None, sparse=False,
           overwrite=False, budget=None, validation_data=None, objective="size",
           max_latency_ratio=1.0):
    """Convert a Keras model to a ``.tflite`` file.

    Args:
        model: a Keras 2 model: stripped float, or quantization-aware (QAT).
        path: output file, e.g. ``saved_models/digits_int8.tflite``.
        quantization: "float32"; "float16" (float16 weights, float compute);
            "dynamic" (int8 weights, activations quantized on the fly); "int8"
            (full integer: int8 weights and activations, calibrated); or
            "int16x8" (int16 activations, int8 weights, calibrated); or "auto"
            (mixed precision per layer: int8, int16 activations + int8 weights,
            float, or int4 weight-only, chosen by measuring candidate files in
            LiteRT on ``validation_data``; the smallest, or fastest, within
            ``budget`` is written, its precision map in the model card; see
            `tfdeploy.export.mixed_precision`). A QAT model annotated from a
            precision map (``compress.quantize(..., precision_map=...)``) takes
            "auto" without a search: that map is built from its trained weights,
            activation ranges calibrated on ``representative_data``. Defaults
            to "float32".
        representative_data: calibration inputs for "int8"/"int16x8": a
            ``tf.data.Dataset`` of ``(images, labels)`` or a numpy array (the
            training set is right). Required for those two.
        num_calibration: calibration samples used. Defaults to 200.
        class_names: if given, written one per line to ``<path minus .tflite>.labels.txt``.
        io_type: input/output tensor type: "float32" (clients send raw pixels
            unchanged), or for "int8" also "int8"/"uint8", for "int16x8" also
            "int16" (clients quantize with the tensor's scale and zero point;
            `tfdeploy.runtime` does it for you). Defaults to "float32".
        allow_flex: convert even when TensorFlow (Flex) ops are needed; the file
            then needs the Flex delegate at run time. Defaults to False.
        sparse: store pruned weight tensors in TFLite's sparse format
            (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``), the input of XNNPACK's
            sparse inference for models pruned with ``prune(..., policy="xnnpack")``.
            Files shrink; latency only drops in a runtime built with XNNPACK
            sparse inference enabled (the ``ai_edge_litert`` Python interpreter
            does not enable it). Defaults to False.
        model_card: a dict (``{}`` is fine) to write a JSON model card to
            ``<path minus .tflite>.card.json``, merged into it; None writes no
            card. Defaults to None.
        overwrite: replace an existing file at ``path`` (atomically: readers see
            the old file or the new one, never a part). Defaults to False.
        budget: for "auto": the validation accuracy, in percentage points, the
            file may lose against the float file (0.5 = half a point). Required
            for "auto".
        validation_data: for "auto": ``(x, y)`` or a dataset of ``(x, y)``
            batches carved from the training data, on which every candidate is
            measured. Required for "auto".
        objective: for "auto": "size" (smallest gzip bytes) or "latency"
            (lowest p50 at batch 1, measured). Defaults to "size". An "auto"
            file's input and output tensors are int8/int16 where its first and
            last layers are quantized; `tfdeploy.runtime` quantizes for you.
        max_latency_ratio: for "auto": a candidate slower at batch 1 than this
            times the float file, less a 10 % margin for the clock's noise
            (25 % where an operator runs outside XNNPACK;
            `mixed_precision.LATENCY_MARGIN`), in any of 7 rounds (both timed
            in turns in LiteRT, one thread; the slowest round decides) is not
            shipped; the next best is, down to the float file. None turns the
            check off. Defaults to 1.0 (never slower than float).

    Returns:
        ``path``.

    Raises:
        ExportError: ``path`` exists (without ``overwrite``), unknown
            quantization or io_type, missing calibration data, Flex ops needed
            (the message names them), or a conversion failure (with the
            converter's message).

    Example:
        >>> tflite(model, "saved_models/digits_int8.tflite", quantization="int8",
        ...        representative_data=train_ds)
    """
    model = check_model(model)
    refuse_existing(path, overwrite)
    if quantization not in QUANTIZATIONS:
        raise ExportError(
            f"Unrecognized quantization={quantization!r}. Supported quantizations are: "
            f"{list(QUANTIZATIONS)}.")
    if io_type not in _IO_TYPES[quantization]:
        raise ExportError(
            f"io_type={io_type!r} is not available with quantization={quantization!r}; "
            f"choose one of {list(_IO_TYPES[quantization])}.")
    if quantization in _CALIBRATED and representative_data is None:
        raise ExportError(
            f"quantization={quantization!r} needs representative_data (e.g. the training "
            "dataset) to calibrate activation ranges.")
    mixed = None
    if quantization == "auto":
        chosen = recorded_precision_map(model)
        if chosen is not None:  # QAT that followed a search: build its map, trained weights
            flatbuffer, mixed = _mixed.build(float_flatbuffer(float_twin(model)),
                                             representative_data, chosen, num_calibration)
        else:
            _mixed.check_search(budget, objective, validation_data, max_latency_ratio)
            # bad validation data is refused before the model is converted
            validation_data = _mixed.validation_arrays(validation_data)
            flatbuffer, mixed = _mixed.search(float_flatbuffer(model), representative_data,
                                              validation_data, budget, objective,
                                              num_calibration,
                                              max_latency_ratio=max_latency_ratio)
        if model_card is None:
            model_card = {}  # the precision map always goes beside an "auto" file
    else:
        if is_quantization_aware(model):
            check_input_ranges(model, "convert it to TFLite")
        elif not sparse:
            # raw-pixel input rescaling and channel copies go into the first conv (exact up
            # to float rounding; 1 ms of a 224x224 MobileNetV2); pruned/clustered kernels
            # are kept
            model = fold_input_preprocessing(model)
        flatbuffer = _convert_builtin_or_flex(model, quantization, io_type, representative_data,
                                              num_calibration, sparse, allow_flex)
    try:
        with atomic_file(path, overwrite=overwrite) as tmp:
            with open(tmp, "wb") as f:
                f.write(flatbuffer)
    except FileExistsError:
        refuse_existing(path, overwrite)  # another writer got there first
    if class_names:
        write_labels(path, class_names)
    if model_card is not None:
        _card.write(_card.card_path(path), model,
                    {"artifact": {"format": "tflite", "quantization": quantization,
                                  "io_type": io_type, "flex": bool(allow_flex),
                                  "bytes": len(flatbuffer),
                                  "class_names": list(class_names) if class_names else None,
                                  **({"mixed_precision": mixed} if mixed else {})}},
                    model_card)
    return path
