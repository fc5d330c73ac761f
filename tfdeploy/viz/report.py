"""``report.md`` + a self-contained ``report.html`` for a run: table, per-class reports, plots.

`write_report` saves what it was given to ``RUN_DIR/run.json`` and
``RUN_DIR/figures/*.png`` and renders both documents from them;
`render_report` (``tfdeploy report RUN_DIR``) renders them again from the saved
run. The HTML embeds every image as a ``data:`` URI and loads nothing from
the network.
"""

import base64
import datetime
import html
import json
import os
import re

import numpy as np

from tfdeploy.errors import DataError
from tfdeploy._atomic import atomic_file
from tfdeploy.verify import classification_report

RUN_FILE = "run.json"
_COLUMNS = (("variant", "variant", "{}"), ("technique", "technique", "{}"),
            ("format", "format", "{}"), ("runtime", "runtime", "{}"),
            ("quantization", "quantization", "{}"), ("params", "params", "{:,}"),
            ("sparsity", "sparsity", "{:.1%}"), ("file_bytes", "file bytes", "{:,}"),
            ("gzip_bytes", "gzip bytes", "{:,}"), ("accuracy", "accuracy", "{:.2%}"),
            ("agreement", "agreement", "{:.2%}"), ("ms_per_sample", "ms/sample", "{:.3f}"),
            ("latency_p50_ms", "p50 ms", "{:.3f}"))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write(path, data, mode="w"):
    with atomic_file(path) as tmp:
        with open(tmp, mode) as f:
            f.write(data)


def _slug(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "figure"


def write_report(run_dir, rows, class_names=None, y_true=None, predictions=None,
                 figures=None, saliency=None, title="tfdeploy report", reference=None,
                 compressed=None, notes=None):
    """Save a run and write ``report.md`` and ``report.html`` into ``run_dir``.

    Args:
        run_dir: output directory (created).
        rows: comparison rows, one dict per variant (``variant``, ``accuracy``,
            ``gzip_bytes``, ``ms_per_sample`` ... as the quickstart returns them).
        class_names: names per class index (needed with ``predictions``).
        y_true: test labels; with ``predictions`` enables the per-class reports,
            confusion matrices and recall-change plot.
        predictions: ``{variant: predicted class per test sample}``.
        figures: ``{name: PNG bytes}`` already rendered (e.g. the ones logged to
            TensorBoard); the standard ones missing here are rendered from the
            rows and predictions (`tfdeploy.viz.standard_figures`).
        saliency: ``{"method": {"scores": {variant: {"spearman", "topk_overlap"}}}}``
            as `tfdeploy.viz.explain` returns per method (maps are not saved);
            the panels go in ``figures`` as ``saliency_<method>``.
        title: report title. reference / compressed: the variants compared in the
            recall-change plot (default: first and last with predictions).
        notes: optional list of extra lines (timings, settings) for the report.

    Returns:
        ``{"md": path, "html": path, "run": path}``.

    Example:
        >>> write_report("reports/quickstart", result["rows"], class_names, y, preds)
    """
    from tfdeploy.viz.plots import standard_figures

    if not rows:
        raise DataError("write_report needs at least one comparison row.")
    predictions = {k: np.asarray(v).astype(int).tolist() for k, v in (predictions or {}).items()}
    if predictions and (y_true is None or class_names is None):
        raise DataError("predictions need y_true and class_names for the per-class reports.")
    figs = dict(figures or {})
    figs.update(standard_figures(rows, y_true, predictions, class_names, reference, compressed,
                                 skip=set(figs)))
    os.makedirs(os.path.join(run_dir, "figures"), exist_ok=True)
    names = []
    for name, png in figs.items():
        slug = _slug(name)
        _write(os.path.join(run_dir, "figures", f"{slug}.png"), png, "wb")
        names.append(slug)
    run = {"title": title, "created": datetime.datetime.now(datetime.timezone.utc)
           .strftime("%Y-%m-%d %H:%M UTC"), "rows": _jsonable(rows),
           "class_names": None if class_names is None else [str(c) for c in class_names],
           "y_true": None if y_true is None else np.asarray(y_true).astype(int).tolist(),
           "predictions": predictions, "figures": names, "saliency": _jsonable(saliency or {}),
           "notes": list(notes or [])}
    _write(os.path.join(run_dir, RUN_FILE), json.dumps(run, indent=1, default=str))
    return render_report(run_dir)


def load_run(run_dir):
    """The saved run (``run_dir/run.json``) as a dict."""
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.isfile(path):
        raise DataError(f"{run_dir!r} holds no {RUN_FILE}; write one with "
                        "tfdeploy.viz.write_report (the quickstart does) first.")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path!r} is not valid JSON ({exc}).") from None


