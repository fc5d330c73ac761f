"""ONNX export: float, onnxruntime-quantized and QAT graphs verified in onnxruntime."""

import json
import os

import pytest

import tfdeploy as td
from tfdeploy.errors import ArtifactError, ExportError, VerificationError
from tfdeploy.export import ExportFallbackWarning, _onnx


@pytest.fixture(scope="module")
def qat_model(trained_model, train_ds):
    model = td.compress.quantize(trained_model, calibration_data=train_ds)  # ranges set first
    model.compile(td.keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    model.fit(train_ds.take(10), epochs=1, verbose=0)  # learn the activation ranges
    return model


def _ops(path):
    import onnx

    return {node.op_type for node in onnx.load(path).graph.node}


def test_float_onnx_matches_keras_in_onnxruntime(trained_model, train_ds, test_arrays, tmp_path):
    x, y = test_arrays
    path = td.export.onnx(trained_model, str(tmp_path / "m.onnx"), opset=13,
                          class_names=train_ds.class_names)
    runner = td.runtime.load(path, num_threads=1)
    assert runner.format == "onnx"
    assert runner.inputs == [("images", (-1, 32, 32, 1), "float32")]
    assert runner.metadata["tfdeploy.quantization"] == "float"
    assert json.loads(runner.metadata["tfdeploy.class_names"]) == train_ds.class_names
    result = td.verify.verify(runner, trained_model, x, y)
    assert result["passed"] and result["precision"] == "float32"
    assert result["max_abs_diff"] < 1e-4 and result["agreement"] == 1.0
    assert os.path.exists(tmp_path / "m.labels.txt")
    assert not _ops(path) & {"QuantizeLinear", "MatMulInteger"}


def test_dynamic_quantization_with_onnxruntime(trained_model, test_arrays, tmp_path):
    x, y = test_arrays
    path = td.export.onnx(trained_model, str(tmp_path / "dyn.onnx"), quantize="dynamic")
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= _ops(path)
    runner = td.runtime.load(path)
    assert runner.metadata["tfdeploy.quantization"] == "dynamic"
    result = td.verify.verify(runner, trained_model, x, y)
    assert result["precision"] == "int8" and result["passed"], result["failures"]


def test_qat_model_keeps_quantize_dequantize_nodes(qat_model, train_ds, test_arrays, tmp_path):
    x, y = test_arrays
    path = td.export.onnx(qat_model, str(tmp_path / "qat.onnx"), opset=13,
                          representative_data=train_ds)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(path)
    runner = td.runtime.load(path)
    assert runner.metadata["tfdeploy.quantization"] == "qdq"
    assert "tfdeploy.fallback" not in runner.metadata
    int8 = td.verify.TOLERANCES["int8"]
    checked = json.loads(runner.metadata["tfdeploy.validation"])  # compared at export time
    assert checked["inputs"] == "representative"
    # validated on 256 samples when there are that many: one disagreement is 0.4 %, so a
    # 2-point int8 drop shows (of 64, one is 1.6 %)
    assert checked["samples"] == min(256, len(td.data.to_numpy(train_ds)[0]))
    assert checked["agreement"] >= int8["min_agreement"] and checked["max_abs_diff"] < 1.0
    result = td.verify.verify(runner, qat_model, x, y)
    assert result["passed"], result["failures"]
    assert result["agreement"] >= int8["min_agreement"]


def test_quantized_onnx_that_disagrees_with_its_model_is_refused(trained_model, train_ds,
                                                                 tmp_path, monkeypatch):
    real = _onnx._quantize

    def broken(float_path, out_path, *args):   # a quantizer bug: the class biases go wrong
        import onnx
        from onnx import numpy_helper

        real(float_path, out_path, *args)
        proto = onnx.load(out_path)
        for init in proto.graph.initializer:
            value = numpy_helper.to_array(init)
            if value.dtype == "float32" and value.shape == (10,):
                wrong = value * 0
                wrong[0] = 100.0   # every sample now lands in class 0
                init.CopyFrom(numpy_helper.from_array(wrong, init.name))
        onnx.save(proto, out_path)

    monkeypatch.setattr(_onnx, "_quantize", broken)
    path = tmp_path / "bad.onnx"
    with pytest.raises(VerificationError, match="top-class agreement"):
        td.export.onnx(trained_model, str(path), quantize="dynamic",
                       representative_data=train_ds)
    assert not path.exists()


def test_qat_fallback_is_said_plainly_and_quantized_when_asked(
        qat_model, train_ds, test_arrays, tmp_path):
    x, y = test_arrays
    twin = _onnx._float_twin(qat_model)  # the QAT model's weights, without fake-quant
    assert not any("Quantize" in type(layer).__name__ for layer in twin.layers)
    with pytest.warns(ExportFallbackWarning, match="fell back to a float graph.*opset 10"):
        path = td.export.onnx(qat_model, str(tmp_path / "fb.onnx"), opset=10)
    runner = td.runtime.load(path)
    assert runner.metadata["tfdeploy.quantization"] == "float"
    assert "opset 10" in runner.metadata["tfdeploy.fallback"]
    assert not _ops(path) & {"QuantizeLinear", "DequantizeLinear"}
    result = td.verify.verify(runner, twin, x, y)  # float parity with the float graph
    assert result["precision"] == "float32" and result["max_abs_diff"] < 1e-4
    with pytest.warns(ExportFallbackWarning, match="quantized by onnxruntime's quantizer"):
        path = td.export.onnx(qat_model, str(tmp_path / "fbq.onnx"), opset=10,
                              quantize="static", representative_data=train_ds,
                              num_calibration=64)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(path)
    calibration = json.loads(td.runtime.load(path).metadata["tfdeploy.calibration"])
    assert calibration == {"method": "MinMax", "samples": 64, "activations": "uint8",
                           "weights": "int8", "per_channel": False, "format": "QDQ",
                           "preprocessed": True}  # opset 10
    result = td.verify.verify(path, twin, x, y)
    assert result["precision"] == "int8" and result["passed"], result["failures"]


def test_uncalibrated_qat_ranges_are_named_when_validation_fails(
        trained_model, qat_model, train_ds, tmp_path, monkeypatch):
    from tfdeploy.compress.calibrate import uncalibrated_layers

    assert uncalibrated_layers(qat_model) == []  # calibrated, then fine-tuned
    from tfdeploy.compress.calibrate import _calibrate_input_quantizers, unset_input_ranges

    raw = td.compress.quantize(trained_model)  # tfmot's [-6, 6] start, never calibrated
    # its input fake-quant starts at [0, 0] (set by the first training batch): refused,
    # nothing written, for ONNX and TFLite alike
    assert unset_input_ranges(raw)
    for export in (lambda: td.export.onnx(raw, str(tmp_path / "unset.onnx")),
                   lambda: td.export.tflite(raw, str(tmp_path / "unset.tflite"), "int8",
                                            representative_data=train_ds)):
        with pytest.raises(ExportError, match=r"never set.*calibration_data=train_images"):
            export()
    assert not list(tmp_path.iterdir())
    _calibrate_input_quantizers(raw, train_ds, 2)  # the input only: activations stay [-6, 6]
    assert not unset_input_ranges(raw)
    stuck = uncalibrated_layers(raw)
    assert stuck and "conv1" in stuck
    # an impossible agreement makes the real comparison fail; the error says why and what to do
    monkeypatch.setitem(td.verify.TOLERANCES, "int8", dict(td.verify.TOLERANCES["int8"],
                                                           min_agreement=1.01))
    with pytest.raises(VerificationError, match=r"still tfmot's initial \[-6, 6\].*"
                                                r"calibration_data="):
        td.export.onnx(raw, str(tmp_path / "raw.onnx"), representative_data=train_ds)
    with pytest.raises(VerificationError) as info:
        td.export.onnx(qat_model, str(tmp_path / "cal.onnx"), representative_data=train_ds)
    assert "hint" not in str(info.value)
    assert not list(tmp_path.glob("*.onnx"))


def test_onnx_option_errors(trained_model, tmp_path):
    with pytest.raises(ExportError, match="opset must be an integer >= 9, received 7"):
        td.export.onnx(trained_model, str(tmp_path / "a.onnx"), opset=7)
    with pytest.raises(ExportError, match="Unrecognized quantize='int4'"):
        td.export.onnx(trained_model, str(tmp_path / "a.onnx"), quantize="int4")
    with pytest.raises(ExportError, match="quantize='dynamic' needs opset >= 11"):
        td.export.onnx(trained_model, str(tmp_path / "a.onnx"), opset=10, quantize="dynamic")
    with pytest.raises(ExportError, match="quantize='static' needs representative_data"):
        td.export.onnx(trained_model, str(tmp_path / "a.onnx"), quantize="static")
    assert not os.path.exists(tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="Unrecognized format='pt'.*'onnx'"):
        td.export.export(trained_model, str(tmp_path / "x"), format="pt")


def test_corrupt_and_missing_onnx_files(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        td.runtime.load(str(tmp_path / "missing.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 20)
    with pytest.raises(ArtifactError, match="is not a valid ONNX model.*Re-export"):
        td.runtime.load(str(bad))
