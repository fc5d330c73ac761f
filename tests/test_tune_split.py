"""`tfdeploy tune` chooses on a validation split held out of train/ (or val/), calibrates on
training data, and reads test/ once, for the chosen artifact."""

import contextlib
import glob
import io
import json
import os
import shutil

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import DataError, TuneError

SPACE = {"slim_ratio": 0.0, "sparsity_kind": "unstructured", "sparsity": [0.3, 0.5],
         "schedule": "constant", "clusters": 0, "qat": False, "quantization": "int8",
         "learning_rate": 5e-4, "epochs": 1}


def _copy_tree(digits_dir, root, per_class, test_label_shift=0):
    """A copy of the digits tree with ``per_class`` images per class and split; test/ class
    folders renamed ``c -> (c + test_label_shift) % 10`` (wrong labels: a model that scores
    well on train/ scores near 0 there, so which split a number came from is unmistakable)."""
    for split in ("train", "test"):
        for class_dir in sorted(glob.glob(os.path.join(digits_dir, split, "*"))):
            name = os.path.basename(class_dir)
            if split == "test":
                name = str((int(name) + test_label_shift) % 10)
            target = os.path.join(root, split, name)
            os.makedirs(target)
            for path in sorted(os.listdir(class_dir))[:per_class]:
                shutil.copy(os.path.join(class_dir, path), target)
    return root


def test_validation_subset_is_stratified_seeded_and_disjoint(digits_dir):
    train_dir = os.path.join(digits_dir, "train")
    _, labels, _ = td.data.scan_directory(train_dir)
    tr, val = td.data.stratified_split(labels, 0.2, seed=0)
    assert not set(tr) & set(val) and sorted(tr + val) == list(range(len(labels)))
    for c in np.unique(labels):  # each class gives its share
        n = int((labels == c).sum())
        assert int((labels[val] == c).sum()) == round(0.2 * n), c
    assert td.data.stratified_split(labels, 0.2, seed=0) == (tr, val)  # seeded
    assert td.data.stratified_split(labels, 0.2, seed=1)[1] != val
    kw = dict(validation_split=0.2, seed=0)
    t_ds = td.data.image_dataset(train_dir, subset="training", **kw)
    v_ds = td.data.image_dataset(train_dir, subset="validation", **kw)
    assert (t_ds.num_examples, v_ds.num_examples) == (len(tr), len(val))
    x_val, y_val = td.data.to_numpy(v_ds)
    np.testing.assert_array_equal(np.sort(y_val), np.sort(labels[val]))
    x_train, _ = td.data.to_numpy(t_ds)
    train_images = {im.tobytes() for im in x_train}
    assert not any(im.tobytes() in train_images for im in x_val)  # no image on both sides

    with pytest.raises(DataError, match=r"validation_split must be a fraction in \(0, 1\)"):
        td.data.image_dataset(train_dir, validation_split=1.5, subset="validation")
    with pytest.raises(DataError, match="go together"):
        td.data.image_dataset(train_dir, subset="validation")
    with pytest.raises(DataError, match="Unrecognized subset='test'"):
        td.data.image_dataset(train_dir, validation_split=0.2, subset="test")
    with pytest.raises(DataError, match="Class 1 has 1 sample"):
        td.data.stratified_split([0, 0, 1], 0.5)


def test_val_folder_is_used_when_present(tmp_path, digits_dir):
    from tfdeploy.commands import tune as command

    root = _copy_tree(digits_dir, str(tmp_path / "data"), 6)
    train, (x_val, _), (x_test, _), how = command.splits(root, (32, 32), "grayscale", None, 0)
    assert train.num_examples + len(x_val) == 60 and len(x_val) == 10  # 0.2 of each class
    assert len(x_test) == 60 and "0.2 of" in how["validation"]
    shutil.copytree(os.path.join(root, "test"), os.path.join(root, "val"))
    train, (x_val, _), _, how = command.splits(root, (32, 32), "grayscale", None, 0)
    assert train.num_examples == 60 and len(x_val) == 60
    assert how["validation"] == os.path.join(root, "val")
    with pytest.raises(TuneError, match="has a val/ folder and --validation-split 0.3"):
        command.splits(root, (32, 32), "grayscale", 0.3, 0)


def test_cli_chooses_on_validation_and_reports_test_once(tmp_path, trained_model, digits_dir):
    from tfdeploy.cli import main

    # test/ labels shifted by one: the trained model is ~95 % right on train/ and near 0 on it.
    root = _copy_tree(digits_dir, str(tmp_path / "data"), 20, test_label_shift=1)
    model_path = str(tmp_path / "model.h5")
    trained_model.save(model_path)
    out = tmp_path / "result.json"
    argv = ["tune", model_path, "--data", root, "--budget", "30", "--max-trials", "2",
            "--directory", str(tmp_path / "tune"), "--space", json.dumps(SPACE),
            "--initial-points", "[]", "--latency-samples", "5", "--validation-split", "0.25",
            "--output", str(tmp_path / "best"), "--json", str(out), "--logs",
            str(tmp_path / "logs")]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0, buf.getvalue()
    report = json.loads(out.read_text())
    project = tmp_path / "tune" / "compression"

    def accuracy(path, xy):
        return td.verify.accuracy(td.runtime.load(str(path)), *xy)

    split = dict(validation_split=0.25, seed=0)
    val = td.data.to_numpy(td.data.image_dataset(os.path.join(root, "train"),
                                                 subset="validation", **split))
    test = td.data.to_numpy(td.data.image_dataset(os.path.join(root, "test")))
    assert len(val[1]) == 50 and report["splits"]["validation_examples"] == 50

    # Every trial, and the baseline, was measured on the validation split...
    assert report["baseline"]["validation_accuracy"] == pytest.approx(
        accuracy(project / "baseline_float32.tflite", val), abs=1e-6)
    assert report["baseline"]["validation_accuracy"] > 0.8
    trials = json.loads((project / "trials.json").read_text())
    assert len(trials) == 2
    for t in trials:
        assert t["validation_accuracy"] == pytest.approx(
            accuracy(project / f"trial_{t['trial_id']}" / "model.tflite", val), abs=1e-6)
        assert t["validation_accuracy"] > 0.6 and t["feasible"]
    # ...and the test split read once, for the chosen artifact (and the baseline) only.
    best = report["best"]
    assert [t["trial_id"] for t in trials if "test_accuracy" in t] == [best["trial_id"]]
    assert best["test_accuracy"] == pytest.approx(
        accuracy(project / f"trial_{best['trial_id']}" / "model.tflite", test), abs=1e-6)
    assert best["test_accuracy"] < 0.3 and report["baseline"]["test_accuracy"] < 0.3
    assert "test accuracy" in buf.getvalue()
    # The shipped artifact is the one measured: int8, calibrated on train/ during its trial.
    with open(report["exported"]["tflite"], "rb") as a, \
            open(project / f"trial_{best['trial_id']}" / "model.tflite", "rb") as b:
        assert a.read() == b.read()
