"""The recipe harness (`tfdeploy.recipes._harness`): seed, named rows, served models on an
ExitStack, the ``--json`` file; and the quickstart's one-way path."""

import argparse
import ast
import json
import os
import random
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.recipes import _harness
from tfdeploy.recipes._harness import Rows, Run

ROOT = os.path.dirname(td.__file__)
REPO = os.path.dirname(ROOT)


def _args(tmp_path=None, **kw):
    return argparse.Namespace(**{"seed": 0, "logs": "", "json": None, **kw})


def _draws():
    layer = td.keras.layers.Dense(3)
    layer.build((None, 4))
    return (random.random(), np.random.rand(3).tolist(),
            td.tf.random.uniform([3]).numpy().tolist(), layer.kernel.numpy().tolist())


def test_seed_makes_python_numpy_tensorflow_and_keras_reproducible():
    _harness.seed(7)
    first = _draws()
    _harness.seed(7)
    assert _draws() == first
    with Run("t", _args(seed=7)):           # a run seeds itself from --seed on entry
        assert _draws() == first
    _harness.seed(8)
    other = _draws()
    assert all(a != b for a, b in zip(other, first))


def test_recipes_reach_keras_only_through_the_one_keras_module():
    """`tf.keras` may be Keras 3 in a process that imported it first: recipes seed and build
    through `tfdeploy._keras` (the harness's `seed`), never `tf.keras`."""
    offenders = []
    for directory in (os.path.join(ROOT, "recipes"), os.path.join(ROOT, "commands")):
        for name in sorted(f for f in os.listdir(directory) if f.endswith(".py")):
            path = os.path.join(directory, name)
            offenders += [f"{name}:{node.lineno}" for node in ast.walk(ast.parse(open(path).read()))
                          if isinstance(node, ast.Attribute) and node.attr == "keras"
                          and isinstance(node.value, ast.Name) and node.value.id == "tf"]
    assert offenders == []


def test_rows_are_looked_up_by_variant():
    rows = Rows([{"variant": "TF-IDF", "format": "baseline", "accuracy": 0.5}])
    rows.add({"variant": "cnn", "format": "keras", "accuracy": 0.9})
    assert rows["cnn"]["accuracy"] == 0.9 and "cnn" in rows and len(rows) == 2
    assert [r["variant"] for r in rows] == ["TF-IDF", "cnn"]
    assert rows.baselines() == [rows["TF-IDF"]]
    with pytest.raises(KeyError, match=r"No row 'rnn'; the rows are \['TF-IDF', 'cnn'\]"):
        rows["rnn"]
    with pytest.raises(ValueError, match="'cnn' was already added"):
        rows.add({"variant": "cnn"})
    with pytest.raises(ValueError, match="needs a 'variant'"):
        rows.add({"accuracy": 1.0})


def test_empty_logs_flag_means_no_log_directory():
    assert Run("t", _args(logs="")).logs("report") is None
    assert Run("t", _args(logs="logs/t")).logs("report") == os.path.join("logs", "t", "report")


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    """A tiny SavedModel in TF Serving's layout: ``BASE/1/``."""
    base = str(tmp_path_factory.mktemp("served") / "tiny")
    inputs = td.keras.Input((4,))
    model = td.keras.Model(inputs, td.keras.layers.Dense(2, activation="softmax")(inputs))
    td.export.saved_model(model, base)
    return base


