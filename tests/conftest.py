"""Shared fixtures: the bundled digits directory, the quickstart run and a small trained CNN
(session-scoped), and the xdist scheduling of this suite.

The two expensive ones are built once per test run, not once per xdist worker: `build_once`
(pytest-xdist's FileLock pattern) lets the first worker that asks build them into a folder the
workers share; the others wait on the lock and read the result.
"""

import json
import os
import random
import shutil

import numpy as np
import pytest

import tfdeploy as td

HERE = os.path.dirname(os.path.abspath(__file__))


def build_once(tmp_path_factory, name, build):
    """Run ``build(path)`` once per test run and return ``path`` (a `pathlib.Path`).

    Under pytest-xdist, ``path`` lies in the folder the workers share (the parent of each
    worker's base temp); the first worker to take the lock builds, the others wait and get the
    same folder. Without xdist it is a fresh temp folder. A build that raised leaves nothing
    behind, so the next worker tries again (and fails the same way, with its own traceback).
    Readers must not write into ``path``: copy it first (``shutil.copytree``).
    """
    from filelock import FileLock

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        path = tmp_path_factory.mktemp(name)
        build(path)
        return path
    root = tmp_path_factory.getbasetemp().parent / "shared"
    root.mkdir(exist_ok=True)
    path, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            try:
                build(path)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
            done.touch()
    return path


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
    """`tfdeploy quickstart` run once per test run (short epochs; one worker runs it, see
    `build_once`) with every output in a tmp dir: ``{"dir", "stdout", "json", "logs",
    "report"}``. Read-only: a test that writes copies ``dir`` first."""
    import contextlib
    import io

    from tfdeploy.cli import main

    def build(out):
        argv = ["quickstart", "--data", digits_dir, "--output", str(out / "saved_models"),
                "--logs", str(out / "logs"), "--report", str(out / "report"), "--epochs", "4",
                "--prune-epochs", "2", "--qat-epochs", "1", "--json", str(out / "result.json"),
                "--quiet"]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            status = main(argv)
        assert status == 0, buf.getvalue()
        (out / "stdout.txt").write_text(buf.getvalue())

    out = build_once(tmp_path_factory, "quickstart", build)
    return {"dir": out, "stdout": (out / "stdout.txt").read_text(),
            "json": json.loads((out / "result.json").read_text()),
            "logs": out / "logs", "report": out / "report"}


@pytest.fixture(scope="session")
def trained_model(train_ds, tmp_path_factory):
    """A width-0.25 CNN trained 5 epochs on digits (about 95% test accuracy).

    Trained once per test run (`build_once`): the worker that trains it keeps it, the others
    load the file it saved. Do not train it further in a test (it is shared); copy it with
    `tfdeploy.compress.prune.copy_model` first.
    """
    trained = []

    def build(out):
        td.tf.random.set_seed(0)
        model = td.models.build_cnn((32, 32, 1), num_classes=10, width=0.25)
        model.compile(td.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                      ["accuracy"])
        model.fit(train_ds, epochs=5, verbose=0)
        td.model_io.save_model(model, str(out / "model.keras"))
        trained.append(model)

    out = build_once(tmp_path_factory, "trained_model", build)
    return trained[0] if trained else td.model_io.load_model(str(out / "model.keras"))


# -- scheduling across the xdist workers ----------------------------------------------------
# `--dist loadfile` (setup.cfg) keeps each file on one worker, so module fixtures are built once.
# This scheduler keeps that, and adds two things:
# - files that read one session fixture run on one worker (SAME_WORKER: the quickstart's);
# - the files start longest first (measured seconds in tests/durations.json; a file missing
#   there counts one second a test), so no long file is left to run alone at the end.
SAME_WORKER = {"tests/test_viz_tensorboard.py": "tests/test_foundation_quickstart.py"}


def _file_seconds():
    try:
        with open(os.path.join(HERE, "durations.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadfile``: file scopes (SAME_WORKER files joined), longest first."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    seconds = _file_seconds()

    class LongestFileFirst(LoadFileScheduling):
        ordered = False

        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return SAME_WORKER.get(path, path)

        def _cost(self, unit):
            return sum(seconds.get(path, 1.0 * sum(1 for n in unit if n.startswith(path)))
                       for path in {n.split("::", 1)[0] for n in unit})

        def _assign_work_unit(self, node):
            if not self.ordered:  # the first assignment: the queue is complete, sort it once
                self.ordered = True
                units = sorted(self.workqueue.items(), key=lambda kv: -self._cost(kv[1]))
                self.workqueue.clear()
                self.workqueue.update(units)
            super()._assign_work_unit(node)

    return LongestFileFirst(config, log)
