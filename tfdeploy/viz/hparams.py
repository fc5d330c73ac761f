"""Log compared variants to TensorBoard's HParams plugin (one session per variant).

Every variant (a quickstart row, a plan stage, a tuner trial, a recipe's
artifact) becomes one HParams session: a run directory ``LOG_DIR/<run>``
holding the hyperparameters and the metrics as scalars at step 0. The
experiment (which columns the HParams table shows) is written once at
``LOG_DIR``. The same tag set is shared by every caller, so trials of the tuner
and rows of the quickstart sit in one comparable table.
"""

import os
import re

from tfdeploy._keras import tf  # before the HParams api, which resolves tf.keras
from tfdeploy.errors import DataError

from tensorboard.plugins.hparams import api as hp  # noqa: E402,I100

#: Hyperparameter tags and their value types.
HPARAMS = {"technique": str, "sparsity": float, "clusters": int, "slim_ratio": float,
           "quantization": str, "format": str, "runtime": str}
#: Metric tags (scalars under each session's run directory) and what they mean.
METRICS = {"accuracy": "top-1 accuracy on the test data",
           "gzip_bytes": "artifact size after gzip",
           "latency_p50_ms": "median ms per sample at batch size 1",
           "agreement": "share of test samples whose top class matches the float model",
           "recall_at_1": "retrieval: share of test queries whose answer ranks first",
           "recall_at_k": "retrieval: share of test queries whose answer is in the top k",
           "mrr": "retrieval/recommendation: mean reciprocal rank of the held-out answer/item",
           "hr_at_k": "recommendation: hit rate of the held-out item in the top k (seen "
                      "items filtered)",
           "ndcg_at_k": "recommendation: NDCG of the held-out item at k"}
#: Comparison-row keys (recipes) -> metric tags.
_ROW_METRICS = {"recall@1": "recall_at_1", "recall@k": "recall_at_k", "mrr": "mrr",
                "hr@k": "hr_at_k", "ndcg@k": "ndcg_at_k"}
_DEFAULTS = {"technique": "none", "sparsity": 0.0, "clusters": 0, "slim_ratio": 0.0,
             "quantization": "float32", "format": "keras", "runtime": "keras"}
_CONFIG_MARK = ".tfdeploy_hparams_config"


