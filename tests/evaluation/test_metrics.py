"""Metric formulas against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evorec.evaluation import metrics as M

RANKS = np.array([0, 1, 4, 9, 20])  # 0-based: items placed above the target


def test_hit_rate_and_recall():
    np.testing.assert_array_equal(M.hit_rate(RANKS, 5), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(M.hit_rate(RANKS, 1), [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(M.hit_rate(RANKS, 10), [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(M.recall(RANKS, 5), M.hit_rate(RANKS, 5))


def test_ndcg():
    want = [1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0, 0.0]
    np.testing.assert_allclose(M.ndcg(RANKS, 5), want)
    np.testing.assert_allclose(M.ndcg(RANKS, 10)[3], 1 / math.log2(11))
    np.testing.assert_allclose(M.ndcg(np.array([0]), 1), [1.0])


def test_mrr_and_map():
    np.testing.assert_allclose(M.mrr(RANKS), [1, 1 / 2, 1 / 5, 1 / 10, 1 / 21])
    np.testing.assert_allclose(M.mrr(RANKS, 5), [1, 1 / 2, 1 / 5, 0, 0])
    # One relevant item: AP@K is the precision at the hit, i.e. MRR@K.
    np.testing.assert_allclose(M.average_precision(RANKS, 5), [1, 1 / 2, 1 / 5, 0, 0])


def test_summarize_names_and_means():
    s = M.summarize(RANKS, (5, 10), suffix=" (sampled-uniform-100)")
    assert s["HR@5 (sampled-uniform-100)"] == pytest.approx(0.6)
    assert s["HR@10 (sampled-uniform-100)"] == pytest.approx(0.8)
    assert s["NDCG@5 (sampled-uniform-100)"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert s["MRR (sampled-uniform-100)"] == pytest.approx((1 + 0.5 + 0.2 + 0.1 + 1 / 21) / 5)
    assert s["MRR@5 (sampled-uniform-100)"] == pytest.approx(1.7 / 5)
    assert s["MAP@10 (sampled-uniform-100)"] == pytest.approx(1.8 / 5)
    assert s["Recall@10 (sampled-uniform-100)"] == s["HR@10 (sampled-uniform-100)"]
    assert set(M.summarize(RANKS, (5,))) == {"HR@5", "Recall@5", "NDCG@5", "MRR@5", "MAP@5", "MRR"}
    assert math.isnan(M.summarize(np.zeros(0, np.int64), (5,))["HR@5"])


def test_per_user_dispatch():
    np.testing.assert_array_equal(M.per_user("HR", RANKS, 5), M.hit_rate(RANKS, 5))
    np.testing.assert_array_equal(M.per_user("MRR", RANKS), M.mrr(RANKS))
    with pytest.raises(ValueError, match="unknown metric"):
        M.per_user("AUC", RANKS, 5)
    with pytest.raises(ValueError, match="cut-off"):
        M.per_user("NDCG", RANKS)


def test_bad_inputs():
    with pytest.raises(ValueError, match="negative"):
        M.hit_rate(np.array([0, -1]), 5)
    with pytest.raises(ValueError, match="positive integer"):
        M.ndcg(RANKS, 0)
    with pytest.raises(ValueError, match="1-d"):
        M.mrr(np.zeros((2, 2), np.int64))


# catalogue items 1..5 with training counts 10, 5, 5, 0, 1 (index 0 is padding)
COUNTS = np.array([0, 10, 5, 5, 0, 1])


def test_item_coverage():
    topk = np.array([[1, 2], [2, 3], [3, 0]])  # 0 = empty slot, ignored
    assert M.item_coverage(topk, n_items=6) == pytest.approx(3 / 5)
    assert M.item_coverage(topk, n_items=6, k=1) == pytest.approx(3 / 5)  # items 1, 2, 3
    assert M.item_coverage(np.array([[1, 2], [1, 4]]), n_items=6, k=1) == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="only 2 columns"):
        M.item_coverage(topk, n_items=6, k=3)


def test_popularity_percentile():
    # sorted catalogue counts: 0 1 5 5 10; pct = (#below + #at-or-below) / (2 * 5)
    pct = M.popularity_percentile(COUNTS)
    assert math.isnan(pct[0])
    np.testing.assert_allclose(pct[1:], [9 / 10, 6 / 10, 6 / 10, 1 / 10, 3 / 10])


def test_popularity_bias():
    topk = np.array([[1, 2], [4, 5], [4, 0]])
    np.testing.assert_allclose(M.popularity_bias(topk, COUNTS), [0.75, 0.2, 0.1])
    np.testing.assert_allclose(M.popularity_bias(topk, COUNTS, k=1), [0.9, 0.1, 0.1])


def test_novelty():
    # add-one shares: (c + 1) / (21 + 5)
    topk = np.array([[1, 4], [2, 0]])
    want = [(-math.log2(11 / 26) - math.log2(1 / 26)) / 2, -math.log2(6 / 26)]
    np.testing.assert_allclose(M.novelty(topk, COUNTS), want)
    with pytest.raises(ValueError, match="outside"):
        M.novelty(np.array([[7]]), COUNTS)
