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
