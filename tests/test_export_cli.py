"""tfdeploy export: each format from a saved Keras model, verified after writing."""

import os

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.cli import build_parser, main
from tfdeploy.model_io import load_model


@pytest.fixture(scope="module")
def model_file(trained_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "digits.keras")
    trained_model.save(path)
    return path


def test_export_every_format_then_verify(model_file, trained_model, digits_dir, test_arrays,
                                         tmp_path, capsys):
    x, y = test_arrays
    base = str(tmp_path / "digits")
    assert main(["export", model_file, "--format", "saved_model", "-o", base,
                 "--data", digits_dir, "--num-warmup", "2"]) == 0
    version = capsys.readouterr().out.strip()
    assert version == os.path.join(base, "1")
    assert os.path.isfile(os.path.join(version, "assets.extra", "tf_serving_warmup_requests"))
    with open(os.path.join(version, "assets", "labels.txt")) as f:
        assert f.read().split() == [str(i) for i in range(10)]
    tfl = str(tmp_path / "digits_int8.tflite")
    assert main(["export", model_file, "--format", "tflite", "--quantization", "int8",
                 "--io-type", "int8", "-o", tfl, "--data", digits_dir,
                 "--num-calibration", "32"]) == 0
    onnx_path = str(tmp_path / "digits.onnx")
    assert main(["export", model_file, "--format", "onnx", "--opset", "13", "-o",
                 onnx_path]) == 0
    results = td.verify.verify_all([version, tfl, onnx_path], trained_model, x, y)
    assert [r["precision"] for r in results] == ["float32", "int8", "float32"]


def test_export_cli_errors(model_file, tmp_path, capsys):
    assert main(["export", model_file, "--format", "tflite", "--quantization", "int8",
                 "-o", str(tmp_path / "a.tflite")]) == 1
    assert "needs --data for calibration" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.keras"), "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "Keras model" in err and "does not exist" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", model_file, "--format", "pt", "-o", "x"])
    for command in ("export", "verify", "bench", "inspect"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
    assert "--quantization" in capsys.readouterr().out


def test_quantization_aware_model_file_loads(tmp_path):
    model = td.compress.quantize(td.models.build_cnn((8, 8, 1), num_classes=3, width=0.1))
    path = str(tmp_path / "qat.h5")  # tfmot QAT models reload from .h5, not .keras
    model.save(path)
    loaded = load_model(path)
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
