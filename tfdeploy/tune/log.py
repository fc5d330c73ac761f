"""Record of a search: one JSON and one CSV of every trial, and TensorBoard HParams per trial."""

import csv
import json
import os

from tfdeploy._atomic import atomic_file
from tfdeploy._json import write_json

RESULT_FILE = "result.json"
# HParams tags shared with tfdeploy.viz and the recipes (see the team brief).
HPARAM_TAGS = ("technique", "sparsity", "clusters", "slim_ratio", "quantization", "format",
               "runtime")
#: The HParams metric columns of a search's experiment (`log_hparams`), each a column.
METRICS = {
    "validation_accuracy": "top-1 accuracy of the trial's artifact on the validation split "
                           "(held out from the training data; the search chooses on it)",
    "gzip_bytes": "artifact size after gzip",
    "latency_p50_ms": "median ms per sample at batch size 1, one thread",
    "agreement": "share of validation samples whose top class matches the trial's Keras model",
    "cost": "the oracle's objective (lower is better; infeasible trials above 1)",
    "feasible": "1 when the validation-accuracy drop is within the budget, else 0",
    "accuracy_drop": "validation-accuracy points below the float baseline",
    "test_accuracy": "top-1 accuracy on the test split: the best trial only, after the search",
}
_COLUMNS = ("trial_id", "status", "feasible", "cost", "validation_accuracy", "accuracy_drop",
            "test_accuracy", "gzip_bytes", "latency_p50_ms", "agreement", "technique", "slim_ratio", "sparsity_kind", "sparsity",
            "schedule", "clusters", "qat", "qat_layers", "quantization", "learning_rate",
            "epochs", "tuner_id", "seconds")


def read_result(trial_dir):
    """The result a tuner wrote into ``trial_dir``, or None (trial not finished)."""
    path = os.path.join(trial_dir, RESULT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_trials(rows, json_path, csv_path):
    """Write every trial's row to ``json_path`` (a list) and ``csv_path`` (one line each)."""
    write_json(json_path, rows)
    with atomic_file(csv_path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(_COLUMNS), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in _COLUMNS})
    return json_path, csv_path


def hparams_of(row):
    """The HParams dict of a trial row, under the shared tag names."""
    return {"technique": row["technique"],
            "sparsity": float(row.get("sparsity") or (0.5 if row.get("sparsity_kind") == "n_m"
                                                      else 0.0)),
            "clusters": int(row.get("clusters") or 0),
            "slim_ratio": float(row.get("slim_ratio") or 0.0),
            "quantization": row["quantization"], "format": "tflite", "runtime": "litert"}


def log_hparams(log_dir, row):
    """Log one trial as a TensorBoard HParams session ``log_dir/trial_<id>``.

    Through `tfdeploy.viz.log_hparams`, with the shared hyperparameter tags and
    the search's own metric columns (`METRICS`: validation accuracy, size,
    latency, agreement, cost, feasible, accuracy drop; ``test_accuracy`` is
    added to the best trial's session by `log_test_accuracy`).
    """
    from tfdeploy.viz import log_hparams as viz_log_hparams

    metrics = {k: float(row[k]) for k in METRICS if row.get(k) is not None}
    return viz_log_hparams(log_dir, f"trial_{row['trial_id']}", hparams_of(row), metrics,
                           columns=METRICS)


def log_test_accuracy(log_dir, row):
    """Add ``test_accuracy`` to the best trial's HParams session (its column in `METRICS`)."""
    from tfdeploy._keras import tf

    writer = tf.summary.create_file_writer(os.path.join(log_dir, f"trial_{row['trial_id']}"))
    with writer.as_default(step=0):
        tf.summary.scalar("test_accuracy", float(row["test_accuracy"]))
    writer.close()
