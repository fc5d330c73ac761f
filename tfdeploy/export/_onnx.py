"""ONNX export with tf2onnx, validated by onnxruntime.

A quantization-aware (QAT) model keeps its fake-quant ranges as
QuantizeLinear/DequantizeLinear (Q/DQ) pairs. If that is not possible (e.g. an
opset below 13) the exporter warns and says plainly that it fell back to a
float graph, and with ``quantize="dynamic"|"static"`` it quantizes that float
graph with onnxruntime's own quantizer.
"""

import json
import os
import shutil
import warnings

import numpy as np

from tfdeploy.model_io import check_model
from tfdeploy._keras import keras, tf
from tfdeploy.compress.calibrate import uncalibrated_layers
from tfdeploy.export._tflite import check_input_ranges
from tfdeploy.compress.wrappers import is_quantization_aware
from tfdeploy._atomic import atomic_file, temp_dir_name
from tfdeploy.export import model_card as _card
from tfdeploy.export._tflite import refuse_existing, write_labels
from tfdeploy.export._twin import float_twin as _float_twin
from tfdeploy.errors import ExportError, MissingDependencyError, VerificationError
from tfdeploy.verify.report import TOLERANCES

DEFAULT_OPSET = 13
QUANTIZE = (None, "dynamic", "static")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_QUANT_OPS = QDQ_OPS + ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
                        "QLinearMatMul")
FLOAT_ATOL = 1e-4
#: Representative samples the exported graph is validated on (8 random inputs without them):
#: enough that a 2-point int8 drop shows (one disagreement is 0.4 %, not 1.6 % as of 64).
VALIDATION_SAMPLES = 256


class ExportFallbackWarning(UserWarning):
    """The exporter produced something other than what was asked (said in the message)."""


def _deps():
    try:
        import onnx as onnx_lib
        import onnxruntime
        import tf2onnx
    except ImportError as exc:
        raise MissingDependencyError(
            f"ONNX export needs tf2onnx, onnx and onnxruntime ({exc.name} is missing); "
            "`pip install tf2onnx onnx onnxruntime`.") from exc
    return onnx_lib, onnxruntime, tf2onnx


def input_signature(model):
    """The explicit tf2onnx input signature: batch dimension free, the rest fixed.

    A single input is named ``images`` (as in the SavedModel's serving_default).
    """
    names = ["images"] if len(model.inputs) == 1 else list(model.input_names)
    return tuple(tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=n)
                 for t, n in zip(model.inputs, names))


def _op_types(model_proto):
    return {node.op_type for node in model_proto.graph.node}


