"""Runtime: one interface for the three formats; inference only; clear input errors."""

import subprocess
import sys

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import ArtifactError, DataError, EmptyBatchError


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.1)
    return model, {
        "saved_model": td.export.saved_model(model, str(root / "sm")),
        "tflite": td.export.tflite(model, str(root / "m.tflite")),
        "onnx": td.export.onnx(model, str(root / "m.onnx")),
    }


def test_one_interface_for_every_format(small):
    model, paths = small
    x = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 1)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    for fmt, path in paths.items():
        runner = td.runtime.load(path)
        assert td.runtime.detect_format(path) == runner.format == fmt
        name, shape, dtype = runner.inputs[0]
        assert shape == (-1, 8, 8, 1) and dtype == "float32"
        assert any(s[-1] == 3 for _, s, _ in runner.outputs)
        np.testing.assert_allclose(runner.predict(x), expected, atol=1e-5)
        assert isinstance(runner.run(x), dict)
        with pytest.raises(ArtifactError, match="(does not match|expects|shape)"):
            runner.run(np.zeros((2, 9, 9, 1), np.float32))


def test_empty_batch_gets_a_typed_error_in_every_runtime(small):
    _, paths = small
    for fmt, path in paths.items():
        runner = td.runtime.load(path)
        for empty in (np.zeros((0, 8, 8, 1), np.float32), {runner.inputs[0][0]: np.zeros(
                (0, 8, 8, 1), np.float32)}):
            if isinstance(empty, dict) and fmt == "tflite":
                continue  # the TFLite runner takes one array
            with pytest.raises(EmptyBatchError, match="holds no samples"):
                runner.run(empty)
        with pytest.raises(DataError, match="at least one sample"):
            runner.predict(np.zeros((0, 8, 8, 1), np.float32))


def test_runtime_imports_no_training_code(small):
    _, paths = small
    code = ("import sys, numpy as np\n"
            "import tfdeploy.runtime as rt\n"
            f"for p in {list(paths.values())!r}:\n"
            "    rt.load(p).predict(np.zeros((1, 8, 8, 1), np.float32))\n"
            "bad = [m for m in sys.modules if m.startswith(('tensorflow_model_optimization', "
            "'keras_tuner', 'tf2onnx'))]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unknown_and_missing_files(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        td.runtime.load(str(tmp_path / "nothing"))
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"\x00" * 32)
    with pytest.raises(ArtifactError, match="Cannot tell the format.*\\.onnx"):
        td.runtime.load(str(odd))
