"""Public names that moved keep their old import path for one release, with a DeprecationWarning."""

import importlib
import subprocess
import sys

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy import _deprecated

#: (old module, name, new module)
MOVED = [
    ("tfdeploy.bridge", "load_model", "tfdeploy.model_io"),
    ("tfdeploy.bridge", "check_model", "tfdeploy.model_io"),
    ("tfdeploy.compress", "load_model", "tfdeploy.model_io"),
    ("tfdeploy.compress", "save_model", "tfdeploy.model_io"),
    ("tfdeploy.compress.history", "load_model", "tfdeploy.model_io"),
    ("tfdeploy.compress.history", "save_model", "tfdeploy.model_io"),
    ("tfdeploy.compress.history", "read_history", "tfdeploy.model_io"),
    ("tfdeploy.compress.history", "write_history", "tfdeploy.model_io"),
    ("tfdeploy.compress.history", "HISTORY_FILE", "tfdeploy.model_io"),
]


@pytest.mark.parametrize("old, name, new", MOVED, ids=[f"{o}.{n}" for o, n, _ in MOVED])
def test_old_path_gives_the_same_object_and_warns(old, name, new):
    expected = getattr(importlib.import_module(new), name)
    module = importlib.import_module(old)
    message = rf"{old}\.{name} moved to {new}\.{name}.*removed in tfdeploy {_deprecated.REMOVED_IN}"
    with pytest.warns(DeprecationWarning, match=message) as caught:
        got = getattr(module, name)
    assert got is expected
    assert caught[0].filename == __file__  # the warning points at the caller's line
    namespace = {}
    with pytest.warns(DeprecationWarning, match=message):
        exec(f"from {old} import {name} as got", namespace)
    assert namespace["got"] is expected


def test_every_moved_name_is_tested_and_unknown_names_still_fail():
    from tfdeploy import bridge, compress

    history = importlib.import_module("tfdeploy.compress.history")  # the module, not the function

    tables = {"tfdeploy.bridge": bridge.__getattr__.moved,
              "tfdeploy.compress": compress._moved.moved,
              "tfdeploy.compress.history": history.__getattr__.moved}
    declared = sorted((old, name, new) for old, table in tables.items()
                      for name, new in table.items())
    assert declared == sorted(MOVED)
    for module in (bridge, compress, history):
        with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
            module.no_such_name
    # star-imports name only what lives there: no warning, no moved name
    for old in tables:
        assert not set(getattr(importlib.import_module(old), "__all__", ())) & {
            n for _, n, _ in MOVED}


def test_old_compress_paths_still_save_and_load_a_model_with_its_history(tmp_path):
    model = td.compress.prune(td.models.build_cnn((8, 8, 1), num_classes=3, width=0.1), 0.5,
                              "constant", epochs=1, steps_per_epoch=4)
    model = td.compress.strip(model)
    path = str(tmp_path / "m.keras")
    with pytest.warns(DeprecationWarning):
        td.compress.save_model(model, path)
    with pytest.warns(DeprecationWarning):
        loaded = td.compress.load_model(path)
    assert [e["technique"] for e in td.compress.history(loaded)] == ["pruned"]
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_model_io_imports_no_package_above_the_floor():
    code = ("import sys, tfdeploy.model_io; "
            "print(sorted(m for m in sys.modules if m.startswith('tfdeploy.') "
            "and not m.split('.')[1].startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == "['tfdeploy.errors', 'tfdeploy.model_io']"
