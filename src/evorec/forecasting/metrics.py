"""Per-user metrics of a category forecast for one horizon window, and calibration error.

A forecast for U users over C categories and one window (T, T+h] has two parts:

- ``dist`` (U, C): a probability distribution over categories (rows sum to 1), scored as a
  ranking (NDCG, Recall, emerging recall) and as a distribution (Jensen-Shannon divergence);
- ``engage`` (U, C): independent probabilities that the user engages with each category at all
  in the window, scored by the Brier score, the fading-alert precision and calibration error.

The truth is ``counts`` (U, C) >= 0, the user's events per category in the window. ``past``
(U, C) >= 0 are the user's counts before T (whole history): a category is *emerging* for a user
when ``past == 0`` and ``counts > 0``. ``recent`` (U, C) bool marks the categories the user
engaged with recently before T, the only ones a "fading" alert can be about.

:func:`per_user_forecast_metrics` returns one (U,) vector per metric, NaN where the metric is
undefined for that user, so callers can average with ``np.nanmean`` or run paired tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_2d(name: str, arr: object, shape: tuple[int, int] | None) -> np.ndarray:
    """Return ``arr`` as an ndarray, raising ValueError naming ``name`` if it is not (U, C)."""
    out = np.asarray(arr)
    if out.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (U, C) array, got shape {out.shape}")
    if shape is not None and out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape} like dist")
    return out


def _check_ks(name: str, ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if any(k <= 0 for k in out):
        raise ValueError(f"{name} must be positive integers, got {tuple(ks)}")
    return out


def _top_k_mask(order: np.ndarray, k: int) -> np.ndarray:
    """Bool (U, C) mask of the first ``k`` categories of each row of ``order``."""
    n_users, n_cats = order.shape
    mask = np.zeros((n_users, n_cats), dtype=bool)
    np.put_along_axis(mask, order[:, : min(k, n_cats)], True, axis=1)
    return mask


def _ndcg(order: np.ndarray, rel: np.ndarray, k: int) -> np.ndarray:
    """Binary-relevance NDCG@k per user (U,); NaN where the user has no relevant category."""
    k_eff = min(k, rel.shape[1])
    discounts = 1.0 / np.log2(np.arange(2, k_eff + 2))  # (k_eff,)
    gains = np.take_along_axis(rel, order[:, :k_eff], axis=1)  # (U, k_eff)
    dcg = gains @ discounts  # (U,)
    n_rel = rel.sum(axis=1)  # (U,)
    ideal_cum = np.concatenate([[0.0], np.cumsum(discounts)])  # (k_eff + 1,)
    idcg = ideal_cum[np.minimum(n_rel, k_eff)]  # (U,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, dcg / idcg, np.nan)


def _share(hits: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``hits / total`` elementwise, NaN where ``total == 0``."""
    hits = hits.astype(float)
    total = total.astype(float)
    out = np.full(total.shape, np.nan)
    np.divide(hits, total, out=out, where=total > 0)
    return out


def top_order(score: np.ndarray, k: int) -> np.ndarray:
    """(U, min(k, C)): the first k columns of ``np.argsort(-score, axis=1, kind="stable")``,
    found by a partial sort; rows where a tie reaches past the partition fall back to the full
    stable sort, so the result is always exactly that ranking."""
    U, C = score.shape
    kk = min(k, C)
    K = min(C, kk + 16)
    if K >= C:
        return np.argsort(-score, axis=1, kind="stable")[:, :kk]
    part = np.argpartition(-score, K - 1, axis=1)[:, :K]  # (U, K) the K largest, unordered
    vals = np.take_along_axis(score, part, 1)
    o = np.lexsort((part, -vals), axis=1)  # by score desc, then index asc
    top = np.take_along_axis(part, o, 1)
    kth = np.take_along_axis(vals, o, 1)[:, kk - 1]
    outside = np.partition(-score, K, axis=1)[:, K] * -1  # the largest score not among the K
    bad = ~(kth > outside)
    if bad.any():
        top[bad] = np.argsort(-score[bad], axis=1, kind="stable")[:, :K]
    return top[:, :kk]


