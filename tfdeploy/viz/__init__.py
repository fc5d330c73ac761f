"""Visualization and explanation: HParams, plots, saliency, reports (``tfdeploy.viz``).

Reads any stage's results; only orchestration (pipeline, commands, recipes)
imports it. Public API:

HParams (one TensorBoard session per compared variant; the shared tag set)
    ``log_hparams(log_dir, run, hparams, metrics) -> run_dir``
        ``hparams``: any of ``HPARAMS`` = technique (str), sparsity (float),
        clusters (int), slim_ratio (float), quantization (str), format (str),
        runtime (str); ``metrics``: any of ``METRICS`` = accuracy, gzip_bytes,
        latency_p50_ms, agreement. E.g. a tuner trial:
        ``log_hparams("logs/tune/hparams", f"trial_{i}", {"technique": "prune",
        "sparsity": 0.7}, {"accuracy": acc, "gzip_bytes": n})``.
    ``log_rows(log_dir, rows)``: every comparison row (keys as above; latency
        from ``ms_per_sample`` when ``latency_p50_ms`` is absent).
    ``log_plan(log_dir, plan_result.history, stages)``: every stage of a
        compression plan (technique = the stage kinds so far, e.g. "prune+cluster").

Report (``report.md`` + self-contained ``report.html`` + ``run.json`` + figures)
    ``write_report(run_dir, rows, class_names=None, y_true=None, predictions=None,
    figures=None, saliency=None, title=..., reference=None, compressed=None,
    notes=None)``; ``render_report(run_dir)`` re-renders (``tfdeploy report RUN_DIR``).

Everything at once (what the quickstart and recipes call)
    ``visualize(rows, x, y, class_names, targets, log_dir=..., report_dir=...,
    models={"float": keras_model, "int8 (QAT)": qat_model}, kernels=...,
    sparsity_logs=...)``: predictions and agreement per variant, HParams,
    figures as TensorBoard images (``log_dir/visuals``), the table as text, and
    the report.

Explanation: ``integrated_gradients``, ``grad_cam``, ``attribution_map``,
``saliency_agreement``, ``explain``. Plots (PNG bytes): ``tradeoff``,
``pareto_front``, ``sparsity_heatmap``, ``weight_distributions``,
``confusion_matrices``, ``recall_change``, ``saliency_panel``,
``standard_figures``. TensorBoard: ``log_images``, ``log_text``,
``read_sparsity``. Weights: ``model_kernels``, ``tflite_kernels``.
"""

from tfdeploy.viz.board import log_images, log_sensitivity, log_text, read_sparsity
from tfdeploy.viz.hparams import (HPARAMS, METRICS, log_hparams, log_plan, log_rows,
                                  row_hparams)
from tfdeploy.viz.plots import (CAPTIONS, confusion_matrices, pareto_front, recall_change,
                                saliency_panel, sensitivity_chart, sparsity_heatmap, standard_figures,
                                tradeoff,
                                weight_distributions)
from tfdeploy.viz.report import load_run, render_report, write_report
from tfdeploy.viz.saliency import (attribution_map, explain, grad_cam, integrated_gradients,
                                   saliency_agreement)
from tfdeploy.viz.visualize import markdown_table, predict_classes, visualize
from tfdeploy.viz.weights import model_kernels, tflite_kernels

__all__ = ["HPARAMS", "METRICS", "log_hparams", "log_rows", "log_plan", "row_hparams",
           "write_report",
           "render_report", "load_run", "visualize", "predict_classes", "markdown_table",
           "integrated_gradients", "grad_cam", "attribution_map", "saliency_agreement",
           "explain", "tradeoff", "pareto_front", "sparsity_heatmap", "weight_distributions",
           "confusion_matrices", "recall_change", "saliency_panel", "standard_figures",
           "CAPTIONS", "log_images", "log_text", "read_sparsity", "model_kernels",
           "tflite_kernels", "log_sensitivity", "sensitivity_chart"]
