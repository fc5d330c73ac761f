"""Recipes: whole worked examples, one module each, run as ``tfdeploy run NAME``.

A recipe is a module ``tfdeploy/recipes/<name>.py`` whose docstring's first
line is its one-line summary (what ``tfdeploy run --list`` prints) and which
defines ``main(argv=None) -> int`` (an argparse CLI taking at least ``--help``,
``--data``, ``--output``, ``--logs`` and ``--json FILE``). ``recipes/<name>.py``
at the repository root is a three-line wrapper calling it. Recipes are
discovered with `pkgutil`, so adding one edits nothing else.

What recipes share (flags, seed, result rows, served models, the printed table
and the ``--json`` file) is written once, in the harness `tfdeploy.recipes._harness`;
modules with a leading underscore are not recipes.
"""

import ast
import importlib
import importlib.util
import pkgutil

from tfdeploy.errors import RecipeNotFoundError


def names():
    """The names of every recipe module in this package, sorted."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__)
                  if not info.name.startswith("_"))


def summary(name):
    """The first line of recipe ``name``'s module docstring (read without importing it)."""
    spec = importlib.util.find_spec(f"{__name__}.{name}")
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def load(name):
    """Import recipe ``name`` and return its module.

    Raises:
        RecipeNotFoundError: no such recipe (the message lists the available ones).
    """
    available = names()
    if name not in available:
        raise RecipeNotFoundError(
            f"Unknown recipe {name!r}. Available recipes are: {available}. "
            "`tfdeploy run --list` describes them.")
    module = importlib.import_module(f"{__name__}.{name}")
    if not callable(getattr(module, "main", None)):
        raise RecipeNotFoundError(
            f"Recipe module {module.__name__} defines no main(argv=None) function.")
    return module


__all__ = ["names", "summary", "load", "RecipeNotFoundError"]
