"""Next-category classification metrics, and AUC / GAUC from ranks or scores.

- :func:`category_scores` turns a next-item model's (B, n_items) logits into (B, n_categories)
  next-category probabilities by summing item probabilities per category (torch, no loop over
  categories); :func:`category_scores_reference` is the plain loop it is tested against.
- :func:`classification_metrics` scores predicted categories against true ones (accuracy, macro
  and micro precision/recall/F1 through ``sklearn.metrics``) with a sparse confusion table.
- :func:`per_user_auc` and :func:`gauc` give the per-user AUC of one positive ranked among
  candidates and its (impression-)weighted mean, GAUC as in the DIN/DIEN papers;
  :func:`pooled_auc` is the global AUC of all impressions pooled over users.

Index conventions follow the rest of evorec: item 0 is the padding item, category 0 the unknown
category.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

logger = logging.getLogger(__name__)


def _check_category_inputs(
    item_scores: torch.Tensor, item_category: torch.Tensor, n_categories: int
) -> None:
    if item_scores.ndim != 2:
        raise ValueError(f"item_scores must be (B, n_items), got shape {tuple(item_scores.shape)}")
    if item_category.ndim != 1 or item_category.shape[0] != item_scores.shape[1]:
        raise ValueError(
            f"item_category must be ({item_scores.shape[1]},) to match item_scores, "
            f"got shape {tuple(item_category.shape)}"
        )
    if n_categories < 1:
        raise ValueError(f"n_categories must be >= 1, got {n_categories}")
    cats = item_category[1:]
    if cats.numel() and (int(cats.min()) < 0 or int(cats.max()) >= n_categories):
        raise ValueError(
            f"item_category values must lie in [0, {n_categories}), "
            f"got [{int(cats.min())}, {int(cats.max())}]"
        )


def category_scores(
    item_scores: torch.Tensor, item_category: torch.Tensor, n_categories: int
) -> torch.Tensor:
    """P(next category = c) from next-item logits.

    Args:
        item_scores: (B, n_items) float logits. Column 0 (padding) is ignored. Entries are finite
            or ``-inf`` (an excluded item, probability 0); ``+inf``/NaN are not supported.
        item_category: (n_items,) integer category per item, in ``[0, n_categories)``; 0 is the
            unknown category, which collects the items without one. Entry 0 is ignored.
        n_categories: number of categories including the unknown category 0.

    Returns:
        (B, n_categories) probabilities in the dtype of ``item_scores``:
        ``softmax(item_scores[:, 1:])`` summed over the items of each category. A row whose
        items are all ``-inf`` (or a catalogue with no item beyond padding) carries no
        information and gets the **uniform** row ``1 / n_categories``, so every row is a
        probability distribution (sums to 1) and never NaN.
    """
    _check_category_inputs(item_scores, item_category, n_categories)
    scores = item_scores[:, 1:]  # (B, n_items - 1) without padding
    cats = item_category[1:].to(device=scores.device, dtype=torch.long)  # (n_items - 1,)
    # all -inf rows would softmax to NaN: give them zeros first, overwrite with uniform below
    dead = torch.isneginf(scores).all(dim=1)  # (B,)
    safe = scores.masked_fill(dead[:, None], 0.0)
    probs = torch.softmax(safe, dim=1)  # (B, n_items - 1)
    out = torch.zeros(scores.shape[0], n_categories, dtype=probs.dtype, device=probs.device)
    out.index_add_(1, cats, probs)  # (B, n_categories): column c += probs of items in c
    out[dead] = 1.0 / n_categories
    return out


def category_scores_reference(
    item_scores: torch.Tensor, item_category: torch.Tensor, n_categories: int
) -> torch.Tensor:
    """Plain loop version of :func:`category_scores` (same contract); for tests only."""
    _check_category_inputs(item_scores, item_category, n_categories)
    out = torch.zeros(item_scores.shape[0], n_categories, dtype=item_scores.dtype)
    cats = item_category[1:].tolist()
    for b in range(item_scores.shape[0]):
        row = item_scores[b, 1:].cpu()
        if bool(torch.isneginf(row).all()):
            out[b] = 1.0 / n_categories
            continue
        probs = torch.exp(row - row.max())
        probs = probs / probs.sum()
        for i, c in enumerate(cats):
            out[b, c] += probs[i]
    return out


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_names: list[str] | None = None,
    max_dense: int = 60,
) -> dict:
    """Accuracy, macro/micro precision-recall-F1 and a sparse confusion table.

    Args:
        y_true, y_pred: (N,) labels (category indices).
        labels: the label set to average over and to tabulate; default: the labels that occur
            in ``y_true`` or ``y_pred`` (so a category never seen nor predicted does not drag the
            macro average down), sorted. With an explicit subset, cells and micro averages only
            count those labels (scikit-learn semantics); accuracy always counts every sample.
        label_names: names indexed by label value (``label_names[c]``), used for
            ``confusion["labels"]``.
        max_dense: the dense ``confusion["matrix"]`` is added only for at most this many labels.

    Returns:
        ``{"accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_micro",
        "recall_micro", "f1_micro", "n", "n_labels", "confusion"}``; precision/recall of a label
        with no predicted/true samples count as 0 (``zero_division=0``). ``confusion`` holds
        ``"labels"`` (the label set in order, as names when given; the row/column order of
        ``"matrix"``), ``"label_ids"`` (the same labels as values), and the non-zero cells as
        parallel lists ``"true"``, ``"pred"`` (label values) and ``"count"``, sorted by count
        descending (ties by true, then pred label); plus ``"matrix"`` (rows = true, columns =
        predicted, python ints) when ``n_labels <= max_dense``.

    Raises:
        ValueError: empty input, different lengths, or inputs that are not 1-D.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D, got {y_true.shape} and {y_pred.shape}")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} labels but y_pred has {y_pred.shape[0]}")
    if y_true.shape[0] == 0:
        raise ValueError("classification_metrics needs at least one sample, got none")
    label_set = np.union1d(y_true, y_pred) if labels is None else np.asarray(labels)

    def prf(average: str) -> tuple[float, float, float]:
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=label_set, average=average, zero_division=0
        )
        return float(p), float(r), float(f)

    p_macro, r_macro, f_macro = prf("macro")
    p_micro, r_micro, f_micro = prf("micro")

    # sparse cells: unique (true, pred) pairs among samples whose both labels are in the set
    keep = np.isin(y_true, label_set) & np.isin(y_pred, label_set)
    pairs, counts = np.unique(np.stack([y_true[keep], y_pred[keep]], axis=1), axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")  # np.unique sorted pairs: ties stay (true, pred)
    ids = label_set.tolist()
    names = ids if label_names is None else [label_names[c] for c in ids]
    confusion: dict = {
        "labels": names,
        "label_ids": ids,
        "true": pairs[order, 0].tolist() if len(pairs) else [],
        "pred": pairs[order, 1].tolist() if len(pairs) else [],
        "count": [int(c) for c in counts[order]],
    }
    if len(label_set) <= max_dense:
        confusion["matrix"] = confusion_matrix(y_true, y_pred, labels=label_set).tolist()
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": p_macro,
        "recall_macro": r_macro,
        "f1_macro": f_macro,
        "precision_micro": p_micro,
        "recall_micro": r_micro,
        "f1_micro": f_micro,
        "n": int(y_true.shape[0]),
        "n_labels": len(label_set),
        "confusion": confusion,
    }


