"""One call that turns a comparison into TensorBoard HParams/images/text and a report."""

import time

import numpy as np

from tfdeploy.errors import DataError
from tfdeploy.viz import board, hparams, plots, report, saliency


def predict_classes(target, x, batch_size=64):
    """Predicted class per sample of a runtime runner or a Keras-like object with ``predict``."""
    out = []
    for i in range(0, len(x), batch_size):
        out.append(np.argmax(np.asarray(target.predict(x[i:i + batch_size])), axis=-1))
    return np.concatenate(out)


def markdown_table(rows):
    """The comparison rows as a Markdown table (TensorBoard's Text tab renders it)."""
    return report._md([("table", *_table(rows))])


def _table(rows):
    cols = [(k, h, f) for k, h, f in report._COLUMNS if any(r.get(k) is not None for r in rows)]
    return [h for _, h, _ in cols], [[report._cell(r, k, f) for k, _, f in cols] for r in rows]


def visualize(rows, x, y, class_names, targets, log_dir=None, report_dir=None,
              models=None, kernels=None, sparsity_logs=None, n_images=4,
              methods=("integrated_gradients", "grad_cam"), steps=50, title="tfdeploy report",
              reference=None, compressed=None, notes=None):
    """Everything visual for a comparison of variants, written once and used twice.

    Adds ``agreement`` (top-1 agreement with the reference variant) to each
    row; logs every row as an HParams session under
    ``log_dir/hparams``; renders the figures (tradeoff + Pareto front,
    confusion matrices, recall change, sparsity heatmap, weight distributions,
    saliency panels), logs them as images under ``log_dir/visuals`` and the
    table as text under ``log_dir/comparison``, and writes the report into
    ``report_dir``.

    Args:
        rows: comparison rows (dicts with at least ``variant``, ``accuracy``).
        x, y: test inputs and integer labels.
        class_names: names per class index.
        targets: ``{variant: runner or object with predict(x)}``, reference first;
            the variants match the rows' ``variant``.
        log_dir: TensorBoard root (None: no TensorBoard output).
        report_dir: where ``report.md``/``report.html`` go (None: no report).
        models: ``{name: Keras model}`` to explain, the float model first (None:
            no saliency).
        kernels: ``{stage: {layer: kernel}}`` for the weight distributions.
        sparsity_logs: ``{stage: log_dir given to compress.callbacks}`` for the
            sparsity heatmap.
        n_images: test images explained (the first of distinct classes).
        methods: saliency methods. steps: integrated-gradients steps.
        title, reference, compressed, notes: as in `write_report`.

    Returns:
        ``{"rows", "predictions", "figures" (names), "saliency" (scores),
        "report" (paths or None), "seconds"}``.
    """
    start = time.perf_counter()
    x, y = np.asarray(x), np.asarray(y).astype(int)
    variants = [r["variant"] for r in rows]
    missing = [v for v in targets if v not in variants]
    if missing:
        raise DataError(f"targets {missing} match no row; rows are {variants}.")
    predictions = {name: predict_classes(t, x) for name, t in targets.items()}
    ref = reference or next(iter(predictions))
    for r in rows:
        if r["variant"] in predictions:
            r["agreement"] = float(np.mean(predictions[r["variant"]] == predictions[ref]))
    figures = plots.standard_figures(rows, y, predictions, class_names, ref, compressed)
    if sparsity_logs:
        history = board.read_sparsity(sparsity_logs)
        if history["layers"]:
            figures["sparsity_heatmap"] = plots.sparsity_heatmap(history)
    if kernels:
        figures["weight_distributions"] = plots.weight_distributions(kernels)
    scores = {}
    if models and n_images:
        picks = [int(np.flatnonzero(y == c)[0]) for c in np.unique(y)][:n_images]
        images = x[picks]
        for method in methods:
            result = saliency.explain(models, images, method, steps=steps)
            scores[method] = {"scores": result["scores"]}
            figures[f"saliency_{method}"] = plots.saliency_panel(
                images, result["maps"], result["scores"], method.replace("_", " "))
    if log_dir:
        hparams.log_rows(f"{log_dir}/hparams", rows)
        board.log_images(f"{log_dir}/visuals", figures)
        board.log_text(f"{log_dir}/comparison", "comparison", markdown_table(rows))
    paths = None
    if report_dir:
        paths = report.write_report(report_dir, rows, class_names, y, predictions, figures,
                                    scores, title, ref, compressed, notes)
    return {"rows": rows, "predictions": predictions, "figures": list(figures),
            "saliency": scores, "report": paths, "seconds": time.perf_counter() - start}
