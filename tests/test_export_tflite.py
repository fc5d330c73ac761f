"""TFLite export: every quantization verified in LiteRT against the Keras model; Flex ops."""

import json
import os

import pytest

import tfdeploy as td
from tfdeploy.errors import ExportError


@pytest.mark.parametrize("quantization,io_type,weights,input_dtype", [
    ("float32", "float32", {"float32"}, "float32"),
    ("float16", "float32", {"float16"}, "float32"),
    ("dynamic", "float32", {"int8", "float32"}, "float32"),
    ("int8", "float32", {"int8", "int32"}, "float32"),
    ("int8", "int8", {"int8", "int32"}, "int8"),
    ("int16x8", "int16", {"int8", "int64"}, "int16"),
])
def test_each_quantization_runs_in_litert_and_matches_keras(
        quantization, io_type, weights, input_dtype, trained_model, train_ds, test_arrays,
        tmp_path):
    x, y = test_arrays[0][:200], test_arrays[1][:200]  # int16x8 runs reference kernels: slow
    path = td.export.tflite(trained_model, str(tmp_path / f"m_{quantization}.tflite"),
                            quantization=quantization, io_type=io_type,
                            representative_data=train_ds, num_calibration=64,
                            class_names=train_ds.class_names)
    runner = td.runtime.load(path, num_threads=1)
    assert runner.format == "tflite" and runner.num_threads == 1
    assert runner.inputs[0][1:] == ((-1, 32, 32, 1), input_dtype)
    assert set(td.verify.weight_summary(path)["dtypes"]) == weights
    # verification in the artifact's own runtime, with the tolerance of its precision
    result = td.verify.verify(runner, trained_model, x, y)
    expected = {"float32": "float32", "float16": "float16"}.get(quantization, "int8")
    assert result["precision"] == expected
    assert result["passed"], result["failures"]
    assert result["agreement"] >= 0.95
    with open(os.path.splitext(path)[0] + ".labels.txt") as f:
        assert f.read().split() == train_ds.class_names


def test_io_type_must_fit_quantization(trained_model, tmp_path):
    with pytest.raises(ExportError, match="io_type='int8' is not available with "
                                          "quantization='float16'.*\\['float32'\\]"):
        td.export.tflite(trained_model, str(tmp_path / "a.tflite"), quantization="float16",
                         io_type="int8")
    with pytest.raises(ExportError, match="quantization='int16x8' needs representative_data"):
        td.export.tflite(trained_model, str(tmp_path / "a.tflite"), quantization="int16x8")
    assert not os.listdir(tmp_path)


def _flex_model():
    inputs = td.keras.Input((8,))
    det = td.keras.layers.Lambda(
        lambda z: td.tf.linalg.det(td.tf.reshape(z, (-1, 2, 2, 2))), name="det")(inputs)
    return td.keras.Model(inputs, det)


def test_flex_ops_detected_and_reported_before_writing(tmp_path):
    model = _flex_model()
    assert td.export.flex_ops(model) == ["MatrixDeterminant"]
    path = tmp_path / "flex.tflite"
    with pytest.raises(ExportError, match=r"needs TensorFlow ops .*Flex ops\): "
                                          r"\['MatrixDeterminant'\]\. Nothing was written"):
        td.export.tflite(model, str(path))
    assert not os.listdir(tmp_path)
    td.export.tflite(model, str(path), allow_flex=True)
    assert path.read_bytes()[4:8] == b"TFL3"


def test_plain_model_needs_no_flex_and_card_is_opt_in(tmp_path):
    model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.1)
    assert td.export.flex_ops(model) == []
    path = td.export.tflite(model, str(tmp_path / "m.tflite"), quantization="dynamic",
                            model_card={"metrics": {"note": "opt-in"}})
    card = json.loads((tmp_path / "m.card.json").read_text())
    assert card["artifact"]["quantization"] == "dynamic"
    assert card["artifact"]["bytes"] == os.path.getsize(path)
    assert card["metrics"] == {"note": "opt-in"}


def test_conversion_without_the_savedmodel_loads_writes_the_same_bytes(
        trained_model, train_ds, tmp_path):
    """`_tflite._saved_model_converter` skips the two full TF2 loads of the conversion
    SavedModel that ``TFLiteConverter.from_saved_model`` and its ``convert`` make (to list
    the signatures; to read the debug info): the flatbuffer is the public converter's, byte
    for byte (conversion metadata included), float and calibrated int8. It is the converter
    `tflite` uses (it falls back to ``from_saved_model`` only when TensorFlow Lite's
    internals moved: this test then says so)."""
    from tensorflow.lite.python import lite

    from tfdeploy.export import _tflite

    ops = [td.tf.lite.OpsSet.TFLITE_BUILTINS]
    images = next(iter(train_ds))[0].numpy()  # the same calibration images for both
    for quantization in ("float32", "int8"):
        files = {}
        for lean in (True, False):
            converter = _tflite._converter(trained_model, quantization, "float32", images, 32,
                                           ops, saved_dir=str(tmp_path / f"{quantization}{lean}"),
                                           lean=lean)
            assert isinstance(converter, lite.TFLiteSavedModelConverterV2)
            assert (type(converter) is not lite.TFLiteSavedModelConverterV2) == lean
            files[lean] = converter.convert()
        assert files[True] == files[False], quantization
        assert len(files[True]) > 10_000