def per_user_auc(rank: np.ndarray, n_candidates: np.ndarray) -> np.ndarray:
    """AUC of each user's single positive against the user's other candidates.

    Args:
        rank: (N,) 0-based pessimistic rank of the positive: the number of other candidates
            scored >= it (ties count against the target, as in ``evorec.evaluation.ranking``).
        n_candidates: (N,) or scalar number of candidates including the positive.

    Returns:
        (N,) float64 ``1 - rank / (n_candidates - 1)``; NaN where ``n_candidates < 2``.

    Raises:
        ValueError: a rank outside ``[0, n_candidates - 1]`` for a user with >= 2 candidates.
    """
    rank = np.asarray(rank, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n_candidates, dtype=np.float64), rank.shape)
    valid = n >= 2
    if np.any(valid & ((rank < 0) | (rank > n - 1))):
        raise ValueError("rank must lie in [0, n_candidates - 1]")
    out = np.full(rank.shape, np.nan)
    out[valid] = 1.0 - rank[valid] / (n[valid] - 1.0)
    return out


def gauc(per_user: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Group AUC: weighted mean of per-user AUCs, ignoring NaN users.

    ``weights`` (N,) are non-negative, default 1 (the DIN/DIEN GAUC weights each user by their
    impressions, e.g. ``n_candidates``). Returns NaN when no user with a non-zero weight has a
    defined AUC. Raises ValueError on a length mismatch or a negative weight.
    """
    auc = np.asarray(per_user, dtype=np.float64)
    w = np.ones_like(auc) if weights is None else np.asarray(weights, dtype=np.float64)
    if auc.shape != w.shape:
        raise ValueError(f"per_user has shape {auc.shape} but weights has {w.shape}")
    if np.any(w < 0):
        raise ValueError("weights must be non-negative")
    ok = ~np.isnan(auc)
    total = float(w[ok].sum())
    if total == 0.0:
        logger.warning("gauc: no user with a defined AUC and non-zero weight; returning NaN")
        return float("nan")
    return float((auc[ok] * w[ok]).sum() / total)


def pooled_auc(target_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Global AUC of all impressions pooled over users.

    The N ``target_scores`` (N,) are the positives and the N * M ``negative_scores`` (N, M) the
    negatives, scores compared across users; computed by ``sklearn.metrics.roc_auc_score`` (a
    tie counts half). Scores must be finite. Raises ValueError on shape mismatch, N == 0, M == 0
    or non-finite scores.
    """
    pos = np.asarray(target_scores, dtype=np.float64)
    neg = np.asarray(negative_scores, dtype=np.float64)
    if pos.ndim != 1 or neg.ndim != 2 or neg.shape[0] != pos.shape[0]:
        raise ValueError(
            f"target_scores must be (N,) and negative_scores (N, M), got {pos.shape} and {neg.shape}"
        )
    if pos.size == 0 or neg.size == 0:
        raise ValueError("pooled_auc needs at least one positive and one negative score")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("pooled_auc needs finite scores (drop excluded -inf candidates first)")
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])  # (N + N*M,)
    scores = np.concatenate([pos, neg.ravel()])  # (N + N*M,)
    return float(roc_auc_score(y, scores))
