"""Ranking metrics from the rank of each user's target, and list metrics from top-k matrices.

Pure numpy. Conventions:

- ``ranks`` is a (N,) integer array of **0-based** ranks: the number of candidates placed above
  the target (0 = the target is first). How ties are counted is the ranking protocol's business
  (``evorec.evaluation.ranking`` counts them against the target).
- Every per-user function returns a (N,) float64 vector so that means, bootstrap intervals and
  paired tests can be taken over users; :func:`summarize` averages them.
- One target per user (next-item evaluation). With a single relevant item:

  ========== ================================================= ============================
  metric     per-user value                                    note
  ========== ================================================= ============================
  HR@K       1 if rank < K else 0                              hit rate
  Recall@K   hits / relevant = HR@K                            identical with one target
  NDCG@K     1 / log2(rank + 2) if rank < K else 0             IDCG = 1 (target at rank 0)
  MRR        1 / (rank + 1)                                    full list, no cut-off
  MRR@K      1 / (rank + 1) if rank < K else 0
  MAP@K      (1 / min(1, K)) * precision@(rank+1) * hit        = MRR@K with one target
  ========== ================================================= ============================

List metrics take the (N, K) matrix of recommended item indices (0 = empty slot, ignored) and
training popularity ``item_counts`` (n_items,) with index 0 the padding item:

- ``item_coverage``: distinct items recommended in anyone's top-K / catalogue size (n_items - 1).
- ``popularity_bias``: per user, mean popularity percentile of the recommended items, where
  ``pct(i) = (#{j: c_j < c_i} + #{j: c_j <= c_i}) / (2 M)`` over the M = n_items - 1 catalogue
  items (mid-rank percentile: the most popular item is near 1, a never-seen item near 0).
- ``novelty``: per user, mean self-information ``-log2(share_i)`` of the recommended items with
  add-one smoothed shares ``share_i = (c_i + 1) / (sum_j c_j + M)`` (so unseen items are finite).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from evorec.errors import InputError

PER_USER_METRICS = ("HR", "Recall", "NDCG", "MRR", "MAP")


def _ranks(ranks: np.ndarray) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim != 1:
        raise ValueError(f"ranks must be a 1-d array, got shape {r.shape}")
    if len(r) and r.min() < 0:
        raise ValueError("ranks are 0-based counts of items above the target; got a negative rank")
    return r


def _k(k: int) -> int:
    if int(k) != k or k < 1:
        raise InputError(f"cut-off K must be a positive integer, got {k!r}")
    return int(k)


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """(N,) HR@K: 1.0 where the target is among the top K."""
    return (_ranks(ranks) < _k(k)).astype(np.float64)


def recall(ranks: np.ndarray, k: int) -> np.ndarray:
    """(N,) Recall@K with one target per user (equals HR@K)."""
    return hit_rate(ranks, k)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """(N,) NDCG@K = 1 / log2(rank + 2) where rank < K, else 0."""
    r = _ranks(ranks)
    return np.where(r < _k(k), 1.0 / np.log2(r.astype(np.float64) + 2.0), 0.0)


def mrr(ranks: np.ndarray, k: int | None = None) -> np.ndarray:
    """(N,) reciprocal rank 1 / (rank + 1); with ``k``, 0 where rank >= K (MRR@K)."""
    r = _ranks(ranks)
    rr = 1.0 / (r.astype(np.float64) + 1.0)
    return rr if k is None else np.where(r < _k(k), rr, 0.0)


def average_precision(ranks: np.ndarray, k: int) -> np.ndarray:
    """(N,) AP@K with one relevant item: precision at the hit, 1 / (rank + 1), if rank < K."""
    return mrr(ranks, k)


def per_user(name: str, ranks: np.ndarray, k: int | None = None) -> np.ndarray:
    """(N,) values of metric ``name`` (one of ``PER_USER_METRICS``) at cut-off ``k``."""
    if name == "MRR":
        return mrr(ranks, k)
    if k is None:
        raise InputError(f"{name} needs a cut-off K")
    fn = {"HR": hit_rate, "Recall": recall, "NDCG": ndcg, "MAP": average_precision}.get(name)
    if fn is None:
        raise InputError(f"unknown metric {name!r}; known: {PER_USER_METRICS}")
    return fn(ranks, k)


def per_user_columns(ranks: np.ndarray, ks: Iterable[int], suffix: str = "") -> dict[str, np.ndarray]:
    """Per-user vectors ``HR@K, Recall@K, NDCG@K, MRR@K, MAP@K`` for every K, and full ``MRR``."""
    r = _ranks(ranks)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        k = _k(k)
        out[f"HR@{k}{suffix}"] = hit_rate(r, k)
        out[f"Recall@{k}{suffix}"] = recall(r, k)
        out[f"NDCG@{k}{suffix}"] = ndcg(r, k)
        out[f"MRR@{k}{suffix}"] = mrr(r, k)
        out[f"MAP@{k}{suffix}"] = average_precision(r, k)
    out[f"MRR{suffix}"] = mrr(r)
    return out


def summarize(ranks: np.ndarray, ks: Iterable[int], suffix: str = "") -> dict[str, float]:
    """Means over users of :func:`per_user_columns`. No users -> NaN.

    ``suffix`` is appended to every name (e.g. ``" (sampled-uniform-100)"``)."""
    return {k: float(v.mean()) if len(v) else float("nan") for k, v in per_user_columns(ranks, ks, suffix).items()}


def window_columns(
    topk: np.ndarray, rows: np.ndarray, items: np.ndarray, n_items: int, ks: Iterable[int], prefix: str = "W-"
) -> dict[str, np.ndarray]:
    """Per-user metrics against a *set* of target items (e.g. everything a user engaged with in
    a forecast window), from the (N, K) recommended lists.

    ``(rows, items)`` are the distinct (user row, target item) pairs. Per user with ``n`` targets
    and ``hits@K`` of them in the top K: ``HR@K`` = hits > 0, ``Recall@K`` = hits / n,
    ``Precision@K`` = hits / K, ``NDCG@K`` = DCG / ideal DCG of min(n, K) hits. Users without
    targets get NaN. Names carry ``prefix`` (default ``"W-"``, for "window")."""
    topk = np.asarray(topk, dtype=np.int64)
    N, kmax = topk.shape
    rows, items = np.asarray(rows, dtype=np.int64), np.asarray(items, dtype=np.int64)
    n_t = np.bincount(rows, minlength=N)[:N].astype(np.float64)
    keys = np.unique(rows * np.int64(n_items) + items)
    cand = np.arange(N, dtype=np.int64)[:, None] * np.int64(n_items) + topk  # (N, kmax)
    pos = np.minimum(np.searchsorted(keys, cand), max(len(keys) - 1, 0))
    hit = (keys[pos] == cand) & (topk > 0) if len(keys) else np.zeros(cand.shape, bool)  # (N, kmax)
    disc = 1.0 / np.log2(np.arange(kmax) + 2.0)  # (kmax,)
    cum_ideal = np.cumsum(disc)
    none = n_t == 0
    out: dict[str, np.ndarray] = {}
    for k in ks:
        k = _k(k)
        if k > kmax:
            raise ValueError(f"window metrics at K={k} need top-{k} lists, got top-{kmax}")
        h = hit[:, :k].sum(1).astype(np.float64)
        dcg = (hit[:, :k] * disc[:k]).sum(1)
        ideal = cum_ideal[np.clip(np.minimum(n_t, k).astype(np.int64) - 1, 0, kmax - 1)]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{prefix}HR@{k}"] = np.where(none, np.nan, (h > 0).astype(np.float64))
            out[f"{prefix}Recall@{k}"] = np.where(none, np.nan, h / n_t)
            out[f"{prefix}Precision@{k}"] = np.where(none, np.nan, h / k)
            out[f"{prefix}NDCG@{k}"] = np.where(none, np.nan, dcg / ideal)
    return out


# ---------------------------------------------------------------------------------------------
# List metrics over the (N, K) top-k matrix


def _topk(topk: np.ndarray, k: int | None) -> np.ndarray:
    t = np.asarray(topk)
    if t.ndim != 2:
        raise ValueError(f"top-k items must be an (N, K) matrix, got shape {t.shape}")
    if k is not None:
        if _k(k) > t.shape[1]:
            raise ValueError(f"K={k} but the top-k matrix has only {t.shape[1]} columns")
        t = t[:, :k]
    return t


def _counts(item_counts: np.ndarray) -> np.ndarray:
    c = np.asarray(item_counts, dtype=np.float64)
    if c.ndim != 1 or len(c) < 2:
        raise ValueError("item_counts must be a (n_items,) vector including the padding index 0")
    if (c < 0).any():
        raise ValueError("item_counts must be >= 0")
    return c


def item_coverage(topk: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Share of the catalogue (items 1..n_items-1) in at least one user's top K."""
    t = _topk(topk, k)
    if n_items < 2:
        raise ValueError("n_items counts the padding index 0; the catalogue is empty")
    seen = np.unique(t[t > 0])
    return float(len(seen)) / float(n_items - 1)


