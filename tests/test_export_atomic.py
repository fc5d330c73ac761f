"""Exports never clobber, never leave a version missing or lost, and clean up after killed runs."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import ExportError
from tfdeploy import _atomic
from tfdeploy.runtime import SavedModelRunner

X = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype(np.float32)


def _tiny(seed):
    td.keras.utils.set_random_seed(seed)
    return td.models.build_cnn((8, 8, 1), num_classes=3, width=0.1)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """Two complete SavedModels of different weights, and their predictions."""
    root = tmp_path_factory.mktemp("two")
    out = {}
    for name, seed in (("old", 1), ("new", 2)):
        path = td.export.saved_model(_tiny(seed), str(root / name), version=1)
        out[name] = (path, SavedModelRunner(path).predict(X))
    assert not np.allclose(out["old"][1], out["new"][1])
    return out


def _holds(path, two_versions):
    """Which complete version ``path`` holds ("old"/"new"), read by loading and predicting."""
    got = SavedModelRunner(path).predict(X)
    for name, (_, want) in two_versions.items():
        if np.allclose(got, want, atol=1e-6):
            return name
    raise AssertionError(f"{path} holds neither version")


_KILLER = textwrap.dedent("""
    import importlib.util, os, shutil, signal, sys
    spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    step, source, target, exchange = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    real_exchange, real_rename, real_rmtree = m._exchange, os.rename, shutil.rmtree
    if not exchange:
        m._exchange = lambda a, b: False
    if step == "before_swap" and exchange:
        m._exchange = die
    if step == "after_swap" and exchange:
        m._exchange = lambda a, b: (real_exchange(a, b), die())
    renames = []
    def rename(a, b):
        renames.append(a)
        if step == "before_swap" and len(renames) == 2:
            die()                            # old moved aside, new not yet in place
        real_rename(a, b)
        if step == "after_swap" and len(renames) == 2:
            die()                            # new in place, old not yet deleted
    if not exchange:
        os.rename = rename
    def rmtree(path, *a, **k):
        if step == "mid_delete":
            victims = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
            os.remove(victims[0])            # the old version is half deleted
            die()
        real_rmtree(path, *a, **k)
    shutil.rmtree = rmtree
    with m.atomic_directory(target, overwrite=True) as tmp:
        shutil.copytree(source, tmp)
    print("finished")
""")


@pytest.mark.parametrize("exchange,step", [(True, "before_swap"), (True, "after_swap"),
                                           (True, "mid_delete"), (False, "before_swap"),
                                           (False, "after_swap")])
def test_overwrite_killed_at_each_step_never_loses_the_version(two_versions, tmp_path, exchange,
                                                               step):
    base = tmp_path / "digits"
    base.mkdir()
    target = str(base / "1")
    import shutil

    shutil.copytree(two_versions["old"][0], target)
    proc = subprocess.run([sys.executable, "-c", _KILLER, _atomic.__file__, step,
                           two_versions["new"][0], target, "1" if exchange else "0"],
                          capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    if exchange:
        # the exchange is one system call: the version path was never without a version
        expected = "old" if step == "before_swap" else "new"
        assert _holds(target, two_versions) == expected
    elif step == "before_swap":
        assert not os.path.exists(target)  # the one gap of the fallback: the old one is aside
    assert any(name.startswith("temp-") for name in os.listdir(base))
    done = _atomic.clean_stale(str(base))   # what the next export does first
    assert os.listdir(base) == ["1"], done
    assert _holds(target, two_versions) == ("old" if step == "before_swap" else "new")
    if not exchange and step == "before_swap":
        assert done["restored"] == ["1"]


def test_overwrite_keeps_a_complete_version_while_replacing(two_versions, tmp_path):
    base = tmp_path / "m"
    first = td.export.saved_model(_tiny(1), str(base), version=1)
    assert _holds(first, two_versions) == "old"
    script = textwrap.dedent(f"""
        import os, signal
        import tfdeploy as td
        from tfdeploy.export import _saved_model as sm
        def die(export_dir, methods):   # the new graph is half written
            os.kill(os.getpid(), signal.SIGKILL)
        sm._set_method_names = die
        td.keras.utils.set_random_seed(2)
        model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.1)
        td.export.saved_model(model, {str(base)!r}, version=1, overwrite=True,
                              class_names=["a", "b", "c"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=240)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert _holds(first, two_versions) == "old"  # killed mid-write: the old version serves on
    left = sorted(os.listdir(base))
    assert "1" in left and any(n.startswith("temp-1-") and n.endswith(".labels") for n in left)
    path = td.export.saved_model(_tiny(2), str(base), version=1, overwrite=True)
    assert sorted(os.listdir(base)) == ["1"]  # the killed run's temp and labels dirs are gone
    assert _holds(path, two_versions) == "new"


def test_export_leaves_no_labels_files_in_tmpdir(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    stale = tmpdir / "tfdeploy-labels-abcd1234"   # what earlier versions left when killed
    stale.mkdir()
    (stale / "labels.txt").write_text("a\nb\nc\n")
    os.utime(stale, (0, 0))
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    path = td.export.saved_model(_tiny(1), str(tmp_path / "m"), class_names=["a", "b", "c"])
    # (TensorFlow's own autograph files may land there; ours never do)
    assert [n for n in os.listdir(tmpdir) if n.startswith("tfdeploy-")] == []
    assert open(os.path.join(path, "assets", "labels.txt")).read() == "a\nb\nc\n"
    assert sorted(os.listdir(tmp_path / "m")) == ["1"]


def test_warmup_of_the_wrong_shape_is_refused_before_anything_is_written(tmp_path):
    base = tmp_path / "w"
    with pytest.raises(ExportError, match=r"warmup_data samples have shape \(9, 9, 1\).*"
                                          r"\(8, 8, 1\).*Nothing was written"):
        td.export.saved_model(_tiny(1), str(base), warmup_data=np.zeros((2, 9, 9, 1)))
    assert not base.exists()
    with pytest.raises(ExportError, match=r"shape \(64,\)"):
        td.export.saved_model(_tiny(1), str(base), warmup_data=np.zeros((2, 64)))
    assert not base.exists()


def test_tflite_and_onnx_refuse_to_replace_a_file_without_overwrite(tmp_path):
    model = _tiny(1)
    for suffix, export in ((".tflite", td.export.tflite), (".onnx", td.export.onnx)):
        path = tmp_path / f"m{suffix}"
        path.write_bytes(b"previous")
        with pytest.raises(ExportError, match="already exists; pass overwrite=True"):
            export(model, str(path))     # refused before converting anything
        assert path.read_bytes() == b"previous"
    path = tmp_path / "m.tflite"          # (the ONNX writer takes the same atomic path)
    assert td.export.tflite(model, str(path), overwrite=True) == str(path)
    assert td.runtime.load(str(path)).predict(X).shape == (4, 3)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.tflite"]


def test_stale_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".m.tflite.tmp-{dead}-0123abcd").write_bytes(b"half")
    (tmp_path / f"temp-3-{dead}-0123abcd").mkdir()
    (tmp_path / f".m.tflite.tmp-{os.getpid()}-0123abcd").write_bytes(b"mine")
    (tmp_path / "temp-notes.txt").write_text("a user's file")
    done = _atomic.clean_stale(str(tmp_path))
    assert sorted(done["removed"]) == [f".m.tflite.tmp-{dead}-0123abcd", f"temp-3-{dead}-0123abcd"]
    assert sorted(os.listdir(tmp_path)) == [f".m.tflite.tmp-{os.getpid()}-0123abcd",
                                            "temp-notes.txt"]
