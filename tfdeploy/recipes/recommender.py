"""Two-tower recommender: user-id and item-text towers; embedding tables pruned + int8; served.

Trains a user tower (an embedding table over user ids) and an item tower (a
text encoder over item descriptions) with an in-batch softmax on user-item
interactions (the bundled synthetic corpus, or ``--data``), ranks every item
the user has not interacted with for each user's held-out last interaction
(HR@k, NDCG@k, MRR) against popularity, a topic-count heuristic and item-item
co-occurrence, compresses the embedding tables (magnitude pruning, then int8
TFLite), measures again in the TFLite runtime, and exports a SavedModel whose
``serving_default`` takes a user id and returns the top-k items from an
item-embedding index shipped as an asset, then serves it.

    tfdeploy run recommender
    python recipes/recommender.py --data my_shop --k 20 --json out.json

``--data DIR`` holds ``items.jsonl`` (or ``.csv``) with ``item``, ``text`` and
optionally ``topic`` (the topic-count heuristic needs it), and
``interactions.csv`` (or ``.jsonl``) with ``user`` and ``item``, in time order.
"""

import argparse
import os

import numpy as np

NAME = "recommender"
COLUMNS = [("variant", "variant", None), ("format", "format", None),
           ("params", "params", "{:,}"), ("sparsity", "sparsity", "{:.1%}"),
           ("gzip_bytes", "gzip bytes", "{:,}"), ("hr@k", "HR@k", "{:.2%}"),
           ("ndcg@k", "NDCG@k", "{:.3f}"), ("mrr", "MRR", "{:.3f}"),
           ("p50_ms", "p50 ms", "{:.3f}")]


