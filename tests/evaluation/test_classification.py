"""Next-category classification and AUC/GAUC (evorec.evaluation.classification)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from evorec.evaluation.classification import (
    category_scores,
    category_scores_reference,
    classification_metrics,
    gauc,
    per_user_auc,
    pooled_auc,
)

# ---------------------------------------------------------------- category_scores


def test_category_scores_by_hand():
    # items 1..3 with probabilities 1/4, 1/4, 1/2 (logits log 1, log 1, log 2); padding ignored
    scores = torch.tensor([[100.0, 0.0, 0.0, math.log(2.0)]])
    cats = torch.tensor([0, 1, 1, 2])
    out = category_scores(scores, cats, 3)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.5, 0.5]]))


def test_category_scores_matches_reference_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    b, n_items, n_cat = 9, 40, 6
    scores = torch.randn(b, n_items, generator=g) * 3
    scores[torch.rand(b, n_items, generator=g) < 0.3] = -math.inf  # excluded items
    scores[4, 1:] = -math.inf  # a row with every real item excluded (padding stays finite)
    cats = torch.randint(0, n_cat, (n_items,), generator=g)
    fast = category_scores(scores, cats, n_cat)
    ref = category_scores_reference(scores, cats, n_cat)
    assert fast.shape == (b, n_cat)
    assert not torch.isnan(fast).any()
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(fast.sum(dim=1), torch.ones(b))
    torch.testing.assert_close(fast[4], torch.full((n_cat,), 1.0 / n_cat))  # uniform fallback


def test_category_scores_ignores_padding_column():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 10, generator=g)
    cats = torch.randint(0, 4, (10,), generator=g)
    other = scores.clone()
    other[:, 0] = torch.tensor([50.0, -math.inf, 0.0])
    torch.testing.assert_close(category_scores(scores, cats, 4), category_scores(other, cats, 4))


def test_category_scores_rejects_bad_categories():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        category_scores(torch.zeros(2, 4), torch.tensor([0, 1, 3, 2]), 3)
    with pytest.raises(ValueError, match="item_category"):
        category_scores(torch.zeros(2, 4), torch.tensor([0, 1, 2]), 3)


# ---------------------------------------------------------------- classification_metrics

Y_TRUE = np.array([1, 1, 2, 2, 3])
Y_PRED = np.array([1, 2, 2, 2, 1])


def test_classification_metrics_by_hand():
    m = classification_metrics(Y_TRUE, Y_PRED)
    # label 1: P 1/2 R 1/2 F 1/2; label 2: P 2/3 R 1 F 0.8; label 3: never predicted -> 0, 0, 0
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["precision_macro"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert m["recall_macro"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    for k in ("precision_micro", "recall_micro", "f1_micro"):
        assert m[k] == pytest.approx(0.6)  # single-label: micro = accuracy
    assert m["n"] == 5 and m["n_labels"] == 3
    c = m["confusion"]
    assert c["labels"] == [1, 2, 3]
    assert list(zip(c["true"], c["pred"], c["count"])) == [(2, 2, 2), (1, 1, 1), (1, 2, 1), (3, 1, 1)]
    assert all(type(v) is int for v in c["true"] + c["pred"] + c["count"])
    assert c["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_classification_metrics_names_and_sparse_only():
    m = classification_metrics(Y_TRUE, Y_PRED, label_names=["unknown", "books", "toys", "food"], max_dense=2)
    assert m["confusion"]["labels"] == ["books", "toys", "food"]
    assert m["confusion"]["label_ids"] == [1, 2, 3]
    assert "matrix" not in m["confusion"]


def test_macro_average_over_occurring_labels_only():
    # label 4 only predicted, label 7 nowhere: averaged over {1, 4}
    m = classification_metrics(np.array([1, 1]), np.array([1, 4]))
    assert m["n_labels"] == 2
    # label 1: P 1 R 1/2 F 2/3; label 4: P 0 R 0 F 0
    assert m["f1_macro"] == pytest.approx((2 / 3) / 2)
    assert m["recall_macro"] == pytest.approx(0.25)


def test_classification_metrics_rejects_empty_and_mismatch():
    with pytest.raises(ValueError, match="at least one"):
        classification_metrics(np.array([], dtype=int), np.array([], dtype=int))
    with pytest.raises(ValueError, match="3 labels.*2"):
        classification_metrics(np.array([1, 2, 3]), np.array([1, 2]))


# ---------------------------------------------------------------- AUC / GAUC


def test_per_user_auc_known_values():
    out = per_user_auc(np.array([0, 10, 5, 0, 0]), np.array([11, 11, 11, 1, 2]))
    np.testing.assert_allclose(out[:3], [1.0, 0.0, 0.5])
    assert np.isnan(out[3])
    assert out[4] == 1.0
    np.testing.assert_allclose(per_user_auc(np.array([0, 2]), 5), [1.0, 0.5])  # scalar n
    with pytest.raises(ValueError, match="rank"):
        per_user_auc(np.array([11]), np.array([11]))


def test_per_user_auc_matches_sklearn_per_user():
    rng = np.random.default_rng(0)
    for _ in range(5):
        target, negatives = rng.random(), rng.random(20)
        rank = int((negatives >= target).sum())
        y = np.r_[1, np.zeros(20)]
        expected = roc_auc_score(y, np.r_[target, negatives])
        assert per_user_auc(np.array([rank]), np.array([21]))[0] == pytest.approx(expected)


def test_gauc_weighted_and_unweighted():
    per_user = np.array([1.0, 0.5, np.nan])
    assert gauc(per_user) == pytest.approx(0.75)
    assert gauc(per_user, np.array([1.0, 3.0, 5.0])) == pytest.approx((1.0 + 1.5) / 4)
    assert math.isnan(gauc(np.array([np.nan, np.nan])))
    with pytest.raises(ValueError, match="shape"):
        gauc(per_user, np.ones(2))


def test_pooled_auc_known_values():
    assert pooled_auc(np.array([0.9, 0.8]), np.array([[0.1, 0.2], [0.3, 0.0]])) == 1.0
    assert pooled_auc(np.full(3, 0.4), np.full((3, 4), 0.4)) == 0.5
    # positives .9 and .4 against negatives .5 .1 .3 .2: 4 + 3 of 8 pairs
    assert pooled_auc(np.array([0.9, 0.4]), np.array([[0.5, 0.1], [0.3, 0.2]])) == pytest.approx(7 / 8)


def test_pooled_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        pooled_auc(np.array([0.5]), np.array([[-np.inf]]))
    with pytest.raises(ValueError, match="negative_scores"):
        pooled_auc(np.array([0.5, 0.2]), np.array([[0.1]]))
