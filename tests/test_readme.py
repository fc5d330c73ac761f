"""The README is the front door: at most 250 lines, every `tfdeploy` command in its table, every
link pointing at a file that exists, every headline figure linked to its JSON and script, and
its Python example runs as written."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


@pytest.fixture(scope="module")
def readme():
    with open(README, encoding="utf-8") as f:
        return f.read()


def _section(text, heading):
    """The body of the ``## heading`` section."""
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found, f"README has no '## {heading}' section"
    return found.group(1)


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_readme_is_at_most_250_lines(readme):
    lines = readme.count("\n") + (not readme.endswith("\n"))
    assert lines <= 250, f"README.md has {lines} lines; move detail to docs/ (limit 250)"


def _cli_commands():
    """The sub-commands `tfdeploy --help` lists (run as a user would)."""
    out = subprocess.run([sys.executable, "-m", "tfdeploy.cli", "--help"], capture_output=True,
                         text=True, timeout=300, env=_env(), check=True).stdout
    listed = out.split("COMMAND\n", 1)[1].split("\noptions:", 1)[0]
    return re.findall(r"^ {4}([a-z][a-z0-9-]*)", listed, re.M)


def test_every_cli_command_is_in_the_readme_table(readme):
    commands = _cli_commands()
    modules = {n[:-3].replace("_", "-") for n in os.listdir(os.path.join(ROOT, "tfdeploy",
                                                                         "commands"))
               if n.endswith(".py") and not n.startswith("_")}
    assert set(commands) == modules  # the help parse found every command module
    table = _section(readme, "Command line")
    rows = re.findall(r"^\| `tfdeploy ([a-z][a-z0-9-]*)", table, re.M)
    missing = [c for c in commands if c not in rows]
    assert not missing, f"commands missing from the README's CLI table: {missing}"
    unknown = [r for r in rows if r not in commands]
    assert not unknown, f"README's CLI table lists commands that do not exist: {unknown}"


def _links(text):
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_relative_links_in_the_readme_exist(readme):
    local = [link.split("#")[0] for link in _links(readme) if "://" not in link]
    assert local, "the README links to nothing"
    missing = [link for link in local if not os.path.exists(os.path.join(ROOT, link))]
    assert not missing, f"README links to missing files: {missing}"
    assert any(re.fullmatch(r"docs/[^/]+\.json", link) for link in local)


def test_every_headline_figure_links_its_json_and_script(readme):
    table = _section(readme, "Headline figures")
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| what")]
    assert len(rows) >= 5
    for row in rows:
        links = _links(row)
        jsons = [link for link in links if re.fullmatch(r"docs/[^/]+\.json", link)]
        scripts = [link for link in links if re.fullmatch(r"(benchmarks|recipes)/\w+\.py", link)]
        assert jsons and scripts, f"figure without its JSON and script: {row}"
        for path in jsons + scripts:
            assert os.path.isfile(os.path.join(ROOT, path)), path
        for script in scripts:  # a benchmark prints or writes JSON (recipes: --json FILE)
            if script.startswith("benchmarks/"):
                with open(os.path.join(ROOT, script)) as f:
                    assert "json" in f.read(), script


def test_the_readme_python_example_runs_as_written(readme, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", _section(readme, "In your own training script"),
                        re.S)
    assert len(blocks) == 1
    code = blocks[0]
    body = [line for line in code.splitlines() if line.strip()]
    assert len(body) <= 20, f"the README example has {len(body)} lines; keep it short"
    for step in ("td.compress.prune", "td.compress.callbacks", "td.compress.strip",
                 "td.export.", "td.verify."):
        assert step in code, step
    (tmp_path / "example.py").write_text(code)
    run = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, env=_env())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = [line.split() for line in run.stdout.splitlines()
            if line.startswith("saved_models/")]
    assert [r[0] for r in rows] == ["saved_models/digits/1", "saved_models/digits_int8.tflite"]
    assert all(r[-1] == "ok" for r in rows), run.stdout
    accuracy = [float(r[3]) for r in rows]
    assert all(a > 0.8 for a in accuracy), run.stdout  # trained, not chance (0.1)
    assert (tmp_path / "saved_models" / "digits" / "1" / "saved_model.pb").is_file()
    assert list((tmp_path / "logs" / "run1").rglob("events.out.tfevents.*"))
