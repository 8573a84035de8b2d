"""First-order Markov chain: item -> next item transitions, with a popularity backoff.

``fit`` counts consecutive pairs ``(x_t, x_{t+1})`` inside each user's training sequence (both
known; repeats ``a -> a`` are kept: re-consumption is real signal) and keeps, per item, the
``top_k`` most frequent successors as probabilities of the *full* row::

    P(b | a) = C[a, b] / sum_b' C[a, b']        (kept only for a's top_k successors b)

The popularity distribution ``P_pop(b) = n_b / sum n`` of training occurrences is the backoff.

``score`` mixes the rows of the last ``order`` history positions (j counts known items back from
the latest; an unknown item votes 0)::

    score[b] = sum_j mix_decay**j * P(b | h_j) + backoff * P_pop(b)

so an item with no transition ranks by popularity, and a history whose last item has no
outgoing transitions (cold or unknown) falls back to popularity entirely.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from evorec.models.base import NEG_INF, DataSizes, ModelConfig, Recommender
from evorec.models.itemknn import last_known_items, top_k_rows
from evorec.models.pop import item_counts, training_events
from evorec.models.registry import register_model
from evorec.types import SequenceBatch


class MarkovConfig(ModelConfig):
    top_k: int = Field(100, ge=1, description="successors kept per item")
    backoff: float = Field(0.01, ge=0, description="weight of the popularity distribution added to every score")
    order: int = Field(1, ge=1, le=3, description="mix the transitions of the last 1-3 history items")
    mix_decay: float = Field(0.5, gt=0, le=1, description="weight of the j-th most recent item's row: mix_decay**j")


@register_model("markov", MarkovConfig)
class Markov(Recommender):
    """First-order item transitions (top-K per item) plus a popularity backoff."""

    trainable = False
    causal = True

    def __init__(self, config: MarkovConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        k = config.top_k
        self.register_buffer("successors", torch.zeros(sizes.n_items, k, dtype=torch.int64))  # (n_items, K)
        self.register_buffer("probs", torch.zeros(sizes.n_items, k, dtype=torch.float32))  # (n_items, K)
        self.register_buffer("popularity", torch.zeros(sizes.n_items, dtype=torch.float32))  # (n_items,) P_pop
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, train) -> None:  # untyped: evorec.data.batches.TrainView
        cfg: MarkovConfig = self.config
        ev = training_events(train)
        n = self.n_items
        counts = item_counts(ev.item, n)
        a, b = ev.item[:-1], ev.item[1:]  # consecutive events of the flat arrays
        ok = (ev.user[:-1] == ev.user[1:]) & (a > 0) & (b > 0)  # same user, both known
        keys, c = np.unique(a[ok] * np.int64(n) + b[ok], return_counts=True)
        src, dst = keys // n, keys % n
        out = np.bincount(src, weights=c, minlength=n)  # (n_items,) transitions leaving each item
        p = c / out[src] if len(c) else np.zeros(0)
        idx, w = top_k_rows(src, dst, p, n, cfg.top_k)
        total = counts.sum()
        self.successors.copy_(torch.from_numpy(idx))
        self.probs.copy_(torch.from_numpy(w))
        self.popularity.copy_(torch.from_numpy((counts / total if total > 0 else counts).astype(np.float32)))
        self.fitted.fill_(True)

    def score(self, batch: SequenceBatch) -> Tensor:
        if not bool(self.fitted):
            raise RuntimeError("Markov: call fit() (or load a checkpoint) before scoring")
        cfg: MarkovConfig = self.config
        last, mix = last_known_items(batch, cfg.order, cfg.mix_decay)  # (B, order), (B, order)
        nxt = self.successors[last]  # (B, order, K)
        w = self.probs[last] * mix.unsqueeze(-1)  # (B, order, K); padding rows are 0
        scores = (self.popularity * cfg.backoff).expand(batch.size, -1).clone()  # (B, n_items)
        scores.scatter_add_(1, nxt.reshape(batch.size, -1), w.reshape(batch.size, -1))  # (B, n_items)
        scores[:, 0] = NEG_INF
        return scores
