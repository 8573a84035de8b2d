"""Next-basket methods at category level: basket histories, P-TopFreq and TIFU-KNN.

The next-basket literature's strongest simple methods, written for evorec's samples (user row,
cutoff T): everything is computed from the user's events before T, vectorised over samples.

- A *basket* is one shopping trip: the log's basket id where the sequences carry one
  (``SequenceData.basket``), else a user's events of one calendar day (UTC); on order-only data
  every event is its own basket.
- **P-TopFreq** (Li et al., "A Next Basket Recommendation Reality Check", TOIS 2023): the number
  of the user's baskets holding each category.
- **TIFU-KNN** (Hu et al., SIGIR 2020): the user's baskets as multi-hot vectors; basket ``i`` of
  ``n`` (oldest first) weighs ``r_b ** (n - 1 - i)``; the baskets are split into ``m`` groups of
  consecutive baskets (the first groups get ``floor(n / m)`` baskets, the last ``n mod m``
  groups one more; with ``n < m`` every basket is a group), a group's vector is the mean of its
  weighted baskets, and the user's vector is ``sum_g r_g ** (m - 1 - g) * group_g / n_groups``.
  The forecast blends ``alpha * own + (1 - alpha) * mean of the k nearest users' vectors``
  (cosine or Euclidean distance among the users with history at the same cutoff; a user is
  never its own neighbour). These are the decay rules of the authors' reference code.

The math itself (cell weights, neighbours, their mean) lives in :mod:`evorec.models.nbr`, shared
with the item-level recommenders; this module turns forecasting samples into cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from evorec.data.sequences import SequenceData, baskets_by_time
from evorec.forecasting.windows import WindowSamples, history_positions
from evorec.models.nbr import nearest, neighbour_mean, ptopfreq_cells, tifu_cells
from evorec.types import TimeKind

__all__ = [  # nearest and neighbour_mean live in evorec.models.nbr (shared with the item-level models)
    "BasketHistory", "TifuParams", "basket_history", "basket_ordinals", "basket_source", "nearest", "neighbour_index",
    "neighbour_mean", "ptopfreq", "tifu_scores", "tifu_vectors",
]



def basket_ordinals(seq: SequenceData) -> np.ndarray:
    """(N,) int64: each event's basket number within its user (0 = the user's first basket),
    non-decreasing along each user's sequence."""
    own = getattr(seq, "basket", None)
    if own is not None:
        return np.asarray(own, dtype=np.int64)
    return baskets_by_time(seq.ts, seq.offsets, seq.time_kind)  # one user's live events: baskets by day


def basket_source(seq: SequenceData) -> str:
    if getattr(seq, "basket", None) is not None:
        return getattr(seq, "basket_source", "basket_id")
    return "event" if seq.time_kind is TimeKind.ORDINAL else "day"


@dataclass
class BasketHistory:
    """The (sample, basket, category) cells of every sample's history before its cutoff."""

    row: np.ndarray  # (E,) sample index
    basket: np.ndarray  # (E,) basket number within the user (0 = oldest)
    category: np.ndarray  # (E,) category index
    ts: np.ndarray  # (E,) time of the basket's events (max over the cell)
    n_baskets: np.ndarray  # (S,) baskets before the cutoff
    n_samples: int
    n_categories: int


def basket_history(seq: SequenceData, samples: WindowSamples, ordinals: np.ndarray | None = None) -> BasketHistory:
    """One cell per distinct (sample, basket, category) of the samples' histories."""
    S, C = len(samples), seq.categories.size
    ords = basket_ordinals(seq) if ordinals is None else ordinals
    rows, pos = history_positions(samples)
    n_baskets = np.zeros(S, np.int64)
    has = samples.hist_end > samples.hist_start
    n_baskets[has] = ords[samples.hist_end[has] - 1] + 1
    if not len(pos):
        z = np.zeros(0, np.int64)
        return BasketHistory(z, z, z, z, n_baskets, S, C)
    b = ords[pos]
    c = np.asarray(seq.category)[pos].astype(np.int64)
    t = np.asarray(seq.ts)[pos].astype(np.int64)
    nb = int(n_baskets.max()) + 1
    key = (rows * nb + b) * C + c
    uniq, first = np.unique(key, return_index=True)
    return BasketHistory(
        row=uniq // (nb * C), basket=(uniq // C) % nb, category=uniq % C, ts=t[first], n_baskets=n_baskets,
        n_samples=S, n_categories=C,
    )


def ptopfreq(hist: BasketHistory) -> np.ndarray:
    """(S, C) the number of baskets of each sample's history holding each category."""
    return ptopfreq_cells(hist.row, hist.category, hist.n_samples, hist.n_categories)


@dataclass(frozen=True)
class TifuParams:
    r_b: float = 0.9  # within-group (per basket) decay
    r_g: float = 0.7  # across-group decay
    m: int = 7  # number of groups
    k: int = 300  # nearest neighbours
    alpha: float = 0.7  # weight of the user's own vector
    metric: Literal["cosine", "euclidean"] = "cosine"


def tifu_vectors(hist: BasketHistory, r_b: float, r_g: float, m: int) -> np.ndarray:
    """(S, C) TIFU user vectors (see the module docstring); zero rows for empty histories."""
    return tifu_cells(hist.row, hist.basket, hist.category, hist.n_baskets, hist.n_categories, r_b, r_g, m)


def neighbour_index(vectors: np.ndarray, groups: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(S, k) indices of each row's k nearest rows of the same group (never itself) and a (S, k)
    validity mask (False where the group has fewer than k other rows with history)."""
    S = len(vectors)
    idx = np.zeros((S, k), np.int64)
    ok = np.zeros((S, k), bool)
    for gv in np.unique(groups):
        rows = np.flatnonzero(groups == gv)
        i, o = nearest(vectors[rows], vectors[rows], k, metric, exclude=np.arange(len(rows)))
        idx[rows], ok[rows] = rows[i], o
    return idx, ok


def tifu_scores(hist: BasketHistory, groups: np.ndarray, p: TifuParams) -> tuple[np.ndarray, np.ndarray]:
    """(own, neighbours): the user's TIFU vector and the mean of its k nearest users' vectors."""
    own = tifu_vectors(hist, p.r_b, p.r_g, p.m)
    idx, ok = neighbour_index(own, groups, p.k, p.metric)
    return own, neighbour_mean(own, idx, ok, p.k)