def popularity_percentile(item_counts: np.ndarray) -> np.ndarray:
    """(n_items,) mid-rank popularity percentile of every item in (0, 1]; index 0 gets NaN."""
    c = _counts(item_counts)
    cat = np.sort(c[1:])
    m = len(cat)
    below = np.searchsorted(cat, c, side="left")
    at_or_below = np.searchsorted(cat, c, side="right")
    pct = (below + at_or_below) / (2.0 * m)
    pct[0] = np.nan
    return pct


def popularity_bias(topk: np.ndarray, item_counts: np.ndarray, k: int | None = None) -> np.ndarray:
    """(N,) mean popularity percentile of each user's recommended items (empty slots ignored)."""
    return _mean_over_slots(_topk(topk, k), popularity_percentile(item_counts))


def novelty(topk: np.ndarray, item_counts: np.ndarray, k: int | None = None) -> np.ndarray:
    """(N,) mean ``-log2(share)`` of each user's recommended items (add-one smoothed shares)."""
    c = _counts(item_counts)
    share = (c + 1.0) / (c[1:].sum() + (len(c) - 1))
    info = -np.log2(share)
    info[0] = np.nan
    return _mean_over_slots(_topk(topk, k), info)


def _mean_over_slots(t: np.ndarray, value: np.ndarray) -> np.ndarray:
    if len(t) and (t.max() >= len(value) or t.min() < 0):
        raise ValueError(f"top-k holds item indices outside 0..{len(value) - 1}")
    filled = t > 0
    v = np.where(filled, value[t], 0.0)
    n = filled.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, v.sum(1) / np.maximum(n, 1), np.nan)
