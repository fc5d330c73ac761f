"""TensorBoard is the home: the quickstart's logs read back from the event files and served by a
real ``tensorboard`` process (its HTTP data API), the report it wrote, and a screenshot taken in
headless Chromium.

Set TFDEPLOY_SCREENSHOT=docs/tensorboard.png to refresh the README's screenshot from this run.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tfdeploy import tf, viz
from tfdeploy.cli import main

VARIANTS = ["keras baseline float32", "tflite baseline float32", "saved_model pruned float32",
            "tflite pruned float32", "tflite pruned+QAT int8"]
FIGURES = ("tradeoff", "confusion_matrices", "recall_change", "sparsity_heatmap",
           "weight_distributions", "saliency_integrated_gradients", "saliency_grad_cam")


def _png_size(png):
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_event_files_hold_images_hparams_text_and_sparsity(quickstart_run):
    logs = quickstart_run["logs"]
    acc = EventAccumulator(str(logs / "visuals"), size_guidance={"tensors": 0})
    acc.Reload()
    assert set(acc.Tags()["tensors"]) == set(FIGURES)  # TF2 image summaries are tensors
    for tag in FIGURES:
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "images"
        event = acc.Tensors(tag)[0]
        width, height, png = tf.make_ndarray(event.tensor_proto)
        assert event.step == 0 and int(width) >= 400 and int(height) >= 250, tag
        assert _png_size(png) == (int(width), int(height))
    sessions = sorted(os.listdir(logs / "hparams"))
    sessions = [s for s in sessions if os.path.isdir(logs / "hparams" / s)]
    assert len(sessions) == len(VARIANTS)
    run = EventAccumulator(str(logs / "hparams" / sessions[-1]))
    run.Reload()
    assert {"_hparams_/session_start_info", "accuracy", "gzip_bytes", "latency_p50_ms",
            "agreement"} <= set(run.Tags()["tensors"])
    text = EventAccumulator(str(logs / "comparison"), size_guidance={"tensors": 0})
    text.Reload()
    table = tf.make_ndarray(text.Tensors("comparison")[0].tensor_proto).item()
    for variant in VARIANTS:
        assert variant in table.decode()
    heat = viz.read_sparsity({"prune": str(logs / "prune"), "qat": str(logs / "qat")})
    assert heat["epochs"] == ["prune 1", "prune 2", "qat 1"]  # conftest: 2 prune, 1 QAT epoch
    assert heat["layers"]["conv5"][-1] == pytest.approx(0.8, abs=0.01)


def test_quickstart_report_has_every_artifact_and_saliency(quickstart_run):
    report = quickstart_run["report"]
    md = (report / "report.md").read_text()
    page = (report / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == len(FIGURES)
    for variant in VARIANTS:
        assert f"### {variant}" in md and f"<td>{variant}</td>" in page
    run = viz.load_run(str(report))
    scores = run["saliency"]["integrated_gradients"]["scores"]
    assert scores["float baseline"]["spearman"] == pytest.approx(1.0)
    assert 0.0 < scores["pruned+QAT (int8 sim.)"]["spearman"] < 1.0
    rows = {r["variant"]: r for r in quickstart_run["json"]["rows"]}
    assert rows["keras baseline float32"]["agreement"] == 1.0
    assert 0.9 < rows["tflite pruned+QAT int8"]["agreement"] <= 1.0
    y = np.asarray(run["y_true"])
    pred = np.asarray(run["predictions"]["tflite pruned+QAT int8"])
    assert np.mean(pred == y) == pytest.approx(rows["tflite pruned+QAT int8"]["accuracy"])


def test_report_command_evaluates_artifacts(quickstart_run, digits_dir, tmp_path):
    sm = quickstart_run["dir"] / "saved_models"
    out = tmp_path / "rep"
    assert main(["report", str(out), "--artifact", str(sm / "digits_float32.tflite"),
                 "--artifact", str(sm / "digits_int8.tflite"), "--data", digits_dir]) == 0
    md = (out / "report.md").read_text()
    assert "digits_int8.tflite (tflite int8)" in md and "macro avg" in md


def _get(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def board(quickstart_run):
    exe = shutil.which("tensorboard") or os.path.join(os.path.dirname(sys.executable),
                                                      "tensorboard")
    proc = subprocess.Popen([exe, "--logdir", str(quickstart_run["logs"]), "--host", "127.0.0.1",
                             "--port", "0", "--load_fast", "false", "--reload_interval", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port, seen = None, []
    deadline = time.time() + 120
    while port is None and time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        port = match and int(match.group(1))
    assert port, "tensorboard did not start:\n" + "".join(seen)
    base = f"http://127.0.0.1:{port}"
    while time.time() < deadline and "visuals" not in _get(base, "/data/runs"):
        time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def test_tensorboard_serves_scalars_images_hparams(board):
    runs = _get(board, "/data/runs")
    for run in ("baseline/train", "prune/train", "prune/sparsity", "qat/train", "visuals",
                "comparison"):
        assert run in runs, runs
    scalars = _get(board, "/data/plugin/scalars/tags")
    assert "sparsity/conv5" in scalars["prune/sparsity"]
    assert "epoch_accuracy" in scalars["baseline/train"]
    images = _get(board, "/data/plugin/images/tags")
    assert set(images["visuals"]) == set(FIGURES)
    assert "comparison" in _get(board, "/data/plugin/text/tags")["comparison"]
    experiment = _get(board, "/data/plugin/hparams/experiment", {"experimentName": ""})
    assert {h["name"] for h in experiment["hparamInfos"]} == set(viz.HPARAMS)
    assert {m["name"]["tag"] for m in experiment["metricInfos"]} >= set(viz.METRICS)
    groups = _get(board, "/data/plugin/hparams/session_groups",
                  {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
                   "colParams": [], "startIndex": 0, "sliceSize": 100})
    assert groups["totalSize"] == len(VARIANTS)
    techniques = sorted(g["hparams"]["technique"] for g in groups["sessionGroups"])
    assert techniques == ["baseline", "baseline", "prune", "prune", "prune+qat"]
    for group in groups["sessionGroups"]:
        tags = {m["name"]["tag"] for m in group["metricValues"]}
        assert {"accuracy", "latency_p50_ms", "agreement"} <= tags


def test_screenshot_in_headless_chromium(board, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "install the browser: apt-get update && apt-get install -y chromium"
    shot = tmp_path / "tensorboard.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000",
                    "--virtual-time-budget=20000", f"--screenshot={shot}",
                    f"{board}/?darkMode=false#images&tagFilter=tradeoff%7Csaliency_integrated"],
                   check=True, capture_output=True, timeout=180)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and _png_size(png) == (1400, 1000)
    pixels = tf.io.decode_png(png, channels=3).numpy()
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # rendered, not a blank page
    if os.environ.get("TFDEPLOY_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["TFDEPLOY_SCREENSHOT"])
