"""Answer retrieval: a dual encoder ranks answers; pruned, int8, served with its answer index.

Trains a shared Transformer (or CNN) text encoder on question/answer pairs
(the bundled synthetic customer-service corpus, or ``--data``) with an
in-batch softmax, measures recall@1, recall@k and MRR of the right answer on
held-out questions (none verbatim in training) against TF-IDF and BM25 over
the answers and a TF-IDF nearest-training-question baseline, prunes the
encoder (attention, feed-forward, embedding table) and converts it to
dynamic-range and int8 TFLite (vocabulary beside), then exports
a SavedModel whose ``serving_default`` takes a raw question and returns the
top-k answers from an answer-embedding index built once and shipped as an
asset, and serves it.

    tfdeploy run answer_retrieval
    python recipes/answer_retrieval.py --data faq.jsonl --encoder cnn --json out.json

``--data`` is a ``.jsonl``/``.csv`` file (or a folder holding ``pairs.jsonl``)
with ``question`` and ``answer`` fields; several questions may share one answer.
"""

import argparse
import os

import numpy as np

NAME = "answer_retrieval"
COLUMNS = [("variant", "variant", None), ("format", "format", None),
           ("params", "params", "{:,}"), ("sparsity", "sparsity", "{:.1%}"),
           ("gzip_bytes", "gzip bytes", "{:,}"), ("recall@1", "recall@1", "{:.2%}"),
           ("recall@k", "recall@k", "{:.2%}"), ("mrr", "MRR", "{:.3f}"),
           ("recall@1_no_overlap", "recall@1 no-overlap", "{:.2%}"),
           ("p50_ms", "p50 ms", "{:.3f}")]


