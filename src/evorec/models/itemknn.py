"""Item-to-item nearest neighbours from co-occurrence within a window of training events.

``fit``:

1. ``C[a, b]`` = number of times items ``a`` and ``b`` (``a != b``, both known) occur within
   ``window`` events of each other in one user's training sequence (symmetric; with
   ``directed`` only ``a`` before ``b`` counts).
2. Cosine-style normalisation with shrinkage::

       sim(a, b) = C[a, b] / (sqrt(n_a * n_b) + shrinkage)

   where ``n_a`` is the number of training occurrences of ``a``. Shrinkage pulls pairs seen
   only a few times towards 0.
3. Keep the ``top_k`` most similar neighbours of every item (ties: smaller item index first):
   buffers ``neighbors`` (n_items, K) int64 and ``weights`` (n_items, K) float32; an empty slot
   has neighbour 0 and weight 0. Memory is bounded by n_items x K.

Co-occurrences are counted in chunks of users with ``np.unique`` over int64 pair keys, so memory
grows with the number of *distinct* pairs, not with events x window.

``score``: the user's last ``history`` known items, most recent first, weigh ``decay ** j``
(j = 0 for the latest); ``score[b] = sum_j decay**j * sim(h_j, b)`` over the kept neighbours,
computed with one ``scatter_add_`` per batch. Every item also gets a tiny popularity prior,
strictly below half the smallest possible neighbour signal and distinct per item (popularity,
then item index), so items without signal rank by popularity and no two items ever tie on it.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from evorec.models.base import NEG_INF, DataSizes, ModelConfig, Recommender
from evorec.models.pop import item_counts, training_events
from evorec.models.registry import register_model
from evorec.types import SequenceBatch

_PAIR_CHUNK = 1 << 23  # candidate pairs handled at once while counting (bounds fit memory)


class ItemKNNConfig(ModelConfig):
    window: int = Field(5, ge=1, description="co-occurrence window W: pairs at most W events apart")
    directed: bool = Field(False, description="count only a -> later b (default: both directions)")
    shrinkage: float = Field(10.0, ge=0, description="added to the cosine denominator")
    top_k: int = Field(100, ge=1, description="neighbours kept per item")
    history: int = Field(20, ge=1, description="H: last H history items that vote")
    decay: float = Field(0.8, gt=0, le=1, description="weight of the j-th most recent history item: decay**j")


def popularity_prior(counts: np.ndarray) -> np.ndarray:
    """(n_items,) in (0, 1]: rank of each item by popularity (ties: smaller index first), scaled.

    Index 0 gets 0. Distinct for every real item, so it breaks every tie deterministically."""
    n = len(counts)
    prior = np.zeros(n, dtype=np.float64)
    if n <= 1:
        return prior
    order = np.lexsort((np.arange(1, n), -counts[1:])) + 1  # most popular first
    prior[order] = (n - 1 - np.arange(n - 1)) / (n - 1)  # 1 for the most popular ... 1/(n-1)
    return prior


def cooccurrence(
    item: np.ndarray, user: np.ndarray, n_items: int, window: int, directed: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, count) of item pairs within ``window`` events of each other in one user's sequence.

    Pairs with an unknown item (0) or ``a == b`` are dropped. Returned sorted by (a, b)."""
    keys: list[np.ndarray] = []
    cnts: list[np.ndarray] = []
    n = np.int64(n_items)
    step = max(_PAIR_CHUNK // window, 1)
    for lo in range(0, len(item), step):
        hi = min(lo + step, len(item))
        chunk_keys = []
        for d in range(1, window + 1):
            a_idx = np.arange(lo, min(hi, len(item) - d))  # (P,) first event of each candidate pair
            if len(a_idx) == 0:
                break
            a, b = item[a_idx], item[a_idx + d]
            ok = (user[a_idx] == user[a_idx + d]) & (a > 0) & (b > 0) & (a != b)
            a, b = a[ok], b[ok]
            chunk_keys.append(a * n + b)
            if not directed:
                chunk_keys.append(b * n + a)
        if chunk_keys:
            k, c = np.unique(np.concatenate(chunk_keys), return_counts=True)
            keys.append(k)
            cnts.append(c)
    if not keys:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    if len(keys) == 1:
        k, c = keys[0], cnts[0]
    else:  # merge the per-chunk counts of pairs seen in several chunks
        k, inv = np.unique(np.concatenate(keys), return_inverse=True)
        c = np.bincount(inv.ravel(), weights=np.concatenate(cnts)).astype(np.int64)
    return k // n, k % n, c


def top_k_rows(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k largest values per row: (n_rows, k) column indices (0 = empty) and values."""
    idx = np.zeros((n_rows, k), dtype=np.int64)
    w = np.zeros((n_rows, k), dtype=np.float32)
    if len(rows) == 0:
        return idx, w
    order = np.lexsort((cols, -vals, rows))  # by row, then value descending, then column
    rows, cols, vals = rows[order], cols[order], vals[order]
    row_start = np.searchsorted(rows, rows, side="left")  # (P,) first entry of each entry's row
    rank = np.arange(len(rows)) - row_start  # (P,) position within the row
    keep = rank < k
    idx[rows[keep], rank[keep]] = cols[keep]
    w[rows[keep], rank[keep]] = vals[keep]
    return idx, w


@register_model("itemknn", ItemKNNConfig)
class ItemKNN(Recommender):
    """Window co-occurrence item-kNN with cosine/shrinkage similarity and recency-decayed votes."""

    trainable = False
    causal = True  # scores depend only on the history given

    def __init__(self, config: ItemKNNConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        k = config.top_k
        self.register_buffer("neighbors", torch.zeros(sizes.n_items, k, dtype=torch.int64))  # (n_items, K)
        self.register_buffer("weights", torch.zeros(sizes.n_items, k, dtype=torch.float32))  # (n_items, K)
        self.register_buffer("prior", torch.zeros(sizes.n_items, dtype=torch.float32))  # (n_items,) tie-breaker
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, train) -> None:  # untyped: evorec.data.batches.TrainView
        cfg: ItemKNNConfig = self.config
        ev = training_events(train)
        n = self.n_items
        counts = item_counts(ev.item, n)
        a, b, c = cooccurrence(ev.item, ev.user, n, cfg.window, cfg.directed)
        sim = c / (np.sqrt(counts[a] * counts[b]) + cfg.shrinkage)  # counts >= 1 for every paired item
        idx, w = top_k_rows(a, b, sim, n, cfg.top_k)
        # The smallest signal a real neighbour can give is its weight times the last vote's decay;
        # the prior stays below half of it, so it only orders items without signal (and ties).
        positive = w[w > 0]
        floor = float(positive.min()) * cfg.decay ** (cfg.history - 1) if len(positive) else 1.0
        prior = popularity_prior(counts) * 0.5 * floor
        self.neighbors.copy_(torch.from_numpy(idx))
        self.weights.copy_(torch.from_numpy(w))
        self.prior.copy_(torch.from_numpy(prior.astype(np.float32)))
        self.fitted.fill_(True)

    def score(self, batch: SequenceBatch) -> Tensor:
        if not bool(self.fitted):
            raise RuntimeError("ItemKNN: call fit() (or load a checkpoint) before scoring")
        cfg: ItemKNNConfig = self.config
        hist, vote = last_known_items(batch, cfg.history, cfg.decay)  # (B, H), (B, H)
        nbr = self.neighbors[hist]  # (B, H, K)
        w = self.weights[hist] * vote.unsqueeze(-1)  # (B, H, K); padding rows of the table are 0
        scores = self.prior.expand(batch.size, -1).clone()  # (B, n_items)
        scores.scatter_add_(1, nbr.reshape(batch.size, -1), w.reshape(batch.size, -1))  # (B, n_items)
        scores[:, 0] = NEG_INF
        return scores


def last_known_items(batch: SequenceBatch, h: int, decay: float) -> tuple[Tensor, Tensor]:
    """The last ``h`` history positions (left padding: the tail) and their vote weights.

    (B, H) item indices and (B, H) weights ``decay ** j`` where j counts known (non-zero) items
    back from the latest; padding and unknown items get weight 0 (their table rows are 0 too)."""
    items = batch.items[:, -h:]  # (B, H) most recent last
    known = (items > 0) & batch.mask[:, -h:]  # (B, H)
    # j = number of known items after this position: a reversed cumulative sum.
    after = known.flip(1).long().cumsum(1).flip(1) - known.long()  # (B, H)
    vote = torch.where(known, decay ** after.float(), 0.0)  # (B, H)
    return torch.where(known, items, torch.zeros_like(items)), vote
