"""House rules read from the source: no import loops; no package imports another package's
private module (shared helpers live on the ground floor); third-party internals (tfmot,
keras-tuner, Keras's private attributes) each in one floor module."""

import ast
import os
import re

import tfdeploy

ROOT = os.path.dirname(tfdeploy.__file__)


def _modules():
    """``{dotted module name: path}`` for every module of the tfdeploy package."""
    out = {}
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
            out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def _import_statements(module, path, known):
    """``(line, imported module, imported name or None)`` for every import of a tfdeploy
    module anywhere in ``module``'s body (functions included; relative imports resolved).

    ``from pkg import submodule`` gives the submodule; ``from mod import name`` gives
    ``mod`` and the name.
    """
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    yield node.lineno, sub, None  # ``from pkg import submodule``
                elif base in known:
                    yield node.lineno, base, alias.name  # a name defined in ``base``


def _imports(module, path, known):
    """The tfdeploy modules ``module`` imports anywhere in its body (functions included)."""
    found = {target for _, target, _ in _import_statements(module, path, known)}
    found.discard(module)
    return found


def _cycles(graph):
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_loops_not_even_inside_functions():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # ``from pkg import submodule`` is an edge to the submodule only; ``from pkg import name``
    # is an edge to ``pkg/__init__``, so a submodule taking names from its own package's
    # __init__ (which imports that submodule) is a loop.
    assert _cycles(graph) == []


