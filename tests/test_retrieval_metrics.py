"""Ranking metrics, the untrained baselines, and duplicate candidates in the in-batch softmax."""

import numpy as np
import pytest

from tfdeploy import models, verify
from tfdeploy._keras import tf
from tfdeploy.errors import VerificationError


def test_rank_metrics_ranks_ties_against_the_target_and_filters_seen_items():
    scores = np.array([[0.9, 0.5, 0.1, 0.0],     # target 1 at rank 2
                       [0.2, 0.2, 0.2, 0.2],     # all tied: target ranks last (4)
                       [0.1, 0.9, 0.8, 0.3]])    # target 2 at rank 2, rank 1 once 1 is seen
    m = verify.rank_metrics(scores, [1, 0, 2], ks=(1, 2))
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 2) / 3)
    assert m["recall@1"] == 0 and m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) * 2) / 3)
    seen = np.zeros_like(scores, bool)
    seen[2, 1] = True
    m = verify.rank_metrics(scores, [1, 0, 2], ks=(1,), exclude=seen)
    assert m["recall@1"] == pytest.approx(1 / 3)
    with pytest.raises(VerificationError, match="excluded"):
        verify.rank_metrics(scores, [1, 0, 1], exclude=seen)
    with pytest.raises(VerificationError, match="num_candidates"):
        verify.rank_metrics(scores[0], [1])


def test_lexical_baselines_find_the_matching_document():
    docs = ["reset your password in security", "close your account in profile",
            "check your card in cards"]
    queries = ["how to reset a password", "close account", "my visa"]
    for scores in (verify.tfidf_scores(queries, docs), verify.bm25_scores(queries, docs)):
        assert scores.shape == (3, 3)
        assert list(scores[:2].argmax(1)) == [0, 1]
        assert np.all(scores[2] == 0)               # no shared word: no signal at all
    # BM25 idf: a word in every document adds less than a rare one
    bm = verify.bm25_scores(["your", "security"], docs)
    assert bm[0, 0] < bm[1, 0]


def test_recommendation_baselines():
    train = np.array([[0, 0], [0, 1], [1, 1], [1, 2], [2, 1]])
    pop = verify.popularity_scores(train[:, 1], 4, 2)
    assert pop.tolist() == [[1, 3, 1, 0]] * 2
    topics = ["a", "a", "b", "b"]
    top = verify.topic_count_scores(train, topics, [0, 1])
    assert top[0].argmax() == 1 and top[0, 3] < top[0, 0]     # user 0: topic a, 1 most popular
    assert top[1, 2] > top[1, 3] and top[1, 0] > top[1, 3]     # user 1: both topics once
    co = verify.cooccurrence_scores(train, [2], 4)
    assert co[0].tolist() == [1, 0, 1, 0]                      # item 1 was taken with 0 and 2


def _loss_by_hand(q, c, keep_cols):
    logits = q @ c.T  # temperature 1
    out = []
    for i in range(len(q)):
        row = logits[i, keep_cols[i]]
        target = list(keep_cols[i]).index(i)
        out.append(np.log(np.exp(row - row.max()).sum()) + row.max() - row[target])
    return float(np.mean(out))


def test_retrieval_trainer_masks_duplicate_candidates():
    """Two queries of one answer in a batch: the other copy is not a negative for either."""
    tf.keras.utils.set_random_seed(0)
    query_tower = models.build_id_encoder(6, 4, 4, name="q")
    cand_tower = models.build_id_encoder(6, 4, 4, name="c", input_name="item")
    trainer = models.RetrievalTrainer(query_tower, cand_tower, temperature=1.0, symmetric=False)
    queries = np.array([0, 1, 2, 3], np.int32)
    cands = np.array([5, 4, 5, 3], np.int32)          # rows 0 and 2 share candidate 5
    loss = float(trainer._loss((queries, cands), False))
    q = query_tower(queries).numpy()
    c = cand_tower(cands).numpy()
    keep = [[0, 1, 3], [0, 1, 2, 3], [1, 2, 3], [0, 1, 2, 3]]
    assert loss == pytest.approx(_loss_by_hand(q.astype(np.float64), c.astype(np.float64),
                                               keep), rel=1e-5)
    unmasked = _loss_by_hand(q.astype(np.float64), c.astype(np.float64), [range(4)] * 4)
    assert loss + 0.05 < unmasked      # counting the copy as a negative raises the loss
    mask = models.duplicate_mask(tf.constant([[1, 2], [3, 4], [1, 2]])).numpy()
    assert mask.tolist() == [[False, False, True], [False, False, False], [True, False, False]]


def test_answer_retrieval_drops_training_duplicates_and_flags_no_overlap_questions():
    from tfdeploy.recipes.answer_retrieval import drop_duplicates, no_overlap

    questions = ["How do I reset my password?", "how do i reset my password",
                 "recover my passcode", "close my account"]
    rows, dropped = drop_duplicates(questions, [0], [1, 2, 3])
    assert rows.tolist() == [2, 3] and dropped == 1      # case and punctuation aside
    answers = ["To reset your password, open Security in the app.",
               "To close your account, open Profile in the app."]
    flags = no_overlap(questions, [0, 0, 0, 1], answers)
    assert flags.tolist() == [False, False, True, False]


def test_recommender_holds_out_new_items_and_masks_the_seen_ones():
    from tfdeploy.recipes.recommender import leave_last_out, seen_mask

    pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 4], [1, 4], [2, 5]])
    train, test = leave_last_out(pairs)
    assert test.tolist() == [[0, 3]]     # user 1 re-took item 4; user 2 has one interaction
    mask = seen_mask(train, test[:, 0], 6)
    assert np.flatnonzero(mask[0]).tolist() == [1, 2]


def test_recipe_rows_log_their_ranking_metrics_as_hparams_columns(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfdeploy import viz

    rows = [{"variant": "BM25", "format": "baseline", "recall@1": 0.1, "recall@k": 0.3,
             "mrr": 0.2},
            {"variant": "two towers", "format": "keras", "hr@k": 0.6, "ndcg@k": 0.4,
             "mrr": 0.3, "gzip_bytes": 1000}]
    dirs = viz.log_rows(str(tmp_path), rows)
    tags = []
    for d in dirs:
        acc = EventAccumulator(d, size_guidance={"tensors": 0})
        acc.Reload()
        tags.append(set(acc.Tags()["tensors"]))
    assert {"recall_at_1", "recall_at_k", "mrr"} <= tags[0]
    assert {"hr_at_k", "ndcg_at_k", "mrr", "gzip_bytes"} <= tags[1]
    assert {"recall_at_1", "hr_at_k", "mrr"} <= set(viz.METRICS)