def ranking_metrics(score: np.ndarray, rel: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """``NDCG@k`` and ``Recall@k`` (U,) of ranking categories by ``score`` (U, C) descending, ties
    by category index (the same ranking as :func:`per_user_forecast_metrics`), against the bool
    relevance ``rel`` (U, C); NaN where a user has nothing relevant. A lean path for tuning."""
    score = _check_2d("score", score, None)
    rel = _check_2d("rel", rel, score.shape).astype(bool, copy=False)
    order = top_order(score, k)
    n_rel = rel.sum(axis=1)
    hits = np.take_along_axis(rel, order, axis=1).sum(axis=1)
    return {f"NDCG@{k}": _ndcg(order, rel, k), f"Recall@{k}": _share(hits, n_rel)}


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence in bits (U,), in [0, 1].

    Rows of ``p`` and ``q`` (U, C) are normalised to sum to 1 first (as scipy does); a row with
    zero total in either input gives NaN. Equals ``scipy.spatial.distance.jensenshannon(p, q,
    base=2) ** 2`` row by row (tested against it).
    """
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    p_sum = p.sum(axis=1, keepdims=True)  # (U, 1)
    q_sum = q.sum(axis=1, keepdims=True)  # (U, 1)
    ok = (p_sum[:, 0] > 0) & (q_sum[:, 0] > 0)
    p = p / np.where(p_sum > 0, p_sum, 1.0)
    q = q / np.where(q_sum > 0, q_sum, 1.0)
    m = 0.5 * (p + q)  # (U, C)

    def kl_to_m(x: np.ndarray) -> np.ndarray:
        # 0 * log(0 / m) = 0; where x > 0, m >= x / 2 > 0 so the ratio is finite.
        ratio = np.divide(x, m, out=np.ones_like(x), where=x > 0)
        return (x * np.log2(ratio)).sum(axis=1)  # (U,)

    js = 0.5 * kl_to_m(p) + 0.5 * kl_to_m(q)
    # Rounding can push the value a hair outside [0, 1].
    return np.where(ok, np.clip(js, 0.0, 1.0), np.nan)


def per_user_forecast_metrics(
    dist: np.ndarray,
    engage: np.ndarray,
    counts: np.ndarray,
    past: np.ndarray,
    recent: np.ndarray,
    *,
    ks: Sequence[int] = (5, 10),
    recall_ks: Sequence[int] = (5,),
    fading_threshold: float = 0.5,
    emerging_k: int = 10,
) -> dict[str, np.ndarray]:
    """Score one window's forecast per user; every value is a float (U,) vector.

    All inputs are (U, C). Categories are ranked by ``dist`` descending, ties broken by category
    index ascending (a stable sort, so results are deterministic). A category is *engaged* when
    ``counts > 0``. Keys:

    - ``NDCG@k`` for k in ``ks``: binary relevance ``counts > 0``, ideal DCG over
      ``min(#engaged, k)`` positions; NaN for users with no event in the window.
    - ``Recall@k`` for k in ``recall_ks``: share of the engaged categories in the top k; NaN if
      none engaged.
    - ``JSD``: Jensen-Shannon divergence (base 2, in [0, 1]) between ``dist`` (renormalised) and
      ``counts / counts.sum()``; NaN if the user has no event (or ``dist`` sums to 0).
    - ``Brier``: mean over categories of ``(engage - (counts > 0)) ** 2``; defined for every
      user, including those with no event.
    - ``EmergingRecall@{emerging_k}``: emerging = ``past == 0 & counts > 0``; share of them in
      the top ``emerging_k`` of ``dist`` (ranked over all categories); NaN if none.
    - ``FadingPrecision``: alerts = ``recent & (engage < fading_threshold)``; share of alerts
      with ``counts == 0``; NaN if the user has no alert.
    - ``n_events``: window event count; ``n_emerging``: number of emerging categories.

    A k larger than C is treated as C. Raises ValueError on shape mismatch (naming the
    argument), negative counts/past, or non-positive k.
    """
    dist = _check_2d("dist", dist, None).astype(float, copy=False)
    shape = dist.shape
    engage = _check_2d("engage", engage, shape).astype(float, copy=False)
    counts = _check_2d("counts", counts, shape)
    past = _check_2d("past", past, shape)
    recent = _check_2d("recent", recent, shape).astype(bool, copy=False)
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    if (past < 0).any():
        raise ValueError("past must be non-negative")
    ks = _check_ks("ks", ks)
    recall_ks = _check_ks("recall_ks", recall_ks)
    (emerging_k,) = _check_ks("emerging_k", (emerging_k,))

    rel = counts > 0  # (U, C)
    n_rel = rel.sum(axis=1)  # (U,)
    # Stable sort of -dist: equal scores keep category-index order.
    order = np.argsort(-dist, axis=1, kind="stable")  # (U, C)

    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"NDCG@{k}"] = _ndcg(order, rel, k)
    for k in recall_ks:
        out[f"Recall@{k}"] = _share((rel & _top_k_mask(order, k)).sum(axis=1), n_rel)

    out["JSD"] = np.where(n_rel > 0, jensen_shannon(dist, counts), np.nan)
    out["Brier"] = ((engage - rel) ** 2).mean(axis=1)

    emerging = (past == 0) & rel  # (U, C)
    n_emerging = emerging.sum(axis=1)  # (U,)
    emerging_hits = (emerging & _top_k_mask(order, emerging_k)).sum(axis=1)
    out[f"EmergingRecall@{emerging_k}"] = _share(emerging_hits, n_emerging)

    alerts = recent & (engage < fading_threshold)  # (U, C)
    out["FadingPrecision"] = _share((alerts & ~rel).sum(axis=1), alerts.sum(axis=1))

    out["n_events"] = counts.sum(axis=1).astype(float)
    out["n_emerging"] = n_emerging.astype(float)
    return out


def _bin_stats(prob: object, label: object, n_bins: int) -> tuple[np.ndarray, ...]:
    """Flatten and bin; returns (count, conf_sum, label_sum) per equal-width bin, each (n_bins,)."""
    p = np.asarray(prob, dtype=float).ravel()
    y = np.asarray(label).ravel()
    if p.shape != y.shape:
        raise ValueError(f"prob has {p.size} values but label has {y.size}")
    if n_bins <= 0:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("prob must be finite and in [0, 1]")
    y = y.astype(float)
    # Bin b covers [b / n_bins, (b + 1) / n_bins); prob == 1 goes into the last bin.
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)  # (N,)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=p, minlength=n_bins)
    label_sum = np.bincount(idx, weights=y, minlength=n_bins)
    return count, conf_sum, label_sum


def expected_calibration_error(prob: np.ndarray, label: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of probability/label pairs (any shape, flattened).

    Equal-width bins over [0, 1]; ECE = sum over bins of ``count / N * |accuracy - confidence|``
    where accuracy is the mean label and confidence the mean probability in the bin. Labels are
    bools or 0/1. Returns NaN for empty input.
    """
    count, conf_sum, label_sum = _bin_stats(prob, label, n_bins)
    total = count.sum()
    if total == 0:
        return float("nan")
    # |acc - conf| * count / N == |label_sum - conf_sum| / N.
    return float(np.abs(label_sum - conf_sum).sum() / total)


def reliability_table(prob: np.ndarray, label: np.ndarray, n_bins: int = 15) -> dict:
    """Per-bin reliability statistics, the same binning as :func:`expected_calibration_error`.

    Returns a JSON-able dict of lists, one entry per bin: ``bin_lower``, ``bin_upper``,
    ``count`` (int), ``confidence`` (mean probability) and ``accuracy`` (mean label); the last
    two are None for empty bins.
    """
    count, conf_sum, label_sum = _bin_stats(prob, label, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    confidence = [float(s / c) if c else None for s, c in zip(conf_sum, count)]
    accuracy = [float(s / c) if c else None for s, c in zip(label_sum, count)]
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "count": [int(c) for c in count],
        "confidence": confidence,
        "accuracy": accuracy,
    }


def aggregate_ece(engage: np.ndarray, counts: np.ndarray, n_bins: int = 15) -> float:
    """ECE of ``engage`` against ``counts > 0`` over all (user, category) pairs."""
    engage = _check_2d("engage", engage, None)
    counts = _check_2d("counts", counts, engage.shape)
    return expected_calibration_error(engage, counts > 0, n_bins=n_bins)
