"""Financial sentiment monitor: Transformer → pruned, distilled, int8; served; alerts on a surge.

Trains a small Transformer encoder on financial headlines (the bundled
synthetic corpus, or ``--data``), prunes its attention projections,
feed-forward layers and embedding table, distils it into a small 1-D CNN and
prunes that too, writes dynamic-range and int8 TFLite files (vocabulary
beside them) and a SavedModel whose ``serving_default`` takes raw strings,
serves it with tfdeploy's TF-Serving-compatible server, and replays a
timestamped headline stream through the served model over REST, raising an
alert whenever the rolling share of negative predictions crosses
``--threshold``.

    tfdeploy run sentiment_monitor
    python recipes/sentiment_monitor.py --data my_news --epochs 6 --json out.json

``--data DIR`` holds ``train`` and ``test`` (each a ``<label>/*.txt`` folder,
or ``.jsonl``/``.csv`` with ``text`` and ``label``) and optionally
``stream.jsonl`` (``time``, ``text``, optional ``label``).
"""

import argparse
import collections
import os
import time

import numpy as np

NAME = "sentiment_monitor"
COLUMNS = [("variant", "variant", None), ("format", "format", None),
           ("params", "params", "{:,}"), ("sparsity", "sparsity", "{:.1%}"),
           ("gzip_bytes", "gzip bytes", "{:,}"), ("accuracy", "accuracy", "{:.2%}"),
           ("p50_ms", "p50 ms", "{:.3f}")]