def build_parser():
    from tfdeploy.recipes import _text

    p = argparse.ArgumentParser(prog=f"tfdeploy run {NAME}",
                                description=__doc__.strip().split("\n\n")[1])
    _text.add_common_arguments(
        p, NAME, "folder with items.jsonl (item, text) and interactions.csv (user, item) "
                 "(default: the bundled synthetic corpus, written to data/recommend)", epochs=10)
    p.add_argument("--name", default="recommender",
                   help="served model name (default: %(default)s)")
    p.add_argument("--k", type=int, default=10,
                   help="HR@k / NDCG@k cut-off and items served per user (default: "
                        "%(default)s)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="interactions per in-batch-softmax step (default: %(default)s)")
    _text.add_no_serve(p)
    return p


def _find(directory, stem):
    from tfdeploy.errors import TextDataError

    for ext in (".jsonl", ".csv"):
        path = os.path.join(directory, stem + ext)
        if os.path.isfile(path):
            return path
    raise TextDataError(f"{directory!r} has no {stem}.jsonl or {stem}.csv.")


def load(directory):
    """``(item_keys, item_texts, users, pairs, topics)``: ``pairs`` as index rows in file order,
    ``topics`` the items' topics (None when the items file has no ``topic``)."""
    from tfdeploy.data import read_records
    from tfdeploy.errors import TextDataError

    items = read_records(_find(directory, "items"), ("item", "text"), optional=("topic",))
    keys = [str(r["item"]) for _, r in items]
    if len(set(keys)) != len(keys):
        raise TextDataError(f"Item ids in {directory!r} must be unique.")
    index = {k: i for i, k in enumerate(keys)}
    users, user_index, pairs = [], {}, []
    for number, r in read_records(_find(directory, "interactions"), ("user", "item")):
        item = str(r["item"])
        if item not in index:
            raise TextDataError(f"interactions line {number}: item {item!r} is not in items.")
        user = str(r["user"])
        if user not in user_index:
            user_index[user] = len(users)
            users.append(user)
        pairs.append((user_index[user], index[item]))
    topics = [r["topic"] for _, r in items]
    if any(t is None for t in topics):
        topics = None
    return (keys, [str(r["text"]) for _, r in items], users, np.asarray(pairs, np.int64),
            topics)


def leave_last_out(pairs):
    """Each user's last interaction is the test target (users with at least two, and only
    when that item is new to the user: a seen item is filtered out of the ranking)."""
    last = {}
    for row, (u, _) in enumerate(pairs):
        last[u] = row
    counts = np.bincount(pairs[:, 0])
    test_rows = np.asarray(sorted(r for u, r in last.items() if counts[u] > 1), np.int64)
    train = np.ones(len(pairs), bool)
    train[test_rows] = False
    seen = {(int(u), int(i)) for u, i in pairs[train]}
    test_rows = np.asarray([r for r in test_rows if tuple(map(int, pairs[r])) not in seen],
                           np.int64)
    return pairs[train], pairs[test_rows]


def seen_mask(train_pairs, users, num_items):
    """``(len(users), num_items)`` bool: the items each user interacted with in training."""
    row_of = {int(u): j for j, u in enumerate(users)}
    mask = np.zeros((len(users), int(num_items)), bool)
    for u, i in train_pairs:
        if int(u) in row_of:
            mask[row_of[int(u)], int(i)] = True
    return mask


def metrics(scores, targets, seen, k):
    """``{"hr@k", "ndcg@k", "mrr"}`` of ``scores`` with the seen items filtered out."""
    from tfdeploy import verify

    m = verify.rank_metrics(scores, targets, ks=(k,), exclude=seen)
    return {"hr@k": m[f"recall@{k}"], "ndcg@k": m[f"ndcg@{k}"], "mrr": m["mrr"]}


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
    from tfdeploy.runtime.tflite import TFLiteRunner

    verbose = 0 if args.quiet else 2
    directory = args.data or data.write_recommendation_corpus(
        os.path.join("data", "recommend"), seed=args.seed)
    keys, texts, users, pairs, topics = load(directory)
    train_pairs, test_pairs = leave_last_out(pairs)
    k = args.k
    test_users = test_pairs[:, 0].astype(np.int32)
    seen = seen_mask(train_pairs, test_users, len(keys))
    print(f"[1/5] data: {len(users)} users, {len(keys)} items, {len(train_pairs)} train "
          f"interactions, {len(test_pairs)} held-out new items; random HR@{k} = "
          f"{verify.random_recall(len(keys), k):.1%}")
    rows = session.rows
    rows.add({"variant": "popularity", "format": "baseline", **metrics(
        verify.popularity_scores(train_pairs[:, 1], len(keys), len(test_users)),
        test_pairs[:, 1], seen, k)})
    if topics is not None:
        rows.add({"variant": "topic count", "format": "baseline", **metrics(
            verify.topic_count_scores(train_pairs, topics, test_users), test_pairs[:, 1],
            seen, k)})
    else:
        print("  (no topic column in the items file: the topic-count baseline is left out)")
    rows.add({"variant": "co-occurrence", "format": "baseline", **metrics(
        verify.cooccurrence_scores(train_pairs, test_users, len(keys)), test_pairs[:, 1],
        seen, k)})
    vectorizer = models.text_vectorizer(texts, args.max_tokens, args.sequence_length)
    vocab = models.vocabulary(vectorizer)
    item_ids = vectorizer(tf.constant(texts)).numpy()
    ds = tf.data.Dataset.from_tensor_slices(
        (train_pairs[:, 0].astype(np.int32), item_ids[train_pairs[:, 1]]))
    ds = ds.shuffle(len(train_pairs), seed=args.seed).batch(args.batch_size)

    def train(user_tower, item_tower, stage, epochs, lr, extra=()):
        trainer = models.RetrievalTrainer(user_tower, item_tower)
        trainer.compile(keras.optimizers.Adam(lr))
        trainer.fit(ds, epochs=epochs, verbose=verbose,
                    callbacks=_text.callbacks(session.logs(), stage, extra))

    def row(variant, fmt, user_model, item_model, user_fn, item_fn, item_inputs, paths=(),
            sparsity=None):
        item_emb = _text.embed(item_fn, item_inputs)
        user_emb = _text.embed(user_fn, test_users)
        size = {}
        if paths:
            per = [_text.sizes(p) for p in paths]
            size = {key: sum(s[key] for s in per) for key in per[0]}
        rows.add({"variant": variant, "format": fmt,
                  "params": _text.params(user_model) + _text.params(item_model),
                  "sparsity": sparsity if sparsity is not None else float(np.mean(
                      [compress.model_sparsity(user_model),
                       compress.model_sparsity(item_model)])),
                  **size, **metrics(user_emb @ item_emb.T, test_pairs[:, 1], seen, k),
                  "p50_ms": _text.p50_ms(user_fn, test_users), "paths": list(paths)})
        return item_emb

    print("[2/5] train the two towers")
    user_tower = models.build_id_encoder(len(users), 32, args.embed_dim, name="user_tower")
    item_tower = models.build_text_encoder(models.vocab_size(vectorizer), args.sequence_length,
                                           32, "cnn", args.embed_dim, name="item_tower",
                                           filters=32)
    train(user_tower, item_tower, "towers", args.epochs, args.lr)
    row("two towers", "keras", user_tower, item_tower, _text.keras_fn(user_tower),
        _text.keras_fn(item_tower), item_ids)

    print(f"[3/5] prune both towers to {args.sparsity:.0%} (embedding tables included)")
    pu = compress.prune(user_tower, args.sparsity, epochs=args.fine_tune_epochs,
                        steps_per_epoch=ds)
    pi = compress.prune(item_tower, args.sparsity, epochs=args.fine_tune_epochs,
                        steps_per_epoch=ds)
    train(pu, pi, "towers_pruned", args.fine_tune_epochs, args.lr / 3,
          compress.callbacks(pu, log_dir=session.logs("towers_pruned")))
    reports = {"user tower": str(compress.report(pu)), "item tower": str(compress.report(pi))}
    user_pruned, item_pruned = compress.strip(pu), compress.strip(pi)
    item_emb = row("towers pruned", "keras", user_pruned, item_pruned,
                   _text.keras_fn(user_pruned), _text.keras_fn(item_pruned), item_ids)

    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, args.name)
    users_rep = tf.data.Dataset.from_tensor_slices(
        np.arange(len(users), dtype=np.int32)).batch(32)
    items_rep = tf.data.Dataset.from_tensor_slices(item_ids).batch(32)
    for quantization in ("dynamic", "int8"):
        u_path = export.tflite(user_pruned, f"{stem}_users_{quantization}.tflite",
                               quantization=quantization, representative_data=users_rep)
        i_path = export.text_tflite(item_pruned, f"{stem}_items_{quantization}.tflite", vocab,
                                    quantization=quantization, representative_data=items_rep)
        u_run, i_run = TFLiteRunner(u_path), TextTFLiteRunner(i_path)
        summaries = [verify.weight_summary(p) for p in (u_path, i_path)]
        row(f"towers pruned+{quantization}", "tflite", user_pruned, item_pruned, u_run.predict,
            i_run.predict, texts, (u_path, i_path),
            float(np.mean([s["sparsity"] for s in summaries])))
    embedding_dtypes = {p: _text.embedding_dtypes(p) for r in rows for p in r.get("paths", ())}

    print("[4/5] export the SavedModel with the item index and serve it")
    base = os.path.join(args.output, args.name)
    pruned_row = rows["towers pruned"]
    # serve k + the most items any user has seen, so k remain once the client drops seen ones
    served_k = k + int(np.bincount(train_pairs[:, 0]).max())
    version_dir = export.retrieval_saved_model(
        user_pruned, base, item_emb, keys, query_ids=users, k=served_k, warmup=users[:4],
        model_card={"metrics": {"hr@k": pruned_row["hr@k"], "ndcg@k": pruned_row["ndcg@k"],
                                "mrr": pruned_row["mrr"], "k": k, "seen_items_filtered": True}})
    served = {}
    if not args.no_serve:
        server = session.serve(args.name, base)
        rest = RestClient(f"127.0.0.1:{server.rest_port}", timeout=60)
        names = [users[u] for u in test_users]
        got = []
        for i in range(0, len(names), 64):
            got += [p["keys"] for p in rest.predict(
                args.name, instances=names[i:i + 64])["predictions"]]
        seen_keys = [{keys[i] for i in np.flatnonzero(m)} for m in seen]
        got = [[g for g in top if g not in s][:k] for top, s in zip(got, seen_keys)]
        served = {"hr@k": float(np.mean([keys[t] in g for t, g in
                                         zip(test_pairs[:, 1], got)])),
                  "rest_p50_ms_one_user": _text.rest_latency_ms(rest, args.name, names[:1]),
                  "example": {"user": names[0], "top_items": got[0][:5]}}
        session.stop_serving()
        rows.add({"variant": "served (REST)", "format": "saved_model",
                     "params": _text.params(user_pruned), **_text.sizes(version_dir),
                     "sparsity": compress.model_sparsity(user_pruned),
                     "hr@k": served["hr@k"], "p50_ms": served["rest_p50_ms_one_user"],
                     "paths": [version_dir]})

    print("[5/5] results")
    print()
    print(f"k={k}, items the user has seen filtered out; baselines untrained; random HR@{k} = "
          f"{verify.random_recall(len(keys), k):.1%}")
    table = rows.as_list()
    print(format_table(table, COLUMNS))
    _text.log_comparison(session.logs(), table, COLUMNS, NAME)
    sections = {"Setting": f"{len(users)} users, {len(keys)} items, {len(test_pairs)} held-out "
                           f"new items, k={k} (seen items filtered), random HR@{k} = "
                           f"{verify.random_recall(len(keys), k):.2%}"}
    sections.update({f"Pruning: {n}": "```\n" + r + "\n```" for n, r in reports.items()})
    sections["What tfmot QAT cannot quantize"] = "\n".join(
        _text.qat_text(_text.qat_coverage(m)) for m in (user_tower, item_tower))
    sections["Embedding tables in the TFLite files"] = "\n".join(
        f"- {os.path.basename(p)}: {v}" for p, v in embedding_dtypes.items())
    report = _text.write_report(session.logs("report"), "Two-tower recommender", table,
                                COLUMNS, sections)
    session.print_outputs(report)
    session.finish({
        "rows": table, "baselines": rows.baselines(),
        "served": served, "k": k, "num_items": len(keys), "num_test_users": len(test_pairs),
        "seen_items_filtered": True, "random_recall": verify.random_recall(len(keys), k),
        "embedding_dtypes": {session.path(p): d for p, d in embedding_dtypes.items()},
        "saved_model": session.path(version_dir), "report": session.path(report)})
    return 0


def main(argv=None):
    """Run the recommender recipe; returns the exit status."""
    from tfdeploy.recipes import _harness

    return _harness.main(NAME, build_parser, run, argv)