def test_detector_sees_a_loop_hidden_in_a_function(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from tfdeploy.compress import plan\n")
    known = {"tfdeploy.compress", "tfdeploy.compress.plan", "tfdeploy.compress.a"}
    assert _imports("tfdeploy.compress.a", str(a), known) == {"tfdeploy.compress.plan"}
    assert _cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": set()}) == [["x", "y", "z"]]


def _parts(module):
    """``tfdeploy.export._atomic`` -> ``["export", "_atomic"]``."""
    return module.split(".")[1:]


def _is_floor(module):
    """The ground floor: top-level private modules (``tfdeploy/_keras.py``, ...)."""
    parts = _parts(module)
    return len(parts) == 1 and parts[0].startswith("_")


def _private_imports(module, path, known):
    """Imports by ``module`` of another package's private module or private name."""
    home = (_parts(module) or [""])[0]
    out = []
    for line, target, name in _import_statements(module, path, known):
        parts = _parts(target)
        if not parts or _is_floor(target) or parts[0] == home:
            continue
        private = [p for p in parts if p.startswith("_")]
        if name is not None and name.startswith("_") and not name.startswith("__"):
            private.append(name)
        if private:
            out.append(f"{module}:{line}: {target}" + (f" import {name}" if name else ""))
    return out


def test_no_package_imports_another_packages_private_module():
    modules = _modules()
    offenders = [o for m, p in modules.items() for o in _private_imports(m, p, modules)]
    assert offenders == [], (
        "A package imports another package's private module or name; move the helper to "
        "the ground floor (tfdeploy/_*.py) or make it public in its package.")


def test_private_import_rule_sees_function_level_and_relative_imports(tmp_path):
    known = {"tfdeploy.tune", "tfdeploy.tune.search", "tfdeploy.export",
             "tfdeploy.export._atomic", "tfdeploy.runtime", "tfdeploy.runtime.saved_model",
             "tfdeploy._atomic", "tfdeploy.tune._grid", "tfdeploy.tune.log"}
    planted = tmp_path / "search.py"
    planted.write_text(
        "from tfdeploy._atomic import atomic_file\n"          # the floor: allowed
        "from . import _grid\n"                               # its own package: allowed
        "from ..export._atomic import atomic_file\n"          # relative, another package's
        "def f():\n"
        "    from tfdeploy.runtime.saved_model import _resolve\n"  # a private name, in a function
        "    import tfdeploy.export._atomic\n")
    assert _private_imports("tfdeploy.tune.search", str(planted), known) == [
        "tfdeploy.tune.search:3: tfdeploy.export._atomic import atomic_file",
        "tfdeploy.tune.search:5: tfdeploy.runtime.saved_model import _resolve",
        "tfdeploy.tune.search:6: tfdeploy.export._atomic"]


#: the public modules of the ground floor beside the private ``tfdeploy/_*.py`` ones
_FLOOR_PUBLIC = {"tfdeploy.errors", "tfdeploy.model_io"}
#: floor -> package edges allowed: model I/O converts Keras 3 files with the bridge
_FLOOR_REACHES_UP = {("tfdeploy.model_io", "tfdeploy.bridge")}


def test_the_ground_floor_imports_only_the_ground_floor():
    modules = _modules()
    floor = {m for m in modules if _is_floor(m)} | _FLOOR_PUBLIC
    offenders = sorted(f"{m} imports {t}" for m in floor
                       for t in _imports(m, modules[m], modules)
                       if t not in floor and (m, t) not in _FLOOR_REACHES_UP)
    assert offenders == []


def _only_in(pattern, home):
    """Lines of any tfdeploy module but ``home`` that match ``pattern``."""
    offenders = []
    for module, path in _modules().items():
        if module == home:
            continue
        for n, line in enumerate(open(path), 1):
            if pattern.search(line):
                offenders.append(f"{module}:{n}: {line.strip()}")
    return offenders


_PRIVATE_TFMOT = re.compile(r"tensorflow_model_optimization\.python|\bpruning_vars\b|"
                            r"\bpulling_indices\b|\bclustering_algorithms\b|"
                            r"\boriginal_clusterable_weights\b|\bQuantizeAwareActivation\b|"
                            r"\b_weight_names\b")


def test_tfmot_internals_only_in_tfmot():
    assert _only_in(_PRIVATE_TFMOT, "tfdeploy._tfmot") == []


_KERAS_TUNER_INTERNALS = re.compile(r"keras_tuner\.src|\boracle_chief\b|\bOracleServicer\b|"
                                    r"\bexit_chief\b|\bget_service_grpc\b|\b_duplicate\b|"
                                    r"\bstop_triggered\b|\b_tried_so_far\b")


def test_keras_tuner_internals_only_in_kerastuner():
    assert _only_in(_KERAS_TUNER_INTERNALS, "tfdeploy._kerastuner") == []


def test_keras_private_graph_attributes_only_in_walk():
    assert _only_in(re.compile(r"\b_is_graph_network\b|\b_nodes_by_depth\b|\b_keras_history\b|"
                               r"\b_self_tracked_trackables\b"), "tfdeploy._walk") == []


def test_keras_tuner_version_is_one_the_internals_were_checked_against():
    from tfdeploy import _kerastuner

    # The versions whose oracle_chief, protos and Oracle._duplicate were read: 1.4.7, 1.4.8.
    assert _kerastuner.CHECKED_VERSIONS == ((1, 4, 7), (1, 4, 9))
    low, high = _kerastuner.CHECKED_VERSIONS
    assert low <= _kerastuner.version() < high, (
        f"keras-tuner {_kerastuner.version()} is outside {_kerastuner.CHECKED_VERSIONS}: "
        "re-check every function of tfdeploy/_kerastuner.py against it, then widen the range.")
    assert _kerastuner.check_version()  # the same check the search runs
    internals = _kerastuner.internals()  # each one still exists where the fence reaches it
    assert sorted(internals) == ["Oracle._duplicate", "oracle_chief.OracleServicer",
                                 "oracle_chief.exit_chief",
                                 "protos.add_OracleServicer_to_server"]
    assert all(callable(v) for v in internals.values())


def test_tfmot_version_is_one_the_internals_were_checked_against():
    from tfdeploy import _tfmot
    from tfdeploy._keras import tfmot

    installed = tuple(int(p) for p in tfmot().__version__.split(".")[:3])
    low, high = _tfmot.CHECKED_VERSIONS
    assert low <= installed < high, (
        f"tfmot {tfmot().__version__} is outside {_tfmot.CHECKED_VERSIONS}: re-check every "
        "function of tfdeploy/_tfmot.py against it, then widen the range.")
    _tfmot.check_version()  # the same check the wrappers run


def test_dead_parameters_and_markers_are_gone():
    import configparser
    import importlib
    import inspect

    from tfdeploy import deploy as configs
    from tfdeploy.serving import batching, protos

    report = importlib.import_module("tfdeploy.compress.report")  # the module, not the function

    assert list(inspect.signature(configs._server_args).parameters) == [
        "batching", "monitoring_path", "grpc_port", "rest_port"]
    assert list(inspect.signature(report._params).parameters) == ["layer"]
    assert "pad_variable_length_inputs" not in inspect.signature(
        batching.validate_options).parameters
    # TF Serving's batching files still parse with the field; it just has nothing to do
    params = protos.BatchingParameters()
    params.pad_variable_length_inputs = True
    assert "pad_variable_length_inputs" not in batching.options_from_proto(params)
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(ROOT), "setup.cfg"))
    declared = [line.split(":")[0].strip() for line in
                cfg.get("tool:pytest", "markers", fallback="").splitlines() if line.strip()]
    tests = os.path.join(os.path.dirname(ROOT), "tests")
    used = "".join(open(os.path.join(tests, f)).read() for f in os.listdir(tests)
                   if f.endswith(".py"))
    assert [m for m in declared if f"mark.{m}" not in used] == []
