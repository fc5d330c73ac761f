"""Benchmark the text models: size, accuracy / recall@k and latency, float vs int8 vs pruned+int8.

For each classifier family (1-D CNN, BiGRU, Transformer encoder) trained on
the bundled synthetic sentiment corpus, and for a CNN dual encoder trained on
the synthetic Q&A pairs: parameters; gzip bytes of the float32, int8 and
pruned+int8 TFLite files; accuracy (or recall@k) of each in the LiteRT
runtime on raw test texts (tokenised by the shipped vocabulary); p50 batch-1
latency of each (one thread, tokenisation included) beside the Keras model
(TextVectorization + model in one traced ``tf.function``); and, for the CNN
classifier, the served REST latency of one short text through ``tfdeploy
serve``'s server and in-process. It also
records which TensorFlow (Flex) ops an in-graph-tokenising TFLite file would
need.

    python benchmarks/bench_text.py [--epochs 4] [--out results.json]

The last line printed is the JSON document (``--out FILE`` also writes it there), with the
run's CPU, load average at start and end, command and date (``run``); a table goes to stderr.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _record import run_info, write_result  # noqa: E402


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4, help="Training epochs. Default: 4.")
    p.add_argument("--sparsity", type=float, default=0.6, help="Pruning target. Default: 0.6.")
    p.add_argument("--iters", type=int, default=200, help="Batch-1 calls. Default: 200.")
    p.add_argument("--output-dir", help="Where artifacts go (default: a temp dir).")
    p.add_argument("--out", help="Also write the JSON here.")
    return p.parse_args(argv)


def _p50(fn, inputs, iters):
    for x in inputs[:5]:
        fn([x])
    times = []
    for i in range(iters):
        x = inputs[i % len(inputs)]
        start = time.perf_counter()
        fn([x])
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main(argv=None):
    args = _args(argv)
    run = run_info(argv)
    from tfdeploy import compress, data, export, models, verify
    from tfdeploy._keras import keras, tf
    from tfdeploy.recipes import _harness, _text
    from tfdeploy.recipes.answer_retrieval import split
    from tfdeploy.runtime.text import TextTFLiteRunner
    from tfdeploy.client import RestClient

    _harness.seed(0)
    out_dir = args.output_dir or tempfile.mkdtemp(prefix="bench_text-")
    corpus = data.write_sentiment_corpus(os.path.join(out_dir, "sentiment"))
    train = data.text_dataset(os.path.join(corpus, "train"), shuffle=True)
    test = data.text_dataset(os.path.join(corpus, "test.jsonl"))
    length = 24
    vectorizer = models.text_vectorizer(train.texts, 5000, length)
    vocab, n_vocab = models.vocabulary(vectorizer), models.vocab_size(vectorizer)
    train_ids = models.vectorize(train, vectorizer)
    y_test = np.asarray(test.labels)
    builders = {
        "text_cnn": lambda: models.build_text_cnn(n_vocab, length, 3),
        "text_bigru": lambda: models.build_text_bigru(n_vocab, length, 3),
        "text_transformer": lambda: models.build_text_transformer(n_vocab, length, 3),
    }
    results = {"run": run, "note": "shared machine; compare ratios within one run",
               "settings": vars(args), "classifiers": {}}

    def fit(model, epochs, lr, cbs=()):
        model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
        model.fit(train_ids, epochs=epochs, verbose=0, callbacks=list(cbs))
        return model

    def tflite_entry(model, path, quantization):
        export.text_tflite(model, path, vocab, quantization=quantization,
                           representative_data=train_ids)
        runner = TextTFLiteRunner(path, num_threads=1)
        probs = _text.embed(runner.predict, test.texts)
        return {"gzip_bytes": verify.gzip_bytes(path),
                "accuracy": float(np.mean(probs.argmax(-1) == y_test)),
                "p50_ms": _p50(runner.predict, test.texts, args.iters),
                "embedding_dtype": next(iter(_text.embedding_dtypes(path).values()), None)}

    for name, build in builders.items():
        print(f"[{name}] train, prune, convert", file=sys.stderr)
        model = fit(build(), args.epochs, 3e-3)
        wrapped = compress.prune(model, args.sparsity, epochs=2, steps_per_epoch=train_ids)
        pruned = compress.strip(fit(wrapped, 2, 1e-3, compress.callbacks(wrapped)))
        traced = tf.function(lambda t, m=model: m(vectorizer(t), training=False))

        def keras_fn(texts, fn=traced):
            return fn(tf.constant(texts)).numpy()
        entry = {"params": int(model.count_params()),
                 "keras": {"accuracy": float(np.mean(
                     _text.embed(keras_fn, test.texts).argmax(-1) == y_test)),
                           "p50_ms": _p50(keras_fn, test.texts, args.iters)},
                 "float32": tflite_entry(model, os.path.join(out_dir, f"{name}.tflite"),
                                         "float32"),
                 "int8": tflite_entry(model, os.path.join(out_dir, f"{name}_int8.tflite"),
                                      "int8"),
                 "pruned_int8": tflite_entry(pruned, os.path.join(
                     out_dir, f"{name}_pruned_int8.tflite"), "int8")}
        entry["pruned_int8"]["sparsity_keras"] = compress.model_sparsity(pruned)
        entry["p50_ratio_float_over_int8"] = entry["float32"]["p50_ms"] / entry["int8"]["p50_ms"]
        entry["gzip_ratio_float_over_pruned_int8"] = \
            entry["float32"]["gzip_bytes"] / entry["pruned_int8"]["gzip_bytes"]
        results["classifiers"][name] = entry
        if name == "text_cnn":
            base = os.path.join(out_dir, "served", "sentiment")
            version = export.text_saved_model(model, base, vocab, class_names=train.class_names)
            short = ["Acme beats earnings expectations"]
            with _harness.serving("sentiment", base) as server:
                rest = RestClient(f"127.0.0.1:{server.rest_port}")
                served = _text.rest_latency_ms(rest, "sentiment", short, repeats=args.iters)
            fn = tf.saved_model.load(version).signatures["serving_default"]
            in_process = _p50(lambda t: fn(text=tf.constant(t)), short, args.iters)
            results["served_rest_one_short_text"] = {
                "model": name, "rest_p50_ms": served, "in_process_signature_p50_ms": in_process,
                "rest_over_in_process": served / in_process}
            end_to_end = keras.Sequential([keras.Input((), dtype=tf.string), vectorizer, model])
            results["in_graph_tokenisation_flex_ops"] = export.flex_ops(end_to_end)

    print("[qa dual encoder] train, prune, convert", file=sys.stderr)
    questions, targets, answers = data.qa_corpus()
    train_rows, test_rows = split(targets)
    qa_vec = models.text_vectorizer(questions + answers, 5000, 16)
    q_ids = qa_vec(tf.constant(questions)).numpy()
    a_ids = qa_vec(tf.constant(answers)).numpy()
    pairs = tf.data.Dataset.from_tensor_slices(
        (q_ids[train_rows], a_ids[targets[train_rows]])).shuffle(512, seed=0).batch(16)
    encoder = models.build_text_encoder(models.vocab_size(qa_vec), 16, 32, "cnn")
    trainer = models.RetrievalTrainer(encoder, encoder)
    trainer.compile(keras.optimizers.Adam(3e-3))
    trainer.fit(pairs, epochs=args.epochs * 2, verbose=0)
    wrapped = compress.prune(encoder, args.sparsity, epochs=2, steps_per_epoch=pairs)
    trainer = models.RetrievalTrainer(wrapped, wrapped)
    trainer.compile(keras.optimizers.Adam(1e-3))
    trainer.fit(pairs, epochs=2, verbose=0, callbacks=compress.callbacks(wrapped))
    pruned = compress.strip(wrapped)
    test_q, k = [questions[i] for i in test_rows], 5
    qa_vocab = models.vocabulary(qa_vec)
    rep = tf.data.Dataset.from_tensor_slices(q_ids).batch(32)
    qa = {"params": int(encoder.count_params()), "k": k,
          "random_recall": verify.random_recall(len(answers), k)}
    for label, model, quantization in (("float32", encoder, "float32"),
                                       ("int8", encoder, "int8"),
                                       ("pruned_int8", pruned, "int8")):
        path = export.text_tflite(model, os.path.join(out_dir, f"qa_{label}.tflite"), qa_vocab,
                                  quantization=quantization, representative_data=rep)
        runner = TextTFLiteRunner(path, num_threads=1)
        recall = verify.recall_at_k(_text.embed(runner.predict, test_q),
                                    _text.embed(runner.predict, answers), targets[test_rows], k)
        qa[label] = {"gzip_bytes": verify.gzip_bytes(path), f"recall@{k}": recall,
                     "p50_ms": _p50(runner.predict, test_q, args.iters)}
    results["qa_dual_encoder_cnn"] = qa

    print(f"{'model':<20}{'variant':<13}{'gzip':>8}{'acc/recall':>11}{'p50 ms':>9}",
          file=sys.stderr)
    for name, entry in list(results["classifiers"].items()) + [("qa_dual_encoder", qa)]:
        for variant in ("float32", "int8", "pruned_int8"):
            e = entry[variant]
            score = e.get("accuracy", e.get(f"recall@{k}"))
            print(f"{name:<20}{variant:<13}{e['gzip_bytes']:>8}{score:>11.3f}"
                  f"{e['p50_ms']:>9.3f}", file=sys.stderr)
    write_result(results, args.out, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