def _cell(row, key, fmt):
    value = row.get(key)
    if value is None or value == "":
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _blocks(run, run_dir):
    """The report as a list of blocks shared by the Markdown and HTML renderers."""
    rows = run["rows"]
    cols = [(k, h, f) for k, h, f in _COLUMNS if any(r.get(k) is not None for r in rows)]
    out = [("h1", run.get("title", "tfdeploy report")),
           ("p", f"Generated {run.get('created', '')} by tfdeploy."),
           ("h2", "Comparison"),
           ("table", [h for _, h, _ in cols], [[_cell(r, k, f) for k, _, f in cols]
                                               for r in rows])]
    for line in run.get("notes") or []:
        out.append(("p", line))
    figures = list(run.get("figures") or [])
    from tfdeploy.viz.plots import CAPTIONS

    def figure(name):
        if name in figures:
            figures.remove(name)
            caption = CAPTIONS.get(name) or CAPTIONS.get(name.split("_")[0], "")
            out.append(("img", name, os.path.join(run_dir, "figures", f"{name}.png"), caption))

    figure("tradeoff")
    preds, y = run.get("predictions") or {}, run.get("y_true")
    if preds and y is not None:
        out.append(("h2", "Per-class classification report"))
        for variant, pred in preds.items():
            rep = classification_report(y, pred, run["class_names"])
            out.append(("h3", variant))
            body = [[name, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                     str(r["support"])] for name, r in rep["classes"].items()]
            body += [[avg, f"{rep[avg]['precision']:.3f}", f"{rep[avg]['recall']:.3f}",
                      f"{rep[avg]['f1']:.3f}", str(rep[avg]["support"])]
                     for avg in ("micro avg", "macro avg", "weighted avg")]
            body.append(["accuracy", "", "", f"{rep['accuracy']:.3f}", str(len(y))])
            out.append(("table", ["class", "precision", "recall", "f1-score", "support"], body))
        figure("confusion_matrices")
        figure("recall_change")
    if any(n in figures for n in ("sparsity_heatmap", "weight_distributions")):
        out.append(("h2", "Sparsity and weights"))
        figure("sparsity_heatmap")
        figure("weight_distributions")
    saliency = run.get("saliency") or {}
    if saliency or any(n.startswith("saliency") for n in figures):
        out.append(("h2", "Explanation: did compression change what the model looks at?"))
        out.append(("p", "Saliency agreement with the float model per variant: ρ is the rank "
                         "correlation of the two saliency maps over pixels (1 = same ordering, "
                         "0 = unrelated); top-k is the share of the 10 % most salient pixels "
                         "both maps pick (chance ≈ 0.1)."))
        for method, entry in saliency.items():
            scores = entry.get("scores", {})
            out.append(("h3", method.replace("_", " ")))
            out.append(("table", ["variant", "rank correlation ρ", "top-k overlap"],
                        [[v, f"{s['spearman']:.3f}", f"{s['topk_overlap']:.3f}"]
                         for v, s in scores.items()]))
            figure(f"saliency_{method}")
    if figures:
        out.append(("h2", "More figures"))
        for name in list(figures):
            figure(name)
    return out


def _md(blocks):
    lines = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            head, body = block[1], block[2]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head)))
                         + "|")
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |"
                      for r in body]
            lines.append("")
        elif kind == "img":
            _, name, _, caption = block
            lines += [f"![{name}](figures/{name}.png)", "", f"*{caption}*" if caption else "", ""]
    return "\n".join(lines).rstrip() + "\n"


# Tables sit in a scrolling box, so a table wider than the page scrolls inside it instead of
# running off the page's right edge; compact cells and headers that wrap keep the comparison
# table (13 columns) inside 1200 px (tests/test_viz_report.py measures it in Chromium).
_CSS = ("body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;"
        "margin:2em auto;padding:0 1em;color:#222}"
        ".table{max-width:100%;overflow-x:auto;margin:1em 0}"
        "table{border-collapse:collapse;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}"
        "th{white-space:normal;min-width:3em;vertical-align:bottom;background:#f3f3f3}"
        "th:first-child,td:first-child{text-align:left;white-space:normal;min-width:8em}"
        "img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}"
        "figcaption{color:#555;font-size:90%}")


def _html(blocks):
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{e(blocks[0][1])}</title><style>{_CSS}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{e(block[1])}</p>")
        elif kind == "table":
            parts.append("<div class=\"table\"><table><thead><tr>"
                         + "".join(f"<th>{e(h)}</th>" for h in block[1]) + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>"
                      for r in block[2]]
            parts.append("</tbody></table></div>")
        elif kind == "img":
            _, name, path, caption = block
            with open(path, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            parts.append(f"<figure><img alt=\"{e(name)}\" src=\"data:image/png;base64,{data}\">"
                         f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_report(run_dir):
    """Render ``report.md`` and ``report.html`` from a saved run (``tfdeploy report``).

    Returns:
        ``{"md": path, "html": path, "run": path}``.

    Raises:
        DataError: ``run_dir`` has no ``run.json`` or a figure it lists is missing.
    """
    run = load_run(run_dir)
    for name in run.get("figures") or []:
        if not os.path.isfile(os.path.join(run_dir, "figures", f"{name}.png")):
            raise DataError(f"{run_dir!r}: figure {name!r} listed in {RUN_FILE} is missing "
                            f"(figures/{name}.png); run write_report again.")
    blocks = _blocks(run, run_dir)
    md, page = os.path.join(run_dir, "report.md"), os.path.join(run_dir, "report.html")
    _write(md, _md(blocks))
    _write(page, _html(blocks))
    return {"md": md, "html": page, "run": os.path.join(run_dir, RUN_FILE)}
