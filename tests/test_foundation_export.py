"""SavedModel in TF Serving layout and TFLite float32: names, agreement, atomic writes."""

import os

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import ArtifactError, ExportError


def test_saved_model_layout_signature_and_agreement(trained_model, test_arrays, tmp_path):
    x, _ = test_arrays
    base = str(tmp_path / "digits")
    first = td.export.saved_model(trained_model, base, class_names=[str(i) for i in range(10)])
    second = td.export.saved_model(trained_model, base)
    assert first == os.path.join(base, "1") and second == os.path.join(base, "2")
    assert td.export.versions(base) == [1, 2]
    assert sorted(os.listdir(base)) == ["1", "2"]  # no temp-* left behind

    loaded = td.tf.saved_model.load(first)
    fn = loaded.signatures["serving_default"]
    inputs = fn.structured_input_signature[1]
    assert list(inputs) == ["images"]
    assert inputs["images"].shape.as_list() == [None, 32, 32, 1]
    assert inputs["images"].dtype == td.tf.float32
    assert set(fn.structured_outputs) >= {"probabilities", "class_index", "class_label"}

    batch = x[:16]  # raw pixels 0..255: the model rescales inside
    out = fn(images=td.tf.constant(batch))
    expected = trained_model.predict(batch, verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["class_index"].numpy(), expected.argmax(-1))
    labels = [v.decode() for v in out["class_label"].numpy()]
    assert labels == [str(i) for i in expected.argmax(-1)]


def test_existing_version_is_not_overwritten(trained_model, tmp_path):
    base = str(tmp_path / "m")
    td.export.saved_model(trained_model, base, version=7)
    with pytest.raises(ExportError, match="already exists.*overwrite=True"):
        td.export.saved_model(trained_model, base, version=7)
    assert td.export.saved_model(trained_model, base, version=7, overwrite=True).endswith("7")


def test_crash_mid_export_leaves_no_version(trained_model, tmp_path, monkeypatch):
    base = tmp_path / "crashy"
    real_save = td.tf.saved_model.save

    def crash(obj, export_dir, **kwargs):
        real_save(obj, export_dir, **kwargs)  # a complete write ...
        raise KeyboardInterrupt("killed")     # ... then the process is interrupted

    monkeypatch.setattr(td.tf.saved_model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        td.export.saved_model(trained_model, str(base))
    assert os.listdir(base) == []  # neither a version nor a temp directory


def test_tflite_float32_matches_keras(trained_model, test_arrays, tmp_path):
    x, y = test_arrays
    path = td.export.tflite(trained_model, str(tmp_path / "m.tflite"))
    runner = td.runtime.load(path)
    np.testing.assert_allclose(runner.predict(x[:32]), trained_model.predict(x[:32], verbose=0),
                               atol=1e-4)
    summary = td.verify.weight_summary(path)
    assert set(summary["dtypes"]) == {"float32"}
    assert summary["params"] >= 0.99 * trained_model.count_params()


def test_tflite_crash_keeps_previous_file(trained_model, tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous")

    def broken_open(*args, **kwargs):
        raise OSError("disk full")

    import builtins

    real_open = builtins.open

    def flaky(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).startswith(str(tmp_path / ".m.tflite.tmp")):
            f = real_open(file, mode, *args, **kwargs)
            f.write(b"half")
            f.close()
            raise OSError("disk full")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", flaky)
    with pytest.raises(OSError, match="disk full"):
        td.export.tflite(trained_model, str(path), overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_export_errors(trained_model, tmp_path):
    with pytest.raises(ExportError, match="Unrecognized quantization='int4'"):
        td.export.tflite(trained_model, str(tmp_path / "a.tflite"), quantization="int4")
    with pytest.raises(ExportError, match="needs representative_data"):
        td.export.tflite(trained_model, str(tmp_path / "a.tflite"), quantization="int8")
    with pytest.raises(ExportError, match="Unrecognized format='pt'.*'saved_model', 'tflite'"):
        td.export.export(trained_model, str(tmp_path / "x"), format="pt")
    with pytest.raises(ExportError, match="class_names has 3 entries"):
        td.export.saved_model(trained_model, str(tmp_path / "y"), class_names=["a", "b", "c"])


def test_runtime_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        td.runtime.load(str(tmp_path / "missing.tflite"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="not a valid TFLite model"):
        td.runtime.load(str(bad))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ArtifactError, match="neither a SavedModel directory"):
        td.runtime.load(str(tmp_path / "empty_dir"))
