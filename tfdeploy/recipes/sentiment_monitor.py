"""Financial sentiment monitor: Transformer → pruned, distilled, int8; served; alerts on a surge.

Trains a small Transformer encoder on financial headlines (the bundled
synthetic corpus, or ``--data``), prunes its attention projections,
feed-forward layers and embedding table, distils it into a small 1-D CNN and
prunes that too, writes dynamic-range and int8 TFLite files (vocabulary
beside them) and a SavedModel whose ``serving_default`` takes raw strings,
serves it with tfdeploy's TF-Serving-compatible server, and replays a
timestamped headline stream through the served model over REST, raising an
alert when the rolling share of negative predictions reaches ``--threshold``
(cleared below ``threshold - hysteresis``), and scores those alerts against the
alerts of the stream's true labels: surges detected and missed, detection
delay in headlines, false alarms per 1,000 headlines. ``--follow FILE`` tails a
growing JSONL/CSV stream live instead; alerts go to the log, ``--alert-jsonl``
and ``--webhook`` (POST, retried, none lost).

    tfdeploy run sentiment_monitor
    python recipes/sentiment_monitor.py --data my_news --epochs 6 --json out.json
    python recipes/sentiment_monitor.py --server 127.0.0.1:8501 --follow news.jsonl \
        --webhook http://alerts.local/hook --alert-jsonl alerts.jsonl

``--data DIR`` holds ``train`` and ``test`` (each a ``<label>/*.txt`` folder,
or ``.jsonl``/``.csv`` with ``text`` and ``label``) and optionally
``stream.jsonl`` (``time``, ``text``, optional ``label``). With ``--server`` and
``--follow`` nothing is trained: the recipe only monitors the running server.
"""

import argparse
import os

import numpy as np

from tfdeploy.monitor import RollingAlert  # noqa: F401  (the recipe's alert, re-exported)

NAME = "sentiment_monitor"
COLUMNS = [("variant", "variant", None), ("format", "format", None),
           ("params", "params", "{:,}"), ("sparsity", "sparsity", "{:.1%}"),
           ("gzip_bytes", "gzip bytes", "{:,}"), ("accuracy", "accuracy", "{:.2%}"),
           ("p50_ms", "p50 ms", "{:.3f}")]
ALERT_COLUMNS = [("monitor", "alerts of", None), ("surges", "true surges", "{:d}"),
                 ("detected", "detected", "{:d}"), ("missed_surges", "missed", "{:d}"),
                 ("mean_delay", "mean delay (headlines)", "{:.1f}"),
                 ("false_alarms", "false alarms", "{:d}"),
                 ("false_alarms_per_1000", "per 1,000 headlines", "{:.1f}")]


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
    p.add_argument("--hysteresis", type=float, default=0.1,
                   help="an alert clears when the share falls below threshold - hysteresis "
                        "(default: %(default)s)")
    p.add_argument("--follow", default=None, metavar="FILE",
                   help="tail this growing .jsonl/.csv file (time, text, optional label) "
                        "instead of replaying the stream; with --server, train nothing")
    p.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                   help="with --follow: stop after this long without a new line (default: "
                        "run until Ctrl-C)")
    p.add_argument("--poll-interval", type=float, default=0.5,
                   help="with --follow: seconds between polls (default: %(default)s)")
    p.add_argument("--alert-jsonl", default=None, metavar="FILE",
                   help="also append every alert/clear event to this JSONL file")
    p.add_argument("--webhook", default=None, metavar="URL",
                   help="also POST every alert/clear event as JSON to this URL (retried; "
                        "undelivered events are re-sent before the next ones)")
    p.add_argument("--webhook-retries", type=int, default=5,
                   help="re-sends of one event before it is queued (default: %(default)s)")
    p.add_argument("--batch", type=int, default=10,
                   help="stream headlines per REST request (default: %(default)s)")
    p.add_argument("--server", default=None,
                   help="replay against an already running server's REST address HOST:PORT "
                        "serving --name, instead of starting one (with --follow: only monitor)")
    return p


