"""Every figure in docs/ comes from a JSON that a benchmark script wrote (issue 23 item 8).

Each JSON kept in docs/ is linked from a page, every link to one points at a file, the
benchmarks page's table names the JSON and the script of each figure, and what a benchmark
records about its run (CPU flags, load average at start and end, command, date) is there.
"""

import datetime
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import _record  # noqa: E402


def _pages():
    pages = {}
    for path in glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True):
        with open(path, encoding="utf-8") as f:
            pages[os.path.relpath(path, DOCS)] = f.read()
    return pages


def _json_links(page, text):
    """The docs-relative paths of the ``.json`` files a page links to."""
    here = os.path.dirname(page)
    return {os.path.normpath(os.path.join(here, link.split("#")[0]))
            for link in re.findall(r"\]\(([^)\s]+\.json)\)", text) if "://" not in link}


def test_every_docs_json_is_linked_from_a_page_and_every_link_exists():
    linked = set()
    for page, text in _pages().items():
        for link in _json_links(page, text):
            assert os.path.isfile(os.path.join(DOCS, link)), f"{page} links to missing {link}"
            linked.add(link)
    kept = {os.path.relpath(p, DOCS) for p in glob.glob(os.path.join(DOCS, "*.json"))}
    orphans = sorted(kept - linked)
    assert not orphans, f"JSON in docs/ that no page links (link it beside its figure): {orphans}"


def test_each_figure_row_of_the_benchmarks_page_names_its_json_and_script():
    text = _pages()["benchmarks.md"]
    table = re.search(r"^## Figures and their files\n(.*?)(?=^## )", text, re.M | re.S).group(1)
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| area")]
    assert len(rows) >= 10
    for row in rows:
        jsons = _json_links("benchmarks.md", row)
        scripts = re.findall(r"`(?:python )?((?:benchmarks|recipes)/\w+\.py)", row)
        assert jsons and scripts, f"figure without its JSON and script: {row}"
        for path in scripts:
            assert os.path.isfile(os.path.join(ROOT, path)), path
    for name in ("bench_bridge.json", "bench_viz.json", "bench_text.json",
                 "bench_mobilenet_transfer_32.json"):
        assert f"]({name})" in table, f"{name} has no row in the benchmarks table"


def _assert_run_record(run, where):
    for key in ("command", "date_utc", "cpu", "loadavg_end"):
        assert key in run, f"{where}: run record lacks {key!r}"
    assert set(run["cpu"]["flags"]) == set(_record._FLAGS), f"{where}: no CPU flags from lscpu"
    assert len(run["cpu"]["loadavg"]) == 3 and len(run["loadavg_end"]) == 3, where
    assert datetime.datetime.fromisoformat(run["date_utc"]).tzinfo is not None, where


def test_the_run_record_holds_cpu_flags_load_command_and_date(tmp_path):
    out = tmp_path / "sub" / "result.json"
    printed = _record.write_result({"run": _record.run_info(["--repeats", "1"]), "x": 1.5},
                                   str(out), indent=None)
    written = json.loads(out.read_text())
    assert json.loads(printed) == written and "\n" not in printed  # one line on stdout
    assert written["x"] == 1.5
    assert written["run"]["command"][1:] == ["--repeats", "1"]
    _assert_run_record(written["run"], "write_result")
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            has_avx2 = " avx2" in f.read()
        assert written["run"]["cpu"]["flags"]["avx2"] is has_avx2


def test_the_new_benchmark_jsons_record_their_run():
    for name in ("bench_bridge.json", "bench_viz.json", "bench_text.json",
                 "bench_mobilenet_transfer_32.json"):
        with open(os.path.join(DOCS, name)) as f:
            doc = json.load(f)
        _assert_run_record(doc["run"], name)
        assert any(doc["run"]["cpu"]["flags"].values()), f"{name}: lscpu gave no flags"
        assert "--out" in doc["run"]["command"], name
