"""tfdeploy inspect: agrees with saved_model_cli for SavedModels; lists .tflite/.onnx tensors."""

import json
import os
import shutil
import subprocess

import pytest

import tfdeploy as td
from tfdeploy.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.1)
    return {
        "model": model,
        "base": str(root / "tiny"),
        "saved_model": td.export.saved_model(model, str(root / "tiny"),
                                             class_names=["a", "b", "c"]),
        "tflite": td.export.tflite(model, str(root / "tiny.tflite"), quantization="int8",
                                   io_type="int8", num_calibration=4,
                                   representative_data=td.tf.random.uniform((4, 8, 8, 1), 0,
                                                                            255).numpy()),
        "onnx": td.export.onnx(model, str(root / "tiny.onnx"), opset=13, class_names="abc"),
    }


def test_saved_model_listing_equals_saved_model_cli(tiny):
    cli = shutil.which("saved_model_cli")
    assert cli, "saved_model_cli ships with tensorflow and must be on PATH"
    proc = subprocess.run([cli, "show", "--dir", tiny["saved_model"], "--all"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = proc.stdout.split("The MetaGraph with tag set")[0].strip()
    ours = td.runtime.describe(tiny["base"])  # a base path resolves to its latest version
    assert ours.split("\n\nassets.extra:")[0].strip() == theirs
    assert "signature_def['serving_bytes']" in theirs
    assert "Method name is: tensorflow/serving/classify" in theirs
    assert ours.rstrip().endswith("assets.extra: model_card.json")


def test_tflite_and_onnx_listings(tiny, capsys):
    info = td.runtime.inspect(tiny["tflite"])
    (key, sig), = info["signatures"].items()
    assert key == "serving_default"
    assert sig["inputs"]["images"]["dtype"] == "int8"
    assert sig["inputs"]["images"]["shape"] == [-1, 8, 8, 1]
    assert sig["inputs"]["images"]["quantization"]["scale"] > 0
    assert list(sig["outputs"]) == ["probabilities"]
    assert main(["inspect", tiny["onnx"], "--json"]) == 0
    onnx_info = json.loads(capsys.readouterr().out)
    assert onnx_info["opsets"]["ai.onnx"] == 13
    assert onnx_info["inputs"] == [{"name": "images", "shape": [-1, 8, 8, 1],
                                    "dtype": "float32"}]
    assert onnx_info["outputs"][0]["shape"] == [-1, 3]
    assert onnx_info["metadata"]["tfdeploy.quantization"] == "float"
    assert main(["inspect", tiny["tflite"]]) == 0
    text = capsys.readouterr().out
    assert "images (serving_default_images:0): int8 (-1, 8, 8, 1)  scale=" in text


def test_inspect_errors(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.onnx")]) == 1
    assert "does not exist" in capsys.readouterr().err
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"\x00" * 16)
    assert main(["inspect", str(odd)]) == 1
    assert "Cannot tell the format" in capsys.readouterr().err
    os.makedirs(tmp_path / "empty")
    assert main(["inspect", str(tmp_path / "empty")]) == 1
    assert "neither a SavedModel directory" in capsys.readouterr().err
