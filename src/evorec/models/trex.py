"""Repeat and explore together (TREx-style: Li et al., arXiv 2405.01143, separate modules).

Two members, each a registered model:

- ``repeat``: a model with ``repeat_probabilities`` (default ``repeat``, the purchase-interval
  hazard): p(item in the next basket) for every item of the user's history;
- ``explore``: any recommender (popularity, ItemKNN, SASRec, GRU4Rec, ...): it ranks the rest.

The gate is TREx's: a history item whose repeat probability reaches ``threshold`` goes first
(ordered by p); every other item, history items below the threshold included, is ranked by the
explore member::

    score[i] = 2 + p_i                                   if i in history and p_i >= threshold
             = the explore score mapped linearly into [0, 0.999]  otherwise (per user)

So the number of repeat slots adapts per user: a regular shopper with many due items gets many,
a user whose items are not due (or a log where repeats are rare, e.g. Amazon reviews: every p is
small) gets the explore ranking alone -- the combination falls back to the explore model.
``threshold`` is tuned on the validation fold (:func:`evorec.evaluation.nextbasket.tune`).

Training: a neural explore member is trained by the trainer through ``training_loss`` (the
repeat member is fitted once in ``prepare``); with a count-based explore member ``fit`` fits both.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import Tensor

from evorec.errors import InputError
from evorec.models.base import DataSizes, LossFn, ModelConfig, Recommender
from evorec.models.ensemble import MemberConfig
from evorec.models.registry import register_model
from evorec.types import SequenceBatch

NEG_INF = float("-inf")


class TrexConfig(ModelConfig):
    repeat: MemberConfig = Field(default_factory=lambda: MemberConfig(name="repeat"))
    explore: MemberConfig = Field(default_factory=lambda: MemberConfig(name="pop"))
    threshold: float = Field(0.2, ge=0, le=1, description="repeat probability from which a history item goes first")

    @field_validator("repeat", "explore")
    @classmethod
    def _known(cls, m: MemberConfig) -> MemberConfig:
        from evorec.models.registry import make_config

        if m.name == "trex":
            raise InputError("a trex member cannot be a trex")
        make_config(m.name, m.config)  # unknown model or bad field: fail now, naming it
        return m


@register_model("trex", TrexConfig)
class Trex(Recommender):
    causal = False  # no per-position states of its own; the members are checked themselves

    def __init__(self, config: TrexConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        from evorec.models.registry import build_model

        self.repeat = build_model(config.repeat.name, config.repeat.config, sizes)
        if not hasattr(self.repeat, "repeat_probabilities"):
            raise InputError(f"trex: the repeat member {config.repeat.name!r} has no repeat_probabilities (use 'repeat')")
        self.explore = build_model(config.explore.name, config.explore.config, sizes)
        self.trainable = self.explore.trainable  # instance value: the trainer trains a neural explore member
        self.register_buffer("threshold", torch.tensor(float(config.threshold), dtype=torch.float64))

    def set_threshold(self, value: float) -> None:
        """Change the gate (validation tuning); saved with the checkpoint."""
        self.threshold.fill_(float(value))

    def prepare(self, train) -> None:  # untyped: evorec.data.batches.TrainView
        self.repeat.fit(train)

    def fit(self, train) -> None:
        self.repeat.fit(train)
        if self.explore.trainable:
            raise NotImplementedError("trex with a neural explore member is trained by evorec.training")
        self.explore.fit(train)

    def training_loss(self, batch: SequenceBatch, loss_fn: LossFn, generator: torch.Generator | None = None) -> Tensor:
        return self.explore.training_loss(batch, loss_fn, generator)

    def parts(self, batch: SequenceBatch) -> tuple[Tensor, Tensor, Tensor]:
        """((B, n_items) repeat p, (B, n_items) bool history, (B, n_items) explore score in [0, 0.999],
        -1 where the explore member rules an item out)."""
        p, hist = self.repeat.repeat_probabilities(batch)
        e = self.explore.score(batch).double()  # (B, n_items)
        finite = torch.isfinite(e)
        lo = torch.where(finite, e, torch.full_like(e, float("inf"))).amin(1, keepdim=True)  # (B, 1)
        hi = torch.where(finite, e, torch.full_like(e, float("-inf"))).amax(1, keepdim=True)  # (B, 1)
        # a linear map per row into [0, 0.999]: strictly monotone, so the explore order (and its
        # ties) stays exactly the member's, never squashed into new ties as a sigmoid would
        ex = torch.where(finite, (e - lo) / (hi - lo).clamp(min=1e-300) * 0.999, torch.full_like(e, -1.0))
        return p, hist, ex

    def score(self, batch: SequenceBatch) -> Tensor:
        p, hist, ex = self.parts(batch)
        first = hist & (p >= self.threshold)
        scores = torch.where(first, 2.0 + p, ex)  # (B, n_items)
        scores[:, 0] = NEG_INF
        return scores

    def encode(self, batch: SequenceBatch) -> Tensor:
        return self.explore.encode(batch)
