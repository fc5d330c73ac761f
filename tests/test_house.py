"""House rules read from the source: no import loops, tfmot internals in one module."""

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


def _imports(module, path, known):
    """The tfdeploy modules ``module`` imports anywhere in its body (functions included)."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.add(sub)  # ``from pkg import submodule``
                elif base in known:
                    found.add(base)  # a name defined in (or re-exported by) ``base``
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


_PRIVATE_TFMOT = re.compile(r"tensorflow_model_optimization\.python|\bpruning_vars\b|"
                            r"\bpulling_indices\b|\bclustering_algorithms\b|"
                            r"\boriginal_clusterable_weights\b|\bQuantizeAwareActivation\b|"
                            r"\b_weight_names\b")


def test_tfmot_internals_only_in_compress_tfmot():
    offenders = []
    for module, path in _modules().items():
        if module == "tfdeploy._tfmot":
            continue
        for n, line in enumerate(open(path), 1):
            if _PRIVATE_TFMOT.search(line):
                offenders.append(f"{module}:{n}: {line.strip()}")
    assert offenders == []


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
