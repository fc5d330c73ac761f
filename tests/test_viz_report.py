"""HParams sessions, plots and the report, read back from the files written."""

import base64
import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tfdeploy import tf, viz
from tfdeploy.cli import main
from tfdeploy.errors import DataError

ROWS = [
    {"variant": "float", "technique": "baseline", "format": "tflite", "runtime": "litert",
     "quantization": "float32", "sparsity": 0.0, "accuracy": 0.95, "gzip_bytes": 1600000,
     "ms_per_sample": 0.5},
    {"variant": "pruned", "technique": "prune", "format": "tflite", "runtime": "litert",
     "quantization": "float32", "sparsity": 0.8, "accuracy": 0.96, "gzip_bytes": 470000,
     "ms_per_sample": 0.6},
    {"variant": "int8", "technique": "prune+qat", "format": "tflite", "runtime": "litert",
     "quantization": "int8", "sparsity": 0.8, "accuracy": 0.94, "gzip_bytes": 140000,
     "ms_per_sample": 0.4, "agreement": 0.97},
]


def _session_start(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    return data.session_start_info, acc


def test_hparams_sessions_carry_the_shared_tags(tmp_path):
    runs = viz.log_rows(str(tmp_path), ROWS)
    assert len(runs) == 3
    root = EventAccumulator(str(tmp_path))
    root.Reload()
    exp = plugin_data_pb2.HParamsPluginData.FromString(
        root.SummaryMetadata("_hparams_/experiment").plugin_data.content).experiment
    assert [h.name for h in exp.hparam_infos] == list(viz.HPARAMS)
    assert [m.name.tag for m in exp.metric_infos] == list(viz.METRICS)
    info, acc = _session_start(runs[2])
    assert info.hparams["technique"].string_value == "prune+qat"
    assert info.hparams["quantization"].string_value == "int8"
    assert info.hparams["sparsity"].number_value == pytest.approx(0.8)
    assert info.hparams["clusters"].number_value == 0
    tags = set(acc.Tags()["tensors"])
    assert {"accuracy", "gzip_bytes", "latency_p50_ms", "agreement"} <= tags
    values = {t: float(tf.make_ndarray(acc.Tensors(t)[0].tensor_proto)) for t in tags
              if not t.startswith("_hparams_")}
    assert values["gzip_bytes"] == 140000 and values["latency_p50_ms"] == pytest.approx(0.4)
    assert all(e.step == 0 for t in tags for e in acc.Tensors(t))  # not stepped by row index
    # a tuner trial logs into the same experiment with the same call
    viz.log_hparams(str(tmp_path), "trial 7", {"technique": "cluster", "clusters": 16},
                    {"accuracy": 0.9})
    info, _ = _session_start(tmp_path / "trial_7")
    assert info.hparams["clusters"].number_value == 16


def test_plan_stages_become_sessions(tmp_path):
    from tfdeploy.compress import Stage

    stages = [Stage("prune", target_sparsity=0.7, epochs=2), Stage("cluster", n_clusters=8),
              Stage("quantize")]
    history = [{"stage": "baseline", "sparsity": 0.0, "accuracy": 0.95, "gzip_bytes": 900},
               {"stage": "prune", "sparsity": 0.7, "accuracy": 0.94, "gzip_bytes": 400},
               {"stage": "cluster", "sparsity": 0.7, "accuracy": 0.93, "gzip_bytes": 150},
               {"stage": "quantize", "sparsity": 0.7, "accuracy": 0.93, "gzip_bytes": 150}]
    runs = viz.log_plan(str(tmp_path), history, stages)
    assert [os.path.basename(r) for r in runs] == [
        "0_baseline", "1_prune", "2_prune_cluster", "3_prune_cluster_quantize"]
    info, acc = _session_start(runs[3])
    assert info.hparams["technique"].string_value == "prune+cluster+quantize"
    assert info.hparams["clusters"].number_value == 8
    assert info.hparams["quantization"].string_value == "int8"
    assert float(tf.make_ndarray(acc.Tensors("accuracy")[0].tensor_proto)) == pytest.approx(0.93)


def test_hparams_refuse_unknown_tags(tmp_path):
    with pytest.raises(DataError, match="Unknown hparams"):
        viz.log_hparams(str(tmp_path), "x", {"learning_rate": 0.1}, {})
    with pytest.raises(DataError, match="Unknown metrics"):
        viz.log_hparams(str(tmp_path), "x", {}, {"f1": 0.1})
    with pytest.raises(DataError, match="must be a float"):
        viz.log_hparams(str(tmp_path), "x", {"sparsity": "high"}, {})


def test_pareto_front_marks_the_undominated_variants():
    # size, accuracy: (3, .9) is beaten by (2, .95); the rest trade off
    assert viz.pareto_front([1, 2, 3, 4], [0.90, 0.95, 0.90, 0.97]) == [0, 1, 3]


def _png_size(png):
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_report_is_self_contained_and_lists_every_artifact(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    preds = {"float": y.copy(), "pruned": np.where(rng.random(60) < 0.1, (y + 1) % 3, y),
             "int8": np.where(rng.random(60) < 0.2, (y + 2) % 3, y)}
    clustered = np.repeat(np.linspace(-0.2, 0.2, 8), 64)
    figures = {"weight_distributions": viz.weight_distributions(
        {"float": {"dense": rng.normal(0, 0.1, 512)}, "clustered": {"dense": clustered}})}
    paths = viz.write_report(str(tmp_path), ROWS, ["cat", "dog", "eel"], y, preds, figures,
                             {"integrated_gradients": {"scores": {
                                 "float": {"spearman": 1.0, "topk_overlap": 1.0},
                                 "int8": {"spearman": 0.8, "topk_overlap": 0.7}}}})
    page = open(paths["html"]).read()
    md = open(paths["md"]).read()
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # every image is a data: URI
    assert "http://" not in page and "https://" not in page
    images = re.findall(r"src=\"data:image/png;base64,([^\"]+)\"", page)
    names = ("tradeoff", "confusion_matrices", "recall_change", "weight_distributions")
    assert len(images) == len(names)
    for data in images:
        w, h = _png_size(base64.b64decode(data))
        assert w > 300 and h > 200
    for variant in ("float", "pruned", "int8"):
        assert f"<td>{variant}</td>" in page and f"### {variant}" in md
    for col in ("precision", "recall", "f1-score", "support", "macro avg", "weighted avg"):
        assert col in md
    assert "| eel |" in md and "0.800" in md  # the per-class rows and the saliency table
    for name in names:
        assert f"figures/{name}.png" in md and os.path.isfile(tmp_path / "figures" / f"{name}.png")
    # tfdeploy report RUN_DIR re-renders the saved run
    os.remove(paths["html"])
    assert main(["report", str(tmp_path)]) == 0
    assert open(paths["html"]).read().count("data:image/png;base64,") == len(names)


def test_report_command_explains_a_missing_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 1
    assert "holds no run.json" in capsys.readouterr().err


# The quickstart's five artifacts with every comparison column filled (13 columns): three
# variants tie on accuracy, two on file size, three nearly on latency.
QUICKSTART_ROWS = [
    {"variant": v, "technique": t, "format": f, "runtime": rt, "quantization": q,
     "params": 434890, "sparsity": sp, "file_bytes": fb, "gzip_bytes": gz, "accuracy": acc,
     "agreement": ag, "ms_per_sample": ms, "latency_p50_ms": ms}
    for v, t, f, rt, q, sp, fb, gz, acc, ag, ms in [
        ("keras baseline float32", "baseline", "keras", "keras", "float32", 0.0, None, None,
         0.9304, 1.0, 10.282),
        ("tflite baseline float32", "baseline", "tflite", "litert", "float32", 0.0, 1744824,
         1611924, 0.9304, 1.0, 0.425),
        ("saved_model pruned float32", "prune", "saved_model", "tensorflow", "float32", 0.8,
         1926229, 512013, 0.9666, 0.98, 1.838),
        ("tflite pruned float32", "prune", "tflite", "litert", "float32", 0.8, 1744824, 472756,
         0.9666, 0.98, 0.416),
        ("tflite pruned+QAT int8", "prune+qat", "tflite", "litert", "int8", 0.8, 450968, 142600,
         0.9666, 0.97, 0.416)]]


def _text_boxes(ax, renderer):
    from matplotlib.text import Text

    return {t.get_text(): Text.get_window_extent(t, renderer) for t in ax.texts}


def test_tradeoff_labels_of_tied_variants_stay_apart():
    tied = QUICKSTART_ROWS + [dict(QUICKSTART_ROWS[-1], variant="tflite pruned+QAT int8 copy")]
    fig = viz.plots.tradeoff_figure(tied)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    for ax, expected in zip(fig.axes, (5, 6)):  # the Keras model has no file: no size point
        boxes = _text_boxes(ax, renderer)
        assert len(boxes) == expected, boxes.keys()
        names = list(boxes)
        for i, a in enumerate(names):
            box = boxes[a]
            assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1, (a, box)
            assert canvas.y0 <= box.y0 and box.y1 <= canvas.y1, (a, box)
            for b in names[:i]:
                assert not box.overlaps(boxes[b]), f"labels {a!r} and {b!r} overlap"
        legend = ax.get_legend().get_window_extent(renderer)
        assert not any(box.overlaps(legend) for box in boxes.values())
    assert _png_size(viz.tradeoff(tied))[0] == 12 * 90  # the PNG is drawn from this figure


def _layout_in_chromium(page, width, tmp_path):
    """Open ``page`` in headless Chromium at ``width`` px and measure its layout there."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "install the browser: apt-get update && apt-get install -y chromium"
    probe = tmp_path / f"probe_{width}.html"
    script = ("<script>(function(){const d=document.documentElement;"
              "const t=[...document.querySelectorAll('table')].map(e=>{"
              "const r=e.getBoundingClientRect();return [r.left,r.right]});"
              "document.body.setAttribute('data-layout',JSON.stringify({viewport:d.clientWidth,"
              "page:d.scrollWidth,tables:t}));})();</script>")
    probe.write_text(page.replace("</body>", script + "</body>"))
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
                          f"--window-size={width},900", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=180, check=True)
    found = re.search(r'data-layout="([^"]+)"', out.stdout)
    assert found, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_report_tables_fit_the_page_at_1200px_in_chromium(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 80)
    preds = {r["variant"]: np.where(rng.random(80) < 0.05, (y + 1) % 10, y)
             for r in QUICKSTART_ROWS}
    paths = viz.write_report(str(tmp_path / "run"), QUICKSTART_ROWS, [str(i) for i in range(10)],
                             y, preds)
    page = open(paths["html"]).read()
    assert page.count("<th>") >= 13  # every comparison column is there
    wide = _layout_in_chromium(page, 1200, tmp_path)
    assert wide["viewport"] == 1200
    assert wide["page"] <= wide["viewport"], wide  # nothing runs off the right edge
    assert len(wide["tables"]) == 1 + len(QUICKSTART_ROWS)
    for left, right in wide["tables"]:  # every table wholly visible, not scrolled
        assert 0 <= left and right <= wide["viewport"], wide
    narrow = _layout_in_chromium(page, 700, tmp_path)
    assert narrow["page"] <= narrow["viewport"], narrow  # too narrow: it scrolls in its box
