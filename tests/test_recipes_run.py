"""`tfdeploy run`: recipes discovered from the tfdeploy.recipes package, flags passed through."""

import os
import pkgutil
import subprocess
import sys

import pytest

import tfdeploy.recipes as recipes
from tfdeploy.cli import main
from tfdeploy.errors import RecipeNotFoundError


def test_list_names_every_recipe_module(capsys):
    modules = sorted(i.name for i in pkgutil.iter_modules(recipes.__path__)
                     if not i.name.startswith("_"))
    assert "quickstart" in modules
    assert main(["run", "--list"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.strip().splitlines()]
    assert listed == modules
    for name in modules:
        assert recipes.summary(name) and recipes.summary(name) in out


def test_unknown_recipe_is_a_typed_error_listing_the_recipes(capsys):
    with pytest.raises(RecipeNotFoundError, match="Available recipes are: .*quickstart"):
        recipes.load("no_such_recipe")
    assert main(["run", "no_such_recipe"]) == 1
    assert "Unknown recipe 'no_such_recipe'" in capsys.readouterr().err


def test_flags_reach_the_recipe(tmp_path, capsys):
    status = main(["run", "quickstart", "--data", str(tmp_path / "missing"), "--quiet"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("quickstart: error:") and str(tmp_path / "missing") in err


def test_recipe_help_through_run_and_wrapper():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    via_run = subprocess.run([sys.executable, "-m", "tfdeploy.cli", "run", "quickstart",
                              "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert via_run.returncode == 0, via_run.stderr
    assert "--data" in via_run.stdout and "--json" in via_run.stdout
