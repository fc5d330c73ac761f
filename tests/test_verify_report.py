"""Verify: classification report, typed failures on corrupted artifacts, the CLI's exit code."""

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.cli import main
from tfdeploy.errors import DataError, VerificationError


def test_classification_report_matches_scikit_learn():
    from sklearn.metrics import classification_report as sk_report
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 3, 200))  # class 3 rarer
    y_pred[y_pred == 2] = 1  # class 2 is never predicted: precision 0 by convention
    ours = td.verify.classification_report(y_true, y_pred, class_names=["a", "b", "c", "d"])
    theirs = sk_report(y_true, y_pred, target_names=["a", "b", "c", "d"], output_dict=True,
                       zero_division=0)
    for name in "abcd":
        for key, sk_key in (("precision", "precision"), ("recall", "recall"),
                            ("f1", "f1-score"), ("support", "support")):
            assert ours["classes"][name][key] == pytest.approx(theirs[name][sk_key])
    for avg in ("macro avg", "weighted avg"):
        for key, sk_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours[avg][key] == pytest.approx(theirs[avg][sk_key])
    micro = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    assert [ours["micro avg"][k] for k in ("precision", "recall", "f1")] == pytest.approx(
        list(micro[:3]))
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"])
    text = td.verify.format_classification_report(ours)
    assert "weighted avg" in text and text.splitlines()[0].split() == [
        "precision", "recall", "f1-score", "support"]
    with pytest.raises(DataError, match="equal length, got 3 and 2"):
        td.verify.classification_report([0, 1, 2], [0, 1])


def _corrupt_tflite(src, dst):
    """Overwrite the largest float32 kernel of a .tflite file with noise (file stays loadable)."""
    weights = td.verify.weight_tensors(src)
    biggest = max((w for w in weights if w["dtype"] == "float32"), key=lambda w: w["values"].size)
    data = bytearray(open(src, "rb").read())
    raw = biggest["values"].tobytes()
    start = bytes(data).find(raw)
    assert start >= 0
    noise = np.random.default_rng(0).normal(0, 1, biggest["values"].size).astype(np.float32)
    data[start:start + len(raw)] = noise.tobytes()
    with open(dst, "wb") as f:
        f.write(bytes(data))
    return dst


@pytest.fixture(scope="module")
def tflite_pair(trained_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    good = td.export.tflite(trained_model, str(root / "good.tflite"))
    bad = _corrupt_tflite(good, str(root / "bad.tflite"))
    return good, bad


def test_verify_passes_good_and_fails_corrupted_artifact(tflite_pair, trained_model,
                                                         test_arrays):
    good, bad = tflite_pair
    x, y = test_arrays
    ok = td.verify.verify(good, trained_model, x, y)
    assert ok["passed"] and ok["agreement"] == 1.0 and ok["max_abs_diff"] < 1e-4
    assert ok["classification_report"]["accuracy"] == pytest.approx(ok["accuracy"])
    with pytest.raises(VerificationError,
                       match=r"check\(s\) failed:[\s\S]*bad\.tflite: output "
                             r"'StatefulPartitionedCall:0' max_abs_diff") as info:
        td.verify.verify(bad, trained_model, x, y)
    checks = {f["check"] for f in info.value.failures}
    assert checks == {"max_abs_diff", "agreement", "accuracy_drop"}
    assert all(f["artifact"].endswith("bad.tflite") for f in info.value.failures)


def test_verify_all_lists_every_failing_output(tflite_pair, trained_model, test_arrays,
                                               tmp_path):
    good, bad = tflite_pair
    x, y = test_arrays
    bad2 = tmp_path / "bad2.tflite"
    bad2.write_bytes(open(bad, "rb").read())
    with pytest.raises(VerificationError) as info:
        td.verify.verify_all([good, bad, str(bad2)], trained_model, x[:100], y[:100])
    failing = {f["artifact"] for f in info.value.failures}
    assert failing == {bad, str(bad2)}
    assert str(info.value).count("\n  - ") == len(info.value.failures) >= 4
    with pytest.raises(DataError, match="Unknown tolerance keys \\['rtol'\\]"):
        td.verify.verify(good, trained_model, x[:10], tolerance={"rtol": 1})


def test_verify_cli_exit_codes(tflite_pair, trained_model, digits_dir, tmp_path, capsys):
    good, bad = tflite_pair
    model_path = str(tmp_path / "model.keras")
    trained_model.save(model_path)
    report = tmp_path / "verify.json"
    assert main(["verify", good, "--model", model_path, "--data", digits_dir,
                 "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "good.tflite" in out and "weighted avg" in out and "FAIL" not in out
    assert main(["verify", good, bad, "--model", model_path, "--data", digits_dir,
                 "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    assert "check(s) failed" in captured.err and "bad.tflite: output" in captured.err
    assert main(["verify", str(tmp_path / "nope.tflite"), "--model", model_path,
                 "--data", digits_dir]) == 1
    assert "does not exist" in capsys.readouterr().err