def build_parser():
    from tfdeploy.recipes import _text

    p = argparse.ArgumentParser(prog=f"tfdeploy run {NAME}",
                                description=__doc__.strip().split("\n\n")[1])
    _text.add_common_arguments(
        p, NAME, "a .jsonl/.csv file (or folder with pairs.jsonl) of question, answer "
                 "(default: the bundled synthetic corpus, written to data/qa)", epochs=8)
    p.add_argument("--name", default="answers", help="served model name (default: %(default)s)")
    p.add_argument("--encoder", choices=("transformer", "cnn"), default="transformer",
                   help="text encoder family (default: %(default)s)")
    p.add_argument("--k", type=int, default=5, help="recall@k cut-off and answers served per "
                                                    "question (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="pairs per in-batch-softmax step (default: %(default)s)")
    _text.add_no_serve(p)
    return p


def load_pairs(path):
    """``(questions, answer_index, answers)`` from a question/answer file."""
    from tfdeploy.data import read_records

    if os.path.isdir(path):
        path = os.path.join(path, "pairs.jsonl")
    rows = read_records(path, ("question", "answer"))
    answers, index, questions, targets = [], {}, [], []
    for _, r in rows:
        a = " ".join(str(r["answer"]).split())
        if a not in index:
            index[a] = len(answers)
            answers.append(a)
        questions.append(str(r["question"]))
        targets.append(index[a])
    return questions, np.asarray(targets, np.int64), answers


def split(targets, test_fraction=0.25, seed=0):
    """Hold out ``test_fraction`` of each answer's questions (answers with one question stay)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(targets), bool)
    for a in np.unique(targets):
        rows = np.flatnonzero(targets == a)
        if len(rows) > 1:
            n = max(1, int(round(len(rows) * test_fraction)))
            test[rng.choice(rows, n, replace=False)] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def _normal(text):
    return " ".join("".join(c if c.isalnum() else " " for c in str(text).lower()).split())


def drop_duplicates(questions, train_rows, test_rows):
    """``(test_rows, dropped)``: test questions without those whose text (case and
    punctuation aside) is also a training question."""
    seen = {_normal(questions[i]) for i in train_rows}
    keep = np.asarray([i for i in test_rows if _normal(questions[i]) not in seen], np.int64)
    return keep, len(test_rows) - len(keep)


def no_overlap(questions, targets, answers):
    """Bool per question: it shares no content word with its answer (`content_words`)."""
    from tfdeploy.data import content_words

    content = content_words(answers)
    return np.asarray([not set(_normal(q).split()) & content[t]
                       for q, t in zip(questions, targets)])


def nearest_question_scores(queries, train_questions, train_targets, num_answers):
    """Score each answer by the TF-IDF cosine of the query's most similar training question
    with that answer (a nearest-neighbour baseline that uses the training pairs)."""
    from tfdeploy import verify

    sims = verify.tfidf_scores(queries, train_questions)
    out = np.full((len(queries), int(num_answers)), -1.0)
    for a in np.unique(train_targets):
        out[:, a] = sims[:, train_targets == a].max(axis=1)
    return out


def metrics(scores, targets, hard, k):
    """recall@1, recall@k, MRR, and recall@1 on the questions sharing no content word."""
    from tfdeploy import verify

    m = verify.rank_metrics(scores, targets, ks=(1, k))
    out = {"recall@1": m["recall@1"], "recall@k": m[f"recall@{k}"], "mrr": m["mrr"]}
    if hard.any():
        out["recall@1_no_overlap"] = verify.rank_metrics(scores[hard], targets[hard],
                                                         ks=(1,))["recall@1"]
    return out


def run(args):
    from tfdeploy.recipes._harness import Run

    with Run(NAME, args) as session:
        return _train_serve(args, session)


def _train_serve(args, session):
    from tfdeploy import compress, data, export, models, verify
    from tfdeploy._keras import keras, tf
    from tfdeploy.client import RestClient
    from tfdeploy.recipes import _text
    from tfdeploy.recipes._harness import format_table
    from tfdeploy.runtime.text import TextTFLiteRunner

    verbose = 0 if args.quiet else 2
    path = args.data or data.write_qa_corpus(os.path.join("data", "qa"), seed=args.seed)
    questions, targets, answers = load_pairs(path)
    train_rows, test_rows = split(targets, seed=args.seed)
    test_rows, duplicates = drop_duplicates(questions, train_rows, test_rows)
    test_q = [questions[i] for i in test_rows]
    test_t = targets[test_rows]
    hard = no_overlap(test_q, test_t, answers)
    k = args.k
    print(f"[1/5] data: {len(answers)} answers, {len(train_rows)} train / {len(test_rows)} test "
          f"questions ({duplicates} verbatim training duplicates dropped, {int(hard.sum())} "
          f"share no content word with their answer); random recall@{k} = "
          f"{verify.random_recall(len(answers), k):.1%}")
    rows = session.rows
    rows.add({"variant": "TF-IDF", "format": "baseline",
              **metrics(verify.tfidf_scores(test_q, answers), test_t, hard, k)})
    rows.add({"variant": "BM25", "format": "baseline",
              **metrics(verify.bm25_scores(test_q, answers), test_t, hard, k)})
    rows.add({"variant": "TF-IDF nearest train question", "format": "baseline",
              **metrics(nearest_question_scores(test_q, [questions[i] for i in train_rows],
                                                targets[train_rows], len(answers)),
                        test_t, hard, k)})
    vectorizer = models.text_vectorizer(questions + answers, args.max_tokens,
                                        args.sequence_length)
    vocab = models.vocabulary(vectorizer)
    q_ids = vectorizer(tf.constant(questions)).numpy()
    a_ids = vectorizer(tf.constant(answers)).numpy()
    pairs = tf.data.Dataset.from_tensor_slices((q_ids[train_rows], a_ids[targets[train_rows]]))
    pairs = pairs.shuffle(len(train_rows), seed=args.seed).batch(args.batch_size)

    def train(encoder, stage, epochs, lr, extra=()):
        trainer = models.RetrievalTrainer(encoder, encoder)
        trainer.compile(keras.optimizers.Adam(lr))
        trainer.fit(pairs, epochs=epochs, verbose=verbose,
                    callbacks=_text.callbacks(session.logs(), stage, extra))
        return encoder

    def row(variant, fmt, model, fn_ids, fn_text, path=None, sparsity=None):
        if fn_text is not None:
            a_emb, q_emb = _text.embed(fn_text, answers), _text.embed(fn_text, test_q)
            p50 = _text.p50_ms(fn_text, test_q)
        else:
            a_emb, q_emb = _text.embed(fn_ids, a_ids), _text.embed(fn_ids, q_ids[test_rows])
            p50 = _text.p50_ms(fn_ids, q_ids[test_rows])
        rows.add({"variant": variant, "format": fmt, "params": _text.params(model),
                  "sparsity": compress.model_sparsity(model) if sparsity is None
                  else sparsity, **(_text.sizes(path) if path else {}),
                  **metrics(q_emb @ a_emb.T, test_t, hard, k), "p50_ms": p50,
                  "path": path})
        return a_emb

    print(f"[2/5] train the {args.encoder} dual encoder")
    encoder = models.build_text_encoder(models.vocab_size(vectorizer), args.sequence_length,
                                        output_dim=32, kind=args.encoder,
                                        embed_dim=args.embed_dim, name="qa_encoder")
    train(encoder, "encoder", args.epochs, args.lr)
    row("encoder", "keras", encoder, _text.keras_fn(encoder), None)
    coverage = _text.qat_coverage(encoder)

    print(f"[3/5] prune the encoder to {args.sparsity:.0%} and convert to TFLite")
    wrapped = compress.prune(encoder, args.sparsity, epochs=args.fine_tune_epochs,
                             steps_per_epoch=pairs)
    train(wrapped, "encoder_pruned", args.fine_tune_epochs, args.lr / 3,
          compress.callbacks(wrapped, log_dir=session.logs("encoder_pruned")))
    prune_report = str(compress.report(wrapped))
    pruned = compress.strip(wrapped)
    a_emb = row("encoder pruned", "keras", pruned, _text.keras_fn(pruned), None)
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, args.name)
    id_batches = tf.data.Dataset.from_tensor_slices(q_ids).batch(32)
    for quantization in ("dynamic", "int8"):
        tfl = export.text_tflite(pruned, f"{stem}_encoder_{quantization}.tflite", vocab,
                                 quantization=quantization, representative_data=id_batches)
        runner = TextTFLiteRunner(tfl)
        row(f"encoder pruned+{quantization}", "tflite", pruned, None, runner.predict, tfl,
            verify.weight_summary(tfl)["sparsity"])
    embedding_dtypes = {r["variant"]: _text.embedding_dtypes(r["path"]) for r in rows
                        if r.get("path")}

    print("[4/5] export the SavedModel with the answer index and serve it")
    base = os.path.join(args.output, args.name)
    pruned_row = rows["encoder pruned"]
    version_dir = export.retrieval_saved_model(
        pruned, base, a_emb, answers, vocabulary=vocab, k=k, warmup=test_q[:4],
        model_card={"metrics": {m: pruned_row[m] for m in ("recall@1", "recall@k", "mrr")}
                    | {"k": k}})
    served = {}
    if not args.no_serve:
        server = session.serve(args.name, base)
        rest = RestClient(f"127.0.0.1:{server.rest_port}", timeout=60)
        keys = []
        for i in range(0, len(test_q), 64):
            keys += [p["keys"] for p in rest.predict(
                args.name, instances=test_q[i:i + 64])["predictions"]]
        truth = [answers[t] for t in test_t]
        served = {"recall@1": float(np.mean([t == ks[0] for t, ks in zip(truth, keys)])),
                  "recall@k": float(np.mean([t in ks for t, ks in zip(truth, keys)])),
                  "recall@1_no_overlap": float(np.mean(
                      [t == ks[0] for t, ks, h in zip(truth, keys, hard) if h]))
                  if hard.any() else None,
                  "rest_p50_ms_one_text": _text.rest_latency_ms(
                      rest, args.name, [test_q[0]]),
                  "example": {"question": test_q[0], "top_answers": keys[0][:3]}}
        session.stop_serving()
        rows.add({"variant": "served (REST)", "format": "saved_model",
                  "params": _text.params(pruned), "sparsity": compress.model_sparsity(pruned),
                  **_text.sizes(version_dir), "recall@1": served["recall@1"],
                  "recall@k": served["recall@k"],
                  "recall@1_no_overlap": served["recall@1_no_overlap"],
                  "p50_ms": served["rest_p50_ms_one_text"],
                  "path": version_dir})

    print("[5/5] results")
    print()
    print(f"recall@k with k={k}; baselines untrained; served rows rank the top {k} only (no "
          f"MRR); random recall@{k} = {verify.random_recall(len(answers), k):.1%}")
    table = rows.as_list()
    print(format_table(table, COLUMNS))
    if served:
        print(f"\nQ: {served['example']['question']}\nA: {served['example']['top_answers'][0]}")
    _text.log_comparison(session.logs(), table, COLUMNS, NAME)
    report = _text.write_report(
        session.logs("report"), "Answer retrieval", table, COLUMNS, {
            "Setting": f"{len(answers)} answers, {len(test_q)} test questions "
                       f"({duplicates} training duplicates dropped, {int(hard.sum())} sharing "
                       f"no content word with their answer), k={k}, random recall@{k} = "
                       f"{verify.random_recall(len(answers), k):.2%}, encoder {args.encoder}",
            "Encoder pruning": "```\n" + prune_report + "\n```",
            "What tfmot QAT cannot quantize": _text.qat_text(coverage),
            "Embedding tables in the TFLite files": "\n".join(
                f"- {n}: {v}" for n, v in embedding_dtypes.items()),
        })
    session.print_outputs(report)
    session.finish({
        "rows": table, "baselines": rows.baselines(),
        "served": served, "k": k, "num_answers": len(answers),
        "num_test_questions": len(test_q), "duplicates_dropped": duplicates,
        "no_overlap_questions": int(hard.sum()),
        "random_recall": verify.random_recall(len(answers), k), "qat_coverage": coverage,
        "embedding_dtypes": embedding_dtypes, "saved_model": session.path(version_dir),
        "report": session.path(report)})
    return 0


def main(argv=None):
    """Run the answer retrieval recipe; returns the exit status."""
    from tfdeploy.recipes import _harness

    return _harness.main(NAME, build_parser, run, argv)
