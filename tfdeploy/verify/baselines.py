"""Untrained baselines a skeptic tries first, as score matrices for `rank_metrics`.

Text retrieval: TF-IDF cosine (scikit-learn) and Okapi BM25 between queries and
documents. Recommendation: item popularity, a topic-count heuristic (items of
the topics a user interacted with most, then the most popular of those) and
item-item co-occurrence ("users who took this also took").
"""

import numpy as np

from tfdeploy.errors import DataError


def _analyzer():
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b").build_analyzer()


def tfidf_scores(queries, documents):
    """``(len(queries), len(documents))`` TF-IDF cosine similarities (fit on the documents).

    Args:
        queries: list of str.
        documents: list of str (the candidates, e.g. answers).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not len(documents):
        raise DataError("tfidf_scores needs at least one document.")
    vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", sublinear_tf=True)
    docs = vectorizer.fit_transform(list(documents))
    return (vectorizer.transform(list(queries)) @ docs.T).toarray()


def bm25_scores(queries, documents, k1=1.5, b=0.75):
    """``(len(queries), len(documents))`` Okapi BM25 scores (idf ``log(1 + (N-n+.5)/(n+.5))``).

    Args:
        queries: list of str.
        documents: list of str.
        k1: term-frequency saturation. Defaults to 1.5.
        b: length normalisation. Defaults to 0.75.
    """
    if not len(documents):
        raise DataError("bm25_scores needs at least one document.")
    analyze = _analyzer()
    docs = [analyze(d) for d in documents]
    vocab = {t: i for i, t in enumerate(sorted({t for d in docs for t in d}))}
    tf = np.zeros((len(docs), len(vocab)))
    for j, d in enumerate(docs):
        for t in d:
            tf[j, vocab[t]] += 1
    lengths = tf.sum(1)
    df = (tf > 0).sum(0)
    idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
    weight = tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[:, None] / max(lengths.mean(), 1)))
    q = np.zeros((len(queries), len(vocab)))
    for i, text in enumerate(queries):
        for t in set(analyze(text)):
            if t in vocab:
                q[i, vocab[t]] = 1.0
    return q @ (weight * idf).T


def popularity_scores(train_items, num_items, num_queries):
    """Every query scores an item by how often it occurs in ``train_items`` (the same ranking)."""
    counts = np.bincount(np.asarray(train_items, np.int64), minlength=int(num_items))
    return np.tile(counts.astype(np.float64), (int(num_queries), 1))


def topic_count_scores(train_pairs, item_topics, query_users):
    """Score items by how many of the user's training interactions share the item's topic.

    Ties (items of one topic) are broken by popularity, so this is "the most popular
    items of the user's most frequent topics".

    Args:
        train_pairs: ``(n, 2)`` int array of ``(user, item)`` training interactions.
        item_topics: ``(num_items,)`` topic of each item (any hashable values).
        query_users: the users to score, one row each.

    Returns:
        ``(len(query_users), num_items)`` scores.
    """
    train_pairs = np.asarray(train_pairs, np.int64).reshape(-1, 2)
    topics, topic_of = np.unique(np.asarray(item_topics), return_inverse=True)
    users = np.asarray(query_users, np.int64)
    per_user = np.zeros((int(max(users.max(initial=0), train_pairs[:, 0].max(initial=0))) + 1,
                         len(topics)))
    np.add.at(per_user, (train_pairs[:, 0], topic_of[train_pairs[:, 1]]), 1.0)
    popularity = np.bincount(train_pairs[:, 1], minlength=len(topic_of)).astype(np.float64)
    tie_break = popularity / (popularity.max() + 1.0)
    return per_user[users][:, topic_of] + tie_break[None, :]


def cooccurrence_scores(train_pairs, query_users, num_items):
    """Score items by how often they co-occur (same user) with the user's training items.

    Args:
        train_pairs: ``(n, 2)`` int array of ``(user, item)`` training interactions.
        query_users: the users to score, one row each.
        num_items: items in the catalogue.

    Returns:
        ``(len(query_users), num_items)`` scores.
    """
    train_pairs = np.asarray(train_pairs, np.int64).reshape(-1, 2)
    users = np.asarray(query_users, np.int64)
    n_users = int(max(users.max(initial=0), train_pairs[:, 0].max(initial=0))) + 1
    taken = np.zeros((n_users, int(num_items)))
    taken[train_pairs[:, 0], train_pairs[:, 1]] = 1.0
    co = taken.T @ taken
    np.fill_diagonal(co, 0.0)
    return taken[users] @ co