def _slug(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "run"


def _clean_hparams(hparams):
    unknown = sorted(set(hparams) - set(HPARAMS))
    if unknown:
        raise DataError(f"Unknown hparams {unknown}; the tags are {list(HPARAMS)}.")
    out = dict(_DEFAULTS)
    for key, value in hparams.items():
        if value is None:
            continue
        try:
            out[key] = HPARAMS[key](value)
        except (TypeError, ValueError):
            raise DataError(f"hparam {key!r} must be a {HPARAMS[key].__name__}, "
                            f"received {value!r}.") from None
    return out


def _clean_metrics(metrics, columns):
    unknown = sorted(set(metrics) - set(columns))
    if unknown:
        raise DataError(f"Unknown metrics {unknown}; the tags are {list(columns)}.")
    out = {}
    for key, value in metrics.items():
        if value is None:
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise DataError(f"metric {key!r} must be a number, received {value!r}.") from None
    return out


def write_config(log_dir, metrics=None):
    """Write the HParams experiment at ``log_dir`` once: columns `HPARAMS` + ``metrics``
    (``{tag: description}``; defaults to `METRICS`)."""
    mark = os.path.join(log_dir, _CONFIG_MARK)
    if os.path.exists(mark):
        return
    os.makedirs(log_dir, exist_ok=True)
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        hp.hparams_config(
            hparams=[hp.HParam(name) for name in HPARAMS],
            metrics=[hp.Metric(name, display_name=name, description=text)
                     for name, text in (metrics or METRICS).items()])
    writer.close()
    with open(mark, "w") as f:
        f.write("hparams experiment config written\n")


def log_hparams(log_dir, run, hparams, metrics, columns=None):
    """Log one variant as an HParams session under ``log_dir/<run>``.

    Args:
        log_dir: the experiment directory (e.g. ``logs/quickstart/hparams``);
            the experiment config is written there on first use.
        run: the variant's name (made path-safe; also the session's trial id).
        hparams: dict with any of `HPARAMS` (missing ones get neutral defaults:
            technique "none", sparsity 0, clusters 0, slim_ratio 0,
            quantization "float32", format/runtime "keras").
        metrics: dict with any of `METRICS` (or of ``columns``); None values are
            left out.
        columns: ``{tag: description}`` of the experiment's metric columns, for a
            caller whose numbers are not `METRICS` (the tuner's validation
            accuracy, cost, feasibility). The first session written to
            ``log_dir`` sets the experiment. Defaults to None (`METRICS`).

    Returns:
        The session's run directory.

    Raises:
        DataError: an unknown tag or a value of the wrong type.

    Example:
        >>> log_hparams("logs/hparams", "int8 tflite", {"technique": "prune+qat",
        ...             "sparsity": 0.8, "quantization": "int8", "format": "tflite",
        ...             "runtime": "litert"}, {"accuracy": 0.97, "gzip_bytes": 20466})
    """
    columns = columns or METRICS
    values, numbers = _clean_hparams(hparams), _clean_metrics(metrics, columns)
    write_config(log_dir, columns)
    run_dir = os.path.join(log_dir, _slug(run))
    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default(step=0):
        hp.hparams(values, trial_id=str(run))
        for key, value in numbers.items():
            tf.summary.scalar(key, value)
    writer.close()
    return run_dir


def row_hparams(row):
    """Split a comparison row (quickstart/recipe dict) into ``(hparams, metrics)``.

    Reads the `HPARAMS` keys present in the row, and the metrics from
    ``accuracy``, ``gzip_bytes``, ``latency_p50_ms`` (or ``ms_per_sample``),
    ``agreement``, and the recipes' ranking metrics ``recall@1``, ``recall@k``,
    ``mrr``, ``hr@k``, ``ndcg@k`` (as ``recall_at_1`` ... ``ndcg_at_k``).
    """
    hparams = {k: row[k] for k in HPARAMS if row.get(k) is not None}
    metrics = {"accuracy": row.get("accuracy"), "gzip_bytes": row.get("gzip_bytes"),
               "latency_p50_ms": row.get("latency_p50_ms", row.get("ms_per_sample")),
               "agreement": row.get("agreement")}
    metrics.update({tag: row[key] for key, tag in _ROW_METRICS.items()
                    if row.get(key) is not None})
    return hparams, metrics


def log_rows(log_dir, rows, name_key="variant"):
    """`log_hparams` for every comparison row; returns the run directories."""
    out = []
    for i, row in enumerate(rows):
        hparams, metrics = row_hparams(row)
        out.append(log_hparams(log_dir, f"{i}_{row.get(name_key, i)}", hparams, metrics))
    return out


def log_plan(log_dir, history, stages=None):
    """Log every entry of a compression plan's history as an HParams session.

    Entry ``i`` is the model after the first ``i`` stages (entry 0 the input
    model): ``technique`` joins the stage kinds so far ("prune+cluster"),
    ``sparsity`` is the measured kernel sparsity, ``clusters`` / ``slim_ratio``
    come from the stages' settings, ``quantization`` is "int8" once a quantize
    stage ran (QAT; the exporter converts), and the metrics are the entry's
    accuracy and gzip bytes.

    Args:
        log_dir: the experiment directory.
        history: ``PlanResult.history`` (or the `PlanResult` itself).
        stages: the plan's stages (`tfdeploy.compress.Stage` objects), for the
            cluster count and slim ratio. Defaults to None (those stay 0).

    Returns:
        The session run directories.
    """
    history = getattr(history, "history", history)
    stages = list(stages or [])
    kinds, clusters, ratio, out = [], 0, 0.0, []
    for i, entry in enumerate(history):
        if i:
            kinds.append(entry.get("stage", "stage"))
            stage = stages[i - 1] if i - 1 < len(stages) else None
            params = getattr(stage, "params", {}) or {}
            clusters = int(params.get("n_clusters", 16)) if kinds[-1] == "cluster" else clusters
            ratio = float(params.get("ratio", 0.5)) if kinds[-1] == "slim" else ratio
        technique = "+".join(kinds) or "baseline"
        hparams = {"technique": technique, "sparsity": entry.get("sparsity"),
                   "clusters": clusters, "slim_ratio": ratio,
                   "quantization": "int8" if "quantize" in kinds else "float32"}
        metrics = {"accuracy": entry.get("accuracy"), "gzip_bytes": entry.get("gzip_bytes")}
        out.append(log_hparams(log_dir, f"{i}_{technique}", hparams, metrics))
    return out