def _runtime_problem(proto):
    """onnxruntime's complaint about a converted graph, or None when it loads."""
    _, onnxruntime, _ = _deps()
    try:
        onnxruntime.InferenceSession(proto.SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind types
        return str(exc).splitlines()[0][:300]
    return None


def _sample_inputs(model, representative_data, n=8):
    if representative_data is not None:
        from tfdeploy.export._warmup import samples

        return samples(representative_data, n)
    rng = np.random.default_rng(0)
    shape = [n, *model.inputs[0].shape[1:]]
    return rng.uniform(0.0, 255.0, shape).astype(np.float32)


def validate(path, model, x, atol=FLOAT_ATOL, min_agreement=None):
    """Run ``path`` in onnxruntime and compare names, shapes, then values with ``model``.

    Args:
        path: the ``.onnx`` file.
        model: the Keras model it came from.
        x: inputs to run both on.
        atol: largest max absolute difference allowed per output; None only
            reports it. Defaults to `FLOAT_ATOL`.
        min_agreement: smallest share of samples whose top class (argmax of a
            classifier output) must match the Keras model's; None only reports
            it. Defaults to None.

    Returns:
        ``{"max_abs_diff": float, "agreement": float or None, "samples": int,
        "outputs": [names]}``.

    Raises:
        VerificationError: listing every failing check.
    """
    _, onnxruntime, _ = _deps()
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind types
        raise VerificationError(f"onnxruntime cannot load {path!r}: {exc}",
                                [f"load: {exc}"]) from exc
    names = [i.name for i in session.get_inputs()]
    failures = []
    if len(names) != 1:
        failures.append(f"expected one input, the ONNX model has {names}")
        raise VerificationError(f"ONNX validation of {path!r} failed: {failures}", failures)
    got = session.run(None, {names[0]: np.asarray(x, np.float32)})
    ref = model(np.asarray(x, np.float32), training=False)
    ref = [np.asarray(r) for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
    out_names = [o.name for o in session.get_outputs()]
    if len(got) != len(ref):
        failures.append(f"{len(got)} outputs {out_names}, the Keras model has {len(ref)}")
    diffs, agreements = [], []
    for name, g, r in zip(out_names, got, ref):
        if g.shape != r.shape:
            failures.append(f"output {name!r}: shape {g.shape}, expected {r.shape}")
            continue
        diff = float(np.max(np.abs(g.astype(np.float64) - r))) if g.size else 0.0
        diffs.append(diff)
        if atol is not None and not diff <= atol:
            failures.append(f"output {name!r}: max abs diff {diff:.3g} > atol {atol:.3g}")
        if g.ndim == 2 and g.shape[-1] >= 2 and len(g):
            agreement = float(np.mean(np.argmax(g, -1) == np.argmax(r, -1)))
            agreements.append(agreement)
            if min_agreement is not None and agreement < min_agreement:
                failures.append(f"output {name!r}: top-class agreement {agreement:.4f} < "
                                f"{min_agreement:.4g} over {len(g)} samples")
    if failures:
        raise VerificationError(
            f"ONNX validation of {path!r} failed:\n  " + "\n  ".join(failures), failures)
    return {"max_abs_diff": max(diffs) if diffs else 0.0,
            "agreement": min(agreements) if agreements else None, "samples": len(x),
            "outputs": out_names}


def _quantize(float_path, out_path, mode, model, representative_data, num_calibration, opset):
    from onnxruntime import quantization as q

    if mode == "dynamic":
        q.quantize_dynamic(float_path, out_path, weight_type=q.QuantType.QInt8)
        return {"method": "dynamic", "weights": "int8"}
    if representative_data is None:
        raise ExportError("quantize='static' needs representative_data to calibrate ranges.")
    calibration = _sample_inputs(model, representative_data, num_calibration)

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self._rows = iter(calibration)

        def get_next(self):
            row = next(self._rows, None)
            return None if row is None else {"images": row[None]}

    # onnxruntime's pre-processing (ONNX shape inference and its basic graph optimizations)
    # first: the quantized MobileNetV2 runs 2.0x faster in ONNX Runtime with it (2.6 vs 5.3
    # ms). Its symbolic shape inference is skipped: it needs sympy, which tfdeploy does not
    # install, and the speed-up is the same without it (3.25 vs 3.32 ms, 2 turns). A graph it
    # cannot process is quantized as it is, and the metadata says so.
    source, preprocessed = os.path.join(os.path.dirname(out_path), "preprocessed.onnx"), True
    try:
        q.quant_pre_process(float_path, source, skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 -- an optimization, never a reason to fail the export
        source, preprocessed = float_path, False
    # u8 activations with s8 weights: what onnxruntime's x86 int8 kernels (VNNI/AMX) and
    # OpenVINO's take fastest. s8 activations ran MobileNetV2 2.3x slower in both runtimes
    # (OpenVINO 5.96 vs 2.52 ms, ONNX Runtime 5.89 vs 2.18 ms) at the same validation
    # accuracy. On AVX2 without VNNI u8 x s8 products can saturate; `auto` verifies each file
    # on the machine that serves it and passes over one that strays.
    q.quantize_static(source, out_path, Reader(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      per_channel=opset >= 13)  # per-channel Q/DQ needs opset 13
    return {"method": "MinMax", "samples": int(len(calibration)), "activations": "uint8",
            "weights": "int8", "per_channel": opset >= 13, "format": "QDQ",
            "preprocessed": preprocessed}


def onnx(model, path, opset=DEFAULT_OPSET, quantize=None, representative_data=None,
         num_calibration=200, class_names=None, model_card=None, overwrite=False):
    """Convert a Keras model to ONNX with tf2onnx and validate it with onnxruntime.

    The input signature is explicit: one ``images`` input with a free batch
    dimension. A QAT model exports with its Q/DQ nodes intact; when the
    converter cannot keep them it warns (``ExportFallbackWarning``) and writes
    the float graph of the trained weights instead. The result is recorded in
    the ONNX metadata (``tfdeploy.quantization``: "float", "qdq", "dynamic" or
    "static"; ``tfdeploy.fallback`` holds the reason when there was one).

    Args:
        model: a Keras 2 model: stripped float, or quantization-aware (QAT).
        path: output file, e.g. ``saved_models/digits.onnx``.
        opset: ONNX opset. Defaults to 13.
        quantize: None, "dynamic" (int8 weights, onnxruntime's
            ``quantize_dynamic``) or "static" (int8 Q/DQ calibrated on
            ``representative_data``) applied to a float graph. Defaults to None.
        representative_data: calibration/validation inputs (dataset of
            ``(images, labels)`` or numpy array). Defaults to None (validation
            uses random pixels).
        num_calibration: calibration samples for "static". Defaults to 200.
        class_names: written to ``<path minus .onnx>.labels.txt`` and the metadata.
        model_card: a dict (``{}`` is fine) to write a JSON model card to
            ``<path minus .onnx>.card.json``, merged into it; None writes no card.
        overwrite: replace an existing file at ``path`` (atomically). Defaults to False.

    Returns:
        ``path``.

    Raises:
        ExportError: ``path`` exists (without ``overwrite``), bad option,
            conversion failure, or ``quantize`` asked of a graph that already
            holds Q/DQ nodes.
        VerificationError: onnxruntime's output disagrees with Keras (float graphs).
        MissingDependencyError: tf2onnx/onnx/onnxruntime not installed.

    Example:
        >>> onnx(model, "saved_models/digits.onnx", opset=13)
    """
    model = check_model(model)
    refuse_existing(path, overwrite)
    onnx_lib, _, tf2onnx = _deps()
    if quantize not in QUANTIZE:
        raise ExportError(
            f"Unrecognized quantize={quantize!r}. Supported values are: {list(QUANTIZE)}.")
    if not isinstance(opset, int) or opset < 9:
        raise ExportError(f"opset must be an integer >= 9, received {opset!r}.")
    least = {"static": 10, "dynamic": 11}.get(quantize, 0)
    if opset < least:
        raise ExportError(
            f"quantize={quantize!r} needs opset >= {least} ("
            f"{'QuantizeLinear' if quantize == 'static' else 'DynamicQuantizeLinear'}), "
            f"received opset={opset}.")
    if len(model.inputs) != 1:
        raise ExportError(
            f"ONNX export supports single-input models; {model.name!r} has {len(model.inputs)}.")
    qat = is_quantization_aware(model)
    if qat:
        check_input_ranges(model, "export it to ONNX")
    fallback = None
    source = model
    spec = input_signature(model)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    except Exception as exc:  # tf2onnx raises many types
        if not qat:
            raise ExportError(f"tf2onnx conversion (opset {opset}) failed: {exc}") from exc
        fallback = f"tf2onnx could not convert the fake-quant ops at opset {opset}: {exc}"
        proto = None
    if qat and proto is not None and not set(QDQ_OPS) <= _op_types(proto):
        fallback = (f"tf2onnx kept no QuantizeLinear/DequantizeLinear nodes at opset {opset} "
                    "(per-channel Q/DQ needs opset 13 or higher)")
    elif qat and proto is not None:
        problem = _runtime_problem(proto)
        if problem:
            fallback = f"onnxruntime rejects the Q/DQ graph at opset {opset}: {problem}"
    if fallback:
        source = _float_twin(model)
        warnings.warn(
            f"ONNX export of QAT model {model.name!r} fell back to a float graph: {fallback}. "
            + ("It will be quantized by onnxruntime's quantizer (quantize="
               f"{quantize!r})." if quantize else
               "Pass quantize='static' or 'dynamic' to quantize it with onnxruntime, or use "
               "opset>=13 to keep the QAT ranges."), ExportFallbackWarning, stacklevel=2)
        try:
            proto, _ = tf2onnx.convert.from_keras(source, input_signature=spec, opset=opset)
        except Exception as exc:
            raise ExportError(f"tf2onnx conversion of the float graph failed: {exc}") from exc
    has_qdq = set(QDQ_OPS) <= _op_types(proto)
    if quantize and has_qdq:
        raise ExportError(
            f"quantize={quantize!r} was asked but the exported graph already holds Q/DQ nodes "
            "from quantization-aware training; pass quantize=None.")
    kind = quantize or ("qdq" if has_qdq else "float")
    # Float graphs must match to FLOAT_ATOL; quantized ones (Q/DQ from QAT, or onnxruntime's
    # quantizer) are compared with the trained model they came from, with the int8
    # tolerances of tfdeploy.verify: top-class agreement on real samples, max |diff| reported.
    real = representative_data is not None
    x = _sample_inputs(model, representative_data, VALIDATION_SAMPLES if real else 8)
    tol = TOLERANCES["float32" if kind == "float" else "int8"]
    checks = {"atol": FLOAT_ATOL} if kind == "float" else {
        "atol": tol["atol"], "min_agreement": tol["min_agreement"] if real else None}
    # scratch space beside the output, named with our pid: a killed export's leftovers are
    # removed by the next export there (never left in $TMPDIR)
    parent = os.path.dirname(os.path.abspath(path))
    scratch = temp_dir_name(parent, os.path.basename(path), ".scratch")
    os.makedirs(scratch)
    try:
        float_path = os.path.join(scratch, "model.onnx")
        onnx_lib.save(proto, float_path)
        validate(float_path, source, x, atol=None if has_qdq else FLOAT_ATOL)  # float graph
        final_src, calibration = float_path, None
        if quantize:
            final_src = os.path.join(scratch, "quantized.onnx")
            try:
                calibration = _quantize(float_path, final_src, quantize, model,
                                        representative_data, num_calibration, opset)
            except ExportError:
                raise
            except Exception as exc:
                raise ExportError(f"onnxruntime quantize_{quantize} failed: {exc}") from exc
        final = onnx_lib.load(final_src)
        try:
            report = validate(final_src, source if kind == "float" else model, x, **checks)
        except VerificationError as exc:
            stuck = uncalibrated_layers(model) if kind != "float" else []
            if stuck:
                hint = (f"the QAT activation ranges of {len(stuck)} layer(s) (e.g. "
                        f"{stuck[0]!r}) are still tfmot's initial [-6, 6], so every "
                        "activation is quantized in steps of 12/255 and near-tied classes flip "
                        "between runtimes; calibrate them with tfdeploy.compress.quantize(..., "
                        "calibration_data=train_ds) before the QAT fine-tune")
                raise VerificationError(f"{exc}\n  hint: {hint}", exc.failures + [hint]) from exc
            raise
        meta = {"tfdeploy.quantization": kind, "tfdeploy.opset": str(opset),
                "tfdeploy.source": model.name,
                "tfdeploy.validation": json.dumps({
                    "max_abs_diff": report["max_abs_diff"], "agreement": report["agreement"],
                    "samples": report["samples"], "inputs": "representative" if real
                    else "random", "tolerance": {k: v for k, v in checks.items()}})}
        if calibration:
            meta["tfdeploy.calibration"] = json.dumps(calibration)
        if fallback:
            meta["tfdeploy.fallback"] = fallback
        if class_names:
            meta["tfdeploy.class_names"] = json.dumps([str(c) for c in class_names])
        del final.metadata_props[:]
        for key, value in meta.items():
            entry = final.metadata_props.add()
            entry.key, entry.value = key, value
        try:
            with atomic_file(path, overwrite=overwrite) as tmp:
                onnx_lib.save(final, tmp)
        except FileExistsError:
            refuse_existing(path, overwrite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if class_names:
        write_labels(path, class_names)
    if model_card is not None:
        _card.write(_card.card_path(path), model,
                    {"artifact": {"format": "onnx", "opset": opset, "quantization": kind,
                                  "fallback": fallback, "validation_max_abs_diff":
                                  report["max_abs_diff"],
                                  "validation_agreement": report["agreement"],
                                  "class_names": list(class_names) if class_names else None}},
                    model_card)
    return path