def build_parser():
    from tfdeploy.recipes import _text

    p = argparse.ArgumentParser(prog=f"tfdeploy run {NAME}",
                                description=__doc__.strip().split("\n\n")[1])
    _text.add_common_arguments(
        p, NAME, "folder with train, test (class folders or .jsonl/.csv with text,label) and "
                 "optional stream.jsonl (default: the bundled synthetic corpus, written to "
                 "data/sentiment)")
    p.add_argument("--name", default="sentiment", help="served model name (default: %(default)s)")
    p.add_argument("--distill-epochs", type=int, default=4,
                   help="epochs distilling the Transformer into the CNN (default: %(default)s)")
    p.add_argument("--window", type=int, default=40,
                   help="rolling window of predictions for the alert (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="alert when the rolling negative share reaches this (default: "
                        "%(default)s)")
    p.add_argument("--batch", type=int, default=10,
                   help="stream headlines per REST request (default: %(default)s)")
    p.add_argument("--server", default=None,
                   help="replay against an already running server's REST address HOST:PORT "
                        "serving --name, instead of starting one")
    return p


def _split(directory, split):
    from tfdeploy.errors import TextDataError

    for candidate in (split, f"{split}.jsonl", f"{split}.csv"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    raise TextDataError(f"{directory!r} has no {split}/ folder, {split}.jsonl or {split}.csv.")


def read_stream(path):
    """Timestamped texts from a ``.jsonl``/``.csv`` with ``time`` and ``text`` (``label`` opt.)."""
    from tfdeploy.data import read_records

    rows = read_records(path, ("time", "text"))
    labels = {}
    try:
        labels = {n: r["label"] for n, r in read_records(path, ("time", "text", "label"))}
    except ValueError:
        pass
    return [{"time": str(r["time"]), "text": r["text"], "label": labels.get(n)}
            for n, r in rows]


class RollingAlert:
    """Rolling share of negative predictions; events when it crosses the threshold.

    Args:
        window: predictions in the window.
        threshold: share at which an alert is raised (once the window is full).
        hysteresis: the alert clears when the share falls below
            ``threshold - hysteresis`` (so it does not flap). Defaults to 0.1.
        negative: the label counted as negative. Defaults to "negative".
    """

    def __init__(self, window=40, threshold=0.5, hysteresis=0.1, negative="negative"):
        if int(window) < 1 or not 0 < float(threshold) <= 1 or not 0 <= hysteresis < threshold:
            raise ValueError(f"window must be >= 1, threshold in (0, 1] and hysteresis in "
                             f"[0, threshold); received {window!r}, {threshold!r}, "
                             f"{hysteresis!r}.")
        self.window, self.threshold, self.negative = int(window), float(threshold), negative
        self.clear_below = self.threshold - float(hysteresis)
        self.recent = collections.deque(maxlen=self.window)
        self.active = False
        self.events = []

    def update(self, time_, label):
        self.recent.append(label == self.negative)
        share = sum(self.recent) / len(self.recent)
        full = len(self.recent) == self.window
        if full and not self.active and share >= self.threshold:
            self.active = True
            self.events.append({"time": time_, "event": "alert", "negative_share": share})
        elif self.active and share < self.clear_below:
            self.active = False
            self.events.append({"time": time_, "event": "clear", "negative_share": share})
        return share


def replay(client, name, stream, window, threshold, batch, log_dir=None):
    """Send ``stream`` through the served model in batches; return shares, events and labels."""
    from tfdeploy._keras import tf

    monitor, truth = RollingAlert(window, threshold), RollingAlert(window, threshold)
    writer = tf.summary.create_file_writer(os.path.join(log_dir, "monitor")) if log_dir else None
    predicted, shares, true_shares = [], [], []
    for start in range(0, len(stream), int(batch)):
        chunk = stream[start:start + int(batch)]
        out = client.predict(name, instances=[r["text"] for r in chunk])["predictions"]
        for i, (record, pred) in enumerate(zip(chunk, out)):
            share = monitor.update(record["time"], pred["class_label"])
            predicted.append(pred["class_label"])
            shares.append(share)
            true_share = truth.update(record["time"], record["label"]) \
                if record.get("label") is not None else None
            if true_share is not None:
                true_shares.append(true_share)
            if writer is not None:
                with writer.as_default(step=start + i):
                    tf.summary.scalar("negative_share/served_model", share)
                    if true_share is not None:
                        tf.summary.scalar("negative_share/true_labels", true_share)
    if writer is not None:
        writer.close()
    return {"predicted": predicted, "shares": shares, "true_shares": true_shares,
            "events": monitor.events,
            "true_events": truth.events if stream and stream[0].get("label") else []}


def share_plot(monitor, stream, threshold):
    """PNG: rolling negative share of the served model (and of the true labels) over the stream,
    the threshold, and the alerts."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="tight")
    ax = fig.subplots()
    ax.plot(monitor["shares"], label="served model")
    if monitor.get("true_shares"):
        ax.plot(monitor["true_shares"], label="true labels", alpha=0.7)
    ax.axhline(threshold, color="red", linestyle="--", label="threshold")
    times = [r["time"] for r in stream]
    for event in monitor["events"]:
        if event["time"] in times:
            ax.axvline(times.index(event["time"]), color="red" if event["event"] == "alert"
                       else "green", alpha=0.5)
    ax.set_xlabel("headline (time order)")
    ax.set_ylabel("rolling negative share")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def run(args):
    from tfdeploy import compress, data, export, models, verify
    from tfdeploy._keras import keras, tf
    from tfdeploy.recipes import _text
    from tfdeploy.runtime.text import TextTFLiteRunner
    from tfdeploy.serving.client import GrpcClient, RestClient

    start_time = time.perf_counter()
    verbose = 0 if args.quiet else 2
    tf.keras.utils.set_random_seed(args.seed)
    data_dir = args.data or data.write_sentiment_corpus(os.path.join("data", "sentiment"),
                                                        seed=args.seed)
    train = data.text_dataset(_split(data_dir, "train"), shuffle=True, seed=args.seed)
    test = data.text_dataset(_split(data_dir, "test"))
    stream_path = os.path.join(data_dir, "stream.jsonl")
    stream = read_stream(stream_path) if os.path.exists(stream_path) else \
        data.sentiment_stream(seed=args.seed + 1)
    classes = train.class_names
    print(f"[1/6] data: {train.num_examples} train / {test.num_examples} test texts, classes "
          f"{classes}, stream of {len(stream)}")

    vectorizer = models.text_vectorizer(train.texts, args.max_tokens, args.sequence_length)
    vocab = models.vocabulary(vectorizer)
    train_ids = models.vectorize(train, vectorizer)
    x_test = vectorizer(tf.constant(test.texts)).numpy()
    y_test = np.asarray(test.labels)
    n_vocab, length, n_classes = models.vocab_size(vectorizer), args.sequence_length, len(classes)

    def fit(model, stage, epochs, lr, extra=()):
        model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy",
                      ["accuracy"])
        model.fit(train_ids, epochs=epochs, verbose=verbose,
                  callbacks=_text.callbacks(args.logs, stage, extra))
        return model

    rows, predictions = [], {}

    def keras_row(variant, model):
        fn = _text.keras_fn(model)
        predictions[variant] = _text.embed(fn, x_test).argmax(-1)
        rows.append({"variant": variant, "format": "keras", "params": _text.params(model),
                     "sparsity": compress.model_sparsity(model),
                     "accuracy": float(np.mean(predictions[variant] == y_test)),
                     "p50_ms": _text.p50_ms(fn, x_test)})

    def tflite_row(variant, model, path, quantization):
        export.text_tflite(model, path, vocab, quantization=quantization,
                           representative_data=train_ids, class_names=classes)
        runner = TextTFLiteRunner(path)
        probs = _text.embed(runner.predict, test.texts)
        predictions[variant] = probs.argmax(-1)
        rows.append({"variant": variant, "format": "tflite", "params": _text.params(model),
                     "sparsity": verify.weight_summary(path)["sparsity"],
                     **_text.sizes(path), "accuracy": float(np.mean(probs.argmax(-1) == y_test)),
                     "p50_ms": _text.p50_ms(runner.predict, test.texts), "path": path})

    print("[2/6] Transformer encoder (teacher)")
    teacher = fit(models.build_text_transformer(n_vocab, length, n_classes, args.embed_dim),
                  "transformer", args.epochs, args.lr)
    keras_row("transformer", teacher)
    coverage = _text.qat_coverage(teacher)

    print(f"[3/6] prune the Transformer to {args.sparsity:.0%} (attention, FFN, embeddings)")
    wrapped = compress.prune(teacher, args.sparsity, epochs=args.fine_tune_epochs,
                             steps_per_epoch=train_ids)
    fit(wrapped, "transformer_pruned", args.fine_tune_epochs, args.lr / 3,
        compress.callbacks(wrapped, log_dir=os.path.join(args.logs, "transformer_pruned")))
    transformer_report = str(compress.report(wrapped))
    pruned_teacher = compress.strip(wrapped)
    keras_row("transformer pruned", pruned_teacher)
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, args.name)
    tflite_row("transformer float32", teacher, f"{stem}_transformer.tflite", "float32")
    tflite_row("transformer pruned+int8", pruned_teacher, f"{stem}_transformer_int8.tflite",
               "int8")

    print("[4/6] distil into a 1-D CNN, then prune it")
    distiller = compress.distill(teacher, models.build_text_cnn(n_vocab, length, n_classes,
                                                                args.embed_dim))
    distiller.compile(keras.optimizers.Adam(args.lr), metrics=["accuracy"])
    distiller.fit(train_ids, epochs=args.distill_epochs, verbose=verbose,
                  callbacks=_text.callbacks(args.logs, "distill"))
    student = distiller.student
    keras_row("cnn distilled", student)
    wrapped_student = compress.prune(student, args.sparsity, epochs=args.fine_tune_epochs,
                                     steps_per_epoch=train_ids)
    fit(wrapped_student, "cnn_pruned", args.fine_tune_epochs, args.lr / 3,
        compress.callbacks(wrapped_student, log_dir=os.path.join(args.logs, "cnn_pruned")))
    served_model = compress.strip(wrapped_student)
    keras_row("cnn distilled+pruned", served_model)
    tflite_row("cnn pruned+dynamic", served_model, f"{stem}_cnn_dynamic.tflite", "dynamic")
    tflite_row("cnn pruned+int8", served_model, f"{stem}_cnn_int8.tflite", "int8")
    embedding_dtypes = {r["variant"]: _text.embedding_dtypes(r["path"]) for r in rows
                        if r.get("path")}

    print("[5/6] export the SavedModel (raw-text serving_default) and serve it")
    base = os.path.join(args.output, args.name)
    version_dir = export.text_saved_model(
        served_model, base, vocab, class_names=classes, warmup_texts=test.texts[:4],
        model_card={"metrics": {"accuracy": rows[-3]["accuracy"]},
                    "compression": [{"step": "distill", "teacher": "text_transformer"}]})
    served = {}
    context = _text.serving(args.name, base) if not args.server else None
    server = context.__enter__() if context else None
    try:
        rest = RestClient(args.server or f"127.0.0.1:{server.rest_port}", timeout=60)
        probs = np.concatenate([
            np.asarray([p["probabilities"] for p in rest.predict(
                args.name, instances=test.texts[i:i + 64])["predictions"]])
            for i in range(0, len(test.texts), 64)])
        predictions["served (REST)"] = probs.argmax(-1)
        served["rest_accuracy"] = float(np.mean(probs.argmax(-1) == y_test))
        served["rest_p50_ms_one_text"] = _text.rest_latency_ms(rest, args.name, [test.texts[0]])
        if server is not None:
            with GrpcClient(f"127.0.0.1:{server.grpc_port}") as grpc_client:
                out = grpc_client.predict(args.name, {"text": np.array(test.texts[:8], object)})
            served["grpc_agrees_with_rest"] = bool(np.allclose(
                out["probabilities"], probs[:8], atol=1e-5))
        rows.append({"variant": "served (REST)", "format": "saved_model",
                     "params": _text.params(served_model),
                     "sparsity": compress.model_sparsity(served_model),
                     **_text.sizes(version_dir), "accuracy": served["rest_accuracy"],
                     "p50_ms": served["rest_p50_ms_one_text"], "path": version_dir})
        print(f"[6/6] replay {len(stream)} timestamped headlines through the served model")
        monitor = replay(rest, args.name, stream, args.window, args.threshold, args.batch,
                         args.logs)
    finally:
        if context:
            context.__exit__(None, None, None)

    table = _text.format_table(rows, COLUMNS)
    print()
    print(table)
    for e in monitor["events"]:
        print(f"  {e['time']}  {e['event'].upper():<5} rolling negative share "
              f"{e['negative_share']:.0%} (window {args.window}, threshold {args.threshold:.0%})")
    if not monitor["events"]:
        print(f"  no alert: the rolling negative share never reached {args.threshold:.0%}")
    _text.log_comparison(args.logs, rows, COLUMNS, NAME)
    report = _text.write_report(
        os.path.join(args.logs, "report"), "Sentiment monitor", rows, COLUMNS, {
            "Alerts (served model)": "\n".join(
                f"- {e['time']} {e['event']} (negative share {e['negative_share']:.0%})"
                for e in monitor["events"]) or "- none",
            "Alerts from the true labels": "\n".join(
                f"- {e['time']} {e['event']} (negative share {e['negative_share']:.0%})"
                for e in monitor["true_events"]) or "- none / stream has no labels",
            "Transformer pruning": "```\n" + transformer_report + "\n```",
            "What tfmot QAT cannot quantize": _text.qat_text(coverage),
            "Embedding tables in the TFLite files": "\n".join(
                f"- {k}: {v}" for k, v in embedding_dtypes.items()),
        }, class_names=classes, y_true=y_test, predictions=predictions,
        figures={"negative_share": share_plot(monitor, stream, args.threshold)})
    print(f"report: {report}\nTensorBoard: tensorboard --logdir {args.logs}")
    elapsed = time.perf_counter() - start_time
    print(f"total {elapsed:.0f} s")
    _text.write_json(args.json, {
        "rows": rows, "served": served, "alerts": monitor["events"],
        "true_alerts": monitor["true_events"], "qat_coverage": coverage,
        "embedding_dtypes": embedding_dtypes, "saved_model": version_dir, "report": report,
        "class_names": classes, "total_s": elapsed})
    return 0


def main(argv=None):
    """Run the sentiment monitor recipe; returns the exit status."""
    from tfdeploy.recipes import _text

    return _text.main(NAME, build_parser, run, argv)
