"""P-TopFreq at item level: the user's own most bought items, popularity breaks ties.

The next-basket reality check's personal baseline (Li et al., TOIS 2023)::

    score[i] = number of the user's baskets (in the history given) holding item i
               + 0.5 * popularity_prior[i]        # in (0, 0.5]: orders items with equal counts

A basket is one shopping trip: the data's basket ids (``SequenceBatch.baskets``), else a user's
day (see :func:`evorec.models.nbr.batch_cells`). ``fit`` only counts training popularity; all
personal signal comes from the history in the batch, so the history length the model is given
(``train.max_len``) bounds how far back it counts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from evorec.models.base import NEG_INF, DataSizes, ModelConfig, Recommender
from evorec.models.itemknn import popularity_prior
from evorec.models.nbr import batch_cells, ptopfreq_cells
from evorec.models.pop import item_counts, training_events
from evorec.models.registry import register_model
from evorec.types import SequenceBatch


class PTopFreqConfig(ModelConfig):
    """No knobs: counts of baskets, popularity for ties."""


@register_model("ptopfreq", PTopFreqConfig)
class PTopFreq(Recommender):
    trainable = False
    causal = True  # counts the given history only

    def __init__(self, config: PTopFreqConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        self.register_buffer("prior", torch.zeros(sizes.n_items, dtype=torch.float64))  # (n_items,) in (0, 0.5]
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, train) -> None:  # untyped: evorec.data.batches.TrainView
        counts = item_counts(training_events(train).item, self.n_items)
        self.prior.copy_(torch.from_numpy(0.5 * popularity_prior(counts)))
        self.fitted.fill_(True)

    def score(self, batch: SequenceBatch) -> Tensor:
        if not bool(self.fitted):
            raise RuntimeError("PTopFreq: call fit() (or load a checkpoint) before scoring")
        c = batch_cells(batch)
        freq = ptopfreq_cells(c.row, c.item, batch.size, self.n_items)  # (B, n_items) baskets holding each item
        scores = torch.from_numpy(freq) + self.prior.cpu()  # (B, n_items)
        scores[:, 0] = NEG_INF
        return scores.to(batch.items.device)

    def encode(self, batch: SequenceBatch) -> Tensor:
        return torch.ones(batch.size, 1, device=batch.items.device)
