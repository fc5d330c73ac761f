"""Shared fixtures: the bundled digits directory and a small trained CNN (session-scoped)."""

import os
import random

import numpy as np
import pytest

import tfdeploy as td


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    td.tf.random.set_seed(0)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """The bundled digits written as DIR/train/<class>/*.png and DIR/test/<class>/*.png."""
    return td.data.write_digits(str(tmp_path_factory.mktemp("digits")))


@pytest.fixture(scope="session")
def train_ds(digits_dir):
    return td.data.image_dataset(os.path.join(digits_dir, "train"), shuffle=True, seed=0)


@pytest.fixture(scope="session")
def test_ds(digits_dir):
    return td.data.image_dataset(os.path.join(digits_dir, "test"))


@pytest.fixture(scope="session")
def test_arrays(test_ds):
    return td.data.to_numpy(test_ds)


@pytest.fixture(scope="session")
def quickstart_run(digits_dir, tmp_path_factory):
    """`tfdeploy quickstart` run once per session (short epochs) with every output in a tmp dir:
    ``{"dir", "stdout", "json", "logs", "report"}``."""
    import contextlib
    import io
    import json

    from tfdeploy.cli import main

    out = tmp_path_factory.mktemp("quickstart")
    result = out / "result.json"
    argv = ["quickstart", "--data", digits_dir, "--output", str(out / "saved_models"),
            "--logs", str(out / "logs"), "--report", str(out / "report"), "--epochs", "6",
            "--prune-epochs", "3", "--qat-epochs", "2", "--json", str(result), "--quiet"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(argv)
    assert status == 0, buf.getvalue()
    return {"dir": out, "stdout": buf.getvalue(), "json": json.loads(result.read_text()),
            "logs": out / "logs", "report": out / "report"}


@pytest.fixture(scope="session")
def trained_model(train_ds):
    """A width-0.25 CNN trained 5 epochs on digits (about 95% test accuracy).

    Do not train it further in a test (it is shared); copy it with
    `tfdeploy.compress.prune.copy_model` first.
    """
    td.tf.random.set_seed(0)
    model = td.models.build_cnn((32, 32, 1), num_classes=10, width=0.25)
    model.compile(td.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  ["accuracy"])
    model.fit(train_ds, epochs=5, verbose=0)
    return model
