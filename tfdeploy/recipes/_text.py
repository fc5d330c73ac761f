"""What the three text recipes share beyond the harness (`tfdeploy.recipes._harness`): their
flags, fitting with TensorBoard, measuring artifacts, the TensorBoard comparison and the
report. Not a recipe itself (leading underscore)."""

import os
import time

import numpy as np

from tfdeploy.recipes._harness import add_run_arguments, format_table


def add_common_arguments(p, name, data_help, epochs=4):
    add_run_arguments(p, name, data_help, epochs)
    p.add_argument("--lr", type=float, default=3e-3,
                   help="Adam learning rate for training; fine-tuning uses a third of it "
                        "(default: %(default)s)")
    p.add_argument("--fine-tune-epochs", type=int, default=2,
                   help="pruning fine-tune epochs (default: %(default)s)")
    p.add_argument("--sparsity", type=float, default=0.6,
                   help="pruning target sparsity (default: %(default)s)")
    p.add_argument("--sequence-length", type=int, default=24,
                   help="token ids per text (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=5000,
                   help="vocabulary size incl. padding and OOV (default: %(default)s)")
    p.add_argument("--embed-dim", type=int, default=32,
                   help="embedding width (default: %(default)s)")


def add_no_serve(p):
    p.add_argument("--no-serve", action="store_true",
                   help="export only; skip starting the server and the served checks")


def callbacks(log_dir, stage, extra=()):
    """``extra`` + a TensorBoard callback writing to ``log_dir/stage`` (None: no logging)."""
    from tfdeploy._keras import keras
    out = list(extra)
    if log_dir:
        out.append(keras.callbacks.TensorBoard(log_dir=os.path.join(log_dir, stage),
                                               histogram_freq=1))
    return out


def params(model):
    return int(model.count_params())


def sizes(path):
    from tfdeploy import verify
    return {"file_bytes": verify.path_bytes(path), "gzip_bytes": verify.gzip_bytes(path)}


def p50_ms(fn, inputs, samples=50):
    """Median milliseconds of ``fn(one input)`` at batch 1."""
    from tfdeploy import verify
    return verify.latency_ms(_Callable(fn), inputs, samples=samples)


class _Callable:
    def __init__(self, fn):
        self.fn = fn

    def predict(self, x):
        return self.fn(x)

    def run(self, x):
        return self.fn(x)


def keras_fn(model):
    """Batch → numpy through a traced ``tf.function`` (``model.predict`` adds ~50 ms per call,
    an eager call pays Python overhead per layer)."""
    from tfdeploy._keras import tf
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda x: fn(tf.convert_to_tensor(x)).numpy()


def embed(fn, inputs, batch_size=64):
    """Run ``fn`` over ``inputs`` (array or list) in batches and stack the results."""
    out = [np.asarray(fn(inputs[i:i + batch_size])) for i in range(0, len(inputs), batch_size)]
    return np.concatenate(out).astype(np.float32)





def rest_latency_ms(client, name, instances, repeats=20):
    """Median milliseconds of one REST predict of ``instances`` (after one warm call)."""
    client.predict(name, instances=instances)
    times = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        client.predict(name, instances=instances)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def viz_rows(rows):
    """The rows with the keys `tfdeploy.viz` reads (``latency_p50_ms``), paths left out."""
    return [{**{k: v for k, v in r.items() if k not in ("path", "paths")},
             "latency_p50_ms": r.get("p50_ms")} for r in rows]


def log_comparison(log_dir, rows, columns, title):
    """TensorBoard: the table as text, one scalar per numeric column, HParams per variant."""
    from tfdeploy import viz
    from tfdeploy._keras import tf

    if not log_dir:
        return
    writer = tf.summary.create_file_writer(os.path.join(log_dir, "comparison"))
    with writer.as_default(step=0):
        table = format_table(rows, columns)
        tf.summary.text(title, "```\n" + table + "\n```")
        for row in rows:
            for key, _, _ in columns:
                value = row.get(key)
                if isinstance(value, (int, float, np.integer, np.floating)) and \
                        not isinstance(value, bool):
                    tf.summary.scalar(f"{key}/{row['variant']}", float(value))
    writer.flush()
    writer.close()
    viz.log_rows(os.path.join(log_dir, "hparams"), viz_rows(rows))


def write_report(run_dir, title, rows, columns, sections, class_names=None, y_true=None,
                 predictions=None, figures=None):
    """The run's report through `tfdeploy.viz.write_report` (report.md/.html, figures), plus
    ``details.md``: the full table (recall columns included) and the named sections
    (compression reports, tfmot QAT coverage, TFLite embedding dtypes, alerts).

    Returns:
        The path of ``report.md``; None when ``run_dir`` is None (``--logs ''``: no report).
    """
    from tfdeploy import viz

    if run_dir is None:
        return None
    os.makedirs(run_dir, exist_ok=True)
    parts = [f"# {title}: details", "", "```", format_table(rows, columns), "```", ""]
    for heading, body in sections.items():
        parts += [f"## {heading}", "", body.rstrip(), ""]
    with open(os.path.join(run_dir, "details.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    notes = []
    for key, header, fmt in columns:
        if key.startswith("recall"):
            notes.append(f"{header}: " + ", ".join(
                f"{r['variant']} {fmt.format(r[key])}" for r in rows if r.get(key) is not None))
    notes += [f"{h}: {b}" for h, b in sections.items() if "\n" not in b.strip()]
    notes.append("details.md beside this report holds the full table, the compression "
                 "reports, what tfmot QAT cannot quantize and the TFLite embedding dtypes.")
    paths = viz.write_report(run_dir, viz_rows(rows), class_names=class_names, y_true=y_true,
                             predictions=predictions, figures=figures, title=title,
                             notes=notes)
    return paths["md"]



def qat_coverage(model):
    """What tfmot's default 8-bit QAT can annotate in ``model``, and what it cannot."""
    from tfdeploy.compress import quantizable_layers

    supported, unsupported = quantizable_layers(model)
    kinds = {n: type(model.get_layer(n)).__name__ for n in unsupported}
    weighted = [f"{n} ({kinds[n]})" for n in unsupported if model.get_layer(n).weights]
    return {"supported": supported, "unsupported": unsupported,
            "unsupported_with_weights": weighted}


def qat_text(coverage):
    lines = ["tfmot's default 8-bit QAT registry has no quantize config for these layers "
             "with weights (they are quantized only by post-training TFLite conversion, "
             "int8/dynamic rows):"]
    lines += [f"- {item}" for item in coverage["unsupported_with_weights"]] or ["- none"]
    return "\n".join(lines)


def embedding_dtypes(path):
    """``{tensor name: dtype}`` of the embedding tables stored in a ``.tflite`` file."""
    from tfdeploy import verify
    return {t["name"]: t["dtype"] for t in verify.weight_tensors(path)
            if "embedding" in t["name"]}


def tfidf_classifier(texts, labels, seed=0):
    """The skeptic's first text classifier: TF-IDF (words and bigrams) + logistic regression,
    fitted on ``texts``/``labels`` (scikit-learn); ``predict(texts)`` returns labels."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(max_iter=1000, random_state=seed))
    return model.fit(list(texts), list(labels))