def _closed(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_served_models_stop_when_the_run_body_raises(model_base):
    ports = []
    with pytest.raises(RuntimeError, match="the recipe failed"):
        with Run("t", _args()) as session:
            for name in ("first", "second"):
                server = session.serve(name, model_base)
                ports += [server.rest_port, server.grpc_port]
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{server.rest_port}/v1/models/{name}") as resp:
                    assert json.load(resp)["model_version_status"][0]["state"] == "AVAILABLE"
            assert not any(_closed(p) for p in ports)
            raise RuntimeError("the recipe failed")
    assert all(_closed(p) for p in ports), ports


def test_stop_serving_stops_early_and_the_run_can_serve_again(model_base):
    with Run("t", _args()) as session:
        first = session.serve("m", model_base)
        session.stop_serving()
        assert _closed(first.rest_port) and _closed(first.grpc_port)
        second = session.serve("m", model_base)
        assert not _closed(second.rest_port)
    assert _closed(second.rest_port) and _closed(second.grpc_port)


def test_json_holds_rows_baselines_relative_paths_and_is_replaced_atomically(tmp_path, capsys):
    out = tmp_path / "results" / "run.json"
    artifact = tmp_path / "models" / "m_int8.tflite"
    artifact.parent.mkdir()
    artifact.write_bytes(b"tflite")
    with Run("t", _args(json=str(out))) as session:
        session.rows.add({"variant": "BM25", "format": "baseline", "mrr": np.float32(0.25)})
        session.rows.add({"variant": "int8", "format": "tflite", "mrr": 0.75,
                          "path": str(artifact)})
        written = session.finish({"rows": session.rows.as_list(),
                                  "baselines": session.rows.baselines(),
                                  "saved_model": session.path(str(tmp_path / "models")),
                                  "nothing": session.path(None)})
    assert capsys.readouterr().out.startswith("total ")
    result = json.loads(out.read_text())
    assert result == json.loads(json.dumps(written, default=float))
    assert list(result) == ["rows", "baselines", "saved_model", "nothing", "total_s"]
    assert [r["variant"] for r in result["rows"]] == ["BM25", "int8"]
    assert result["baselines"] == [{"variant": "BM25", "format": "baseline", "mrr": 0.25}]
    assert result["rows"][1]["path"] == os.path.join("..", "models", "m_int8.tflite")
    assert (out.parent / result["rows"][1]["path"]).read_bytes() == b"tflite"
    assert result["saved_model"] == os.path.join("..", "models")
    assert result["nothing"] is None and result["total_s"] >= 0

    # a payload that fails half way through leaves the previous file whole, and no temp file
    before = out.read_text()
    loop = []
    loop.append(loop)
    with Run("t", _args(json=str(out))) as session:
        with pytest.raises(ValueError, match="Circular reference"):
            session.finish({"rows": [{"variant": "a", "mrr": 0.5}], "loop": loop})
    assert out.read_text() == before
    assert os.listdir(out.parent) == ["run.json"]


def test_without_json_flag_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Run("t", _args()) as session:
        session.finish({"rows": [], "path": session.path("models/x")})
    assert os.listdir(tmp_path) == []


def _imports(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_quickstart_path_runs_one_way():
    """`tfdeploy quickstart` → `tfdeploy.recipes.quickstart` → `tfdeploy.pipeline`: the command
    names the recipe's run, the recipe owns its flags, and no arrow runs back up (the pipeline
    imports neither, the commands no private module of the recipes)."""
    from tfdeploy.commands import quickstart as command
    from tfdeploy.recipes import quickstart as recipe

    assert command.run is recipe.run and command.add_arguments is recipe.add_arguments
    commands = os.path.join(ROOT, "commands")
    private = [(f, m) for f in os.listdir(commands) if f.endswith(".py")
               for m in _imports(os.path.join(commands, f))
               if m.startswith("tfdeploy.recipes._")]
    assert private == []
    upward = [m for m in _imports(os.path.join(ROOT, "pipeline.py"))
              if m.startswith(("tfdeploy.recipes", "tfdeploy.commands", "tfdeploy.cli"))]
    assert upward == []


@pytest.mark.parametrize("recipe", ["sentiment_monitor", "recommender", "answer_retrieval",
                                    "mobilenet_transfer"])
def test_recipe_help_imports_no_tensorflow(recipe):
    # `--help` used to import TensorFlow while building the parser (17 s on a busy machine);
    # the flags need none of it.
    code = (f"import sys\nfrom tfdeploy.recipes.{recipe} import build_parser\n"
            "try:\n    build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('tensorflow', 'tf_keras', 'keras', 'sklearn') "
            "if m in sys.modules)\nprint('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "--seed" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout[-300:]
