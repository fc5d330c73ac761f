"""Retrieval metrics: top-k search over unit embeddings and recall@k against a random baseline."""

import numpy as np

from tfdeploy.errors import VerificationError


def top_k(queries, candidates, k=10):
    """Indices ``(num_queries, k)`` of the ``k`` highest dot products, best first."""
    queries, candidates = np.asarray(queries, np.float32), np.asarray(candidates, np.float32)
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise VerificationError(f"queries {queries.shape} and candidates {candidates.shape} must "
                                "be 2-D with the same embedding size.")
    k = min(int(k), candidates.shape[0])
    scores = queries @ candidates.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recall_at_k(queries, candidates, targets, k=10):
    """Share of queries whose target candidate index is among their top ``k``.

    Args:
        queries: ``(n, d)`` query embeddings.
        candidates: ``(m, d)`` candidate embeddings.
        targets: ``(n,)`` index of each query's relevant candidate.
        k: cut-off. Defaults to 10.

    Returns:
        A float in [0, 1].
    """
    targets = np.asarray(targets).reshape(-1)
    if len(targets) != len(queries):
        raise VerificationError(f"{len(queries)} queries but {len(targets)} targets.")
    hits = top_k(queries, candidates, k) == targets[:, None]
    return float(np.mean(hits.any(axis=1)))


def random_recall(num_candidates, k=10):
    """Expected recall@k of ranking the candidates at random: ``k / num_candidates``."""
    return min(1.0, int(k) / int(num_candidates))


def rank_metrics(scores, targets, ks=(1, 5, 10), exclude=None):
    """MRR, recall@k (= hit rate@k) and NDCG@k of one relevant candidate per query.

    Ranks every candidate by ``scores`` (higher first; ties count against the
    target: it ranks after every candidate scoring the same), so baselines that
    score whole matrices and models that embed are measured the same way.

    Args:
        scores: ``(num_queries, num_candidates)`` scores.
        targets: ``(num_queries,)`` index of each query's relevant candidate.
        ks: cut-offs. Defaults to (1, 5, 10).
        exclude: optional boolean ``(num_queries, num_candidates)`` mask of
            candidates to leave out of the ranking (a user's already seen
            items); a target marked there is an error.

    Returns:
        ``{"mrr", "recall@k", "ndcg@k" for each k}``: floats in [0, 1]. With one
        relevant item, recall@k is the hit rate HR@k.

    Raises:
        VerificationError: shapes that do not match, or an excluded target.
    """
    scores = np.asarray(scores, np.float64)
    targets = np.asarray(targets).reshape(-1)
    if scores.ndim != 2 or len(targets) != scores.shape[0]:
        raise VerificationError(f"scores {scores.shape} must be (num_queries, num_candidates) "
                                f"for {len(targets)} targets.")
    if len(targets) and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise VerificationError(f"targets must index the {scores.shape[1]} candidates.")
    rows = np.arange(len(targets))
    if exclude is not None:
        exclude = np.asarray(exclude, bool)
        if exclude.shape != scores.shape:
            raise VerificationError(f"exclude {exclude.shape} must match scores {scores.shape}.")
        if exclude[rows, targets].any():
            raise VerificationError(
                f"{int(exclude[rows, targets].sum())} targets are excluded from their own "
                "ranking; drop those queries (a seen item held out again) first.")
        scores = np.where(exclude, -np.inf, scores)
    target_scores = scores[rows, targets][:, None]
    # rank 1 = best; candidates tied with the target rank ahead of it (no lucky ties)
    rank = np.sum(scores > target_scores, axis=1) + np.sum(scores == target_scores, axis=1)
    out = {"mrr": float(np.mean(1.0 / rank)) if len(rank) else 0.0}
    for k in ks:
        hit = rank <= int(k)
        out[f"recall@{k}"] = float(np.mean(hit)) if len(rank) else 0.0
        out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(rank + 1), 0.0))) \
            if len(rank) else 0.0
    return out