def _split(directory, split):
    from tfdeploy.errors import TextDataError

    for candidate in (split, f"{split}.jsonl", f"{split}.csv"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    raise TextDataError(f"{directory!r} has no {split}/ folder, {split}.jsonl or {split}.csv.")


def read_stream(path):
    """Timestamped texts from a ``.jsonl``/``.csv`` with ``time`` and ``text`` (``label`` opt.).

    A record without a label gets ``label`` None; the others keep theirs (the
    truth alerts use the labelled records).
    """
    from tfdeploy.data import read_records

    return [{"time": str(r["time"]), "text": r["text"], "label": r["label"]}
            for _, r in read_records(path, ("time", "text"), optional=("label",))]


def sinks_from(args):
    """The alert sinks the flags ask for: always the log, plus ``--alert-jsonl`` and
    ``--webhook``."""
    from tfdeploy.monitor import JsonlSink, LogSink, WebhookSink

    sinks = [LogSink()]
    if args.alert_jsonl:
        sinks.append(JsonlSink(args.alert_jsonl))
    if args.webhook:
        sinks.append(WebhookSink(args.webhook, retries=args.webhook_retries))
    return sinks


def stream_monitor(client, name, args, log_dir=None):
    """A `tfdeploy.monitor.StreamMonitor` predicting through ``client`` (REST), writing the
    rolling shares to TensorBoard under ``log_dir/monitor``; returns ``(monitor, writer)``."""
    from tfdeploy._keras import tf
    from tfdeploy.monitor import StreamMonitor

    writer = tf.summary.create_file_writer(os.path.join(log_dir, "monitor")) if log_dir else None

    def predict(texts):
        return [p["class_label"] for p in client.predict(name, instances=texts)["predictions"]]

    def on_step(index, share, true_share):
        with writer.as_default(step=index):
            tf.summary.scalar("negative_share/served_model", share)
            if true_share is not None:
                tf.summary.scalar("negative_share/true_labels", true_share)

    monitor = StreamMonitor(predict, args.window, args.threshold, args.hysteresis,
                            sinks=sinks_from(args), on_step=on_step if writer else None)
    return monitor, writer


def watch(client, name, args, stream=None, log_dir=None):
    """Replay ``stream`` (a list of records) or follow ``args.follow`` through the served
    model; returns the monitor's results (shares, events, true events, score)."""
    from tfdeploy.monitor import follow

    monitor, writer = stream_monitor(client, name, args, log_dir)
    try:
        if args.follow:
            follow(args.follow, monitor, batch=args.batch, poll_interval=args.poll_interval,
                   idle_exit=args.idle_exit)
        else:
            for start in range(0, len(stream), int(args.batch)):
                monitor.feed(stream[start:start + int(args.batch)])
    finally:
        if writer is not None:
            writer.close()
        monitor.close()
    return {"predicted": monitor.predicted, "shares": monitor.shares,
            "true_shares": monitor.true_shares, "times": monitor.times,
            "events": monitor.model.events,
            "true_events": monitor.truth.events if monitor.labelled else [],
            "score": monitor.score(), "headlines": monitor.count}


def print_alerts(monitor, args):
    for e in monitor["events"]:
        print(f"  {e['time']}  {e['event'].upper():<5} rolling negative share "
              f"{e['negative_share']:.0%} (window {args.window}, threshold {args.threshold:.0%}, "
              f"clears below {args.threshold - args.hysteresis:.0%})")
    if not monitor["events"]:
        print(f"  no alert: the rolling negative share never reached {args.threshold:.0%}")
    score = monitor["score"]
    if score is None:
        print("  the stream has no labels: the alerts cannot be scored")
        return
    delay = "-" if score["mean_delay"] is None else f"{score['mean_delay']:.1f}"
    print(f"  served model vs true labels ({score['labelled_headlines']} of {score['headlines']} "
          f"headlines labelled): {score['detected']}/{score['surges']} surges detected, "
          f"{score['missed_surges']} missed, mean detection delay {delay} headlines, "
          f"{score['false_alarms']} false alarms ({score['false_alarms_per_1000']:.1f} per "
          "1,000 headlines)")


def share_plot(monitor, threshold):
    """PNG: rolling negative share of the served model (and of the true labels) over the stream,
    the threshold, and the alerts."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="tight")
    ax = fig.subplots()
    ax.plot(monitor["shares"], label="served model")
    if any(s is not None for s in monitor.get("true_shares", ())):
        ax.plot([np.nan if s is None else s for s in monitor["true_shares"]],
                label="true labels", alpha=0.7)
    ax.axhline(threshold, color="red", linestyle="--", label="threshold")
    for event in monitor["events"]:
        ax.axvline(event["index"], color="red" if event["event"] == "alert" else "green",
                   alpha=0.5)
    ax.set_xlabel("headline (time order)")
    ax.set_ylabel("rolling negative share")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def monitor_only(args):
    """``--server`` with ``--follow``: monitor a running server, train nothing."""
    from tfdeploy.client import RestClient
    from tfdeploy.recipes._harness import Run

    with Run(NAME, args) as session:
        rest = RestClient(args.server, timeout=60)
        print(f"following {args.follow} through {args.server} ({args.name}); Ctrl-C stops")
        monitor = watch(rest, args.name, args, log_dir=session.logs())
        print(f"{monitor['headlines']} headlines monitored")
        print_alerts(monitor, args)
        session.finish({
            "alerts": monitor["events"], "true_alerts": monitor["true_events"],
            "alert_score": monitor["score"], "headlines": monitor["headlines"],
            "settings": {"window": args.window, "threshold": args.threshold,
                         "hysteresis": args.hysteresis}})
    return 0


def run(args):
    if args.follow and args.server:
        return monitor_only(args)
    from tfdeploy.recipes._harness import Run

    with Run(NAME, args) as session:
        return _train_serve_watch(args, session)


def _train_serve_watch(args, session):
    from tfdeploy import compress, data, export, models, verify
    from tfdeploy._keras import build_fit_state, keras, tf
    from tfdeploy.client import GrpcClient, RestClient
    from tfdeploy.recipes import _text
    from tfdeploy.recipes._harness import format_table
    from tfdeploy.runtime.text import TextTFLiteRunner

    verbose = 0 if args.quiet else 2
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
        build_fit_state(model, train_ids)  # one trace of the train step, not two
        model.fit(train_ids, epochs=epochs, verbose=verbose,
                  callbacks=_text.callbacks(session.logs(), stage, extra))
        return model

    rows, predictions = session.rows, {}
    baseline = _text.tfidf_classifier(train.texts, [classes[i] for i in train.labels])
    baseline_pred = np.asarray([classes.index(c) for c in baseline.predict(test.texts)])
    predictions["TF-IDF + logreg"] = baseline_pred
    rows.add({"variant": "TF-IDF + logreg", "format": "baseline",
              "accuracy": float(np.mean(baseline_pred == y_test))})

    def keras_row(variant, model):
        fn = _text.keras_fn(model)
        predictions[variant] = _text.embed(fn, x_test).argmax(-1)
        rows.add({"variant": variant, "format": "keras", "params": _text.params(model),
                  "sparsity": compress.model_sparsity(model),
                  "accuracy": float(np.mean(predictions[variant] == y_test)),
                  "p50_ms": _text.p50_ms(fn, x_test)})

    def tflite_row(variant, model, path, quantization):
        export.text_tflite(model, path, vocab, quantization=quantization,
                           representative_data=train_ids, class_names=classes)
        runner = TextTFLiteRunner(path)
        probs = _text.embed(runner.predict, test.texts)
        predictions[variant] = probs.argmax(-1)
        rows.add({"variant": variant, "format": "tflite", "params": _text.params(model),
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
        compress.callbacks(wrapped, log_dir=session.logs("transformer_pruned")))
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
                  callbacks=_text.callbacks(session.logs(), "distill"))
    student = distiller.student
    keras_row("cnn distilled", student)
    wrapped_student = compress.prune(student, args.sparsity, epochs=args.fine_tune_epochs,
                                     steps_per_epoch=train_ids)
    fit(wrapped_student, "cnn_pruned", args.fine_tune_epochs, args.lr / 3,
        compress.callbacks(wrapped_student, log_dir=session.logs("cnn_pruned")))
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
        model_card={"metrics": {"accuracy": rows["cnn distilled+pruned"]["accuracy"]},
                    "compression": [{"step": "distill", "teacher": "text_transformer"}]})
    served = {}
    server = None if args.server else session.serve(args.name, base)
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
    rows.add({"variant": "served (REST)", "format": "saved_model",
              "params": _text.params(served_model),
              "sparsity": compress.model_sparsity(served_model),
              **_text.sizes(version_dir), "accuracy": served["rest_accuracy"],
              "p50_ms": served["rest_p50_ms_one_text"], "path": version_dir})
    if args.follow:
        print(f"[6/6] follow {args.follow} through the served model")
    else:
        print(f"[6/6] replay {len(stream)} timestamped headlines through the served model")
    monitor = watch(rest, args.name, args, stream, session.logs())
    session.stop_serving()

    baseline_alerts = None
    if not args.follow:  # the same stream through the baseline classifier, offline
        from tfdeploy.monitor import StreamMonitor

        offline = StreamMonitor(lambda texts: list(baseline.predict(texts)), args.window,
                                args.threshold, args.hysteresis)
        for i in range(0, len(stream), int(args.batch)):
            offline.feed(stream[i:i + int(args.batch)])
        baseline_alerts = offline.score()
    alert_rows = [{"monitor": "served model", **(monitor["score"] or {})}]
    if baseline_alerts:
        alert_rows.append({"monitor": "TF-IDF + logreg (baseline)", **baseline_alerts})
    rows = rows.as_list()
    print()
    print(format_table(rows, COLUMNS))
    print_alerts(monitor, args)
    if monitor["score"]:
        print()
        print(format_table(alert_rows, ALERT_COLUMNS))
    _text.log_comparison(session.logs(), rows, COLUMNS, NAME)
    report = _text.write_report(
        session.logs("report"), "Sentiment monitor", rows, COLUMNS, {
            "Alerts (served model)": "\n".join(
                f"- {e['time']} {e['event']} (negative share {e['negative_share']:.0%})"
                for e in monitor["events"]) or "- none",
            "Alerts from the true labels": "\n".join(
                f"- {e['time']} {e['event']} (negative share {e['negative_share']:.0%})"
                for e in monitor["true_events"]) or "- none / stream has no labels",
            "Alerts scored against the true labels' alerts": "```\n" + format_table(
                alert_rows, ALERT_COLUMNS) + "\n```" if monitor["score"] else
            "the stream has no labels",
            "Transformer pruning": "```\n" + transformer_report + "\n```",
            "What tfmot QAT cannot quantize": _text.qat_text(coverage),
            "Embedding tables in the TFLite files": "\n".join(
                f"- {k}: {v}" for k, v in embedding_dtypes.items()),
        }, class_names=classes, y_true=y_test, predictions=predictions,
        figures={"negative_share": share_plot(monitor, args.threshold)})
    session.print_outputs(report)
    session.finish({
        "rows": rows, "baselines": session.rows.baselines(),
        "served": served, "alerts": monitor["events"], "true_alerts": monitor["true_events"],
        "alert_score": monitor["score"], "baseline_alert_score": baseline_alerts,
        "headlines": monitor["headlines"],
        "settings": {"window": args.window, "threshold": args.threshold,
                     "hysteresis": args.hysteresis}, "qat_coverage": coverage,
        "embedding_dtypes": embedding_dtypes, "saved_model": session.path(version_dir),
        "report": session.path(report), "class_names": classes})
    return 0


def main(argv=None):
    """Run the sentiment monitor recipe; returns the exit status."""
    from tfdeploy.recipes import _harness

    return _harness.main(NAME, build_parser, run, argv)
