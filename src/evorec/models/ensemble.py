"""Ensemble: several neural models trained together in one run, scored as a blend.

Each member is a registered neural model with its own config (e.g. three SASRecs: they differ by
their initial weights and dropout masks, drawn one after the other from the run's seed). Every
training step feeds the same batch to each member and takes the mean of their losses, so each
member learns exactly as it would alone (Adam's step does not depend on the 1/K scale; the
trainer's gradient clipping sees the norm of all members together). Early stopping and the best
checkpoint follow the blend's validation metric.

Members may also be count-based models (ItemKNN, Markov, Pop): they are fitted on the training
data before the first step (``prepare``) and take no part in the loss.

Scores are the weighted sum of the members' log-softmax over the catalogue (a product of
experts): ``score = sum_k w_k log p_k(item | history)``. For a count-based member the
log-softmax of its raw scores ranks like the raw scores (it only subtracts one constant per row),
so its weight acts on its similarity scale: ``w_k * score_k``. On S3-Rec Beauty four SASRecs and
one HSTU blended this way score test NDCG@10 0.0652 against 0.0620-0.0629 for one SASRec
(configs/beauty/ensemble.yaml, benchmarks/README.md).
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from evorec.errors import InputError
from evorec.models.base import DataSizes, LossFn, ModelConfig, Recommender
from evorec.models.registry import register_model
from evorec.types import SequenceBatch

NEG_INF = float("-inf")


class MemberConfig(ModelConfig):
    name: str  # a registered neural model
    config: dict = Field(default_factory=dict)


class EnsembleConfig(ModelConfig):
    members: list[MemberConfig] = Field(min_length=1)
    weights: list[float] | None = None  # one per member, >= 0, not all 0; None: equal weights

    @field_validator("members")
    @classmethod
    def _neural_members(cls, members: list[MemberConfig]) -> list[MemberConfig]:
        from evorec.models.registry import get_model, make_config

        neural = False
        for i, m in enumerate(members):
            if m.name == "ensemble":
                raise InputError(f"members[{i}]: an ensemble cannot contain an ensemble")
            neural |= get_model(m.name)[0].trainable
            make_config(m.name, m.config)  # a typo in a member's config fails here, naming the model
        if not neural:
            raise InputError("an ensemble needs at least one neural member (count-based models alone: use them directly)")
        return members

    @model_validator(mode="after")
    def _weights_match(self) -> EnsembleConfig:
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise InputError(f"weights has {len(self.weights)} values for {len(self.members)} members")
            if any(w < 0 for w in self.weights) or not any(w > 0 for w in self.weights):
                raise InputError(f"weights must be >= 0 and not all 0, got {self.weights}")
        return self


@register_model("ensemble", EnsembleConfig)
class Ensemble(Recommender):
    causal = False  # no per-position states of its own; every member passes the leakage check itself

    def __init__(self, config: EnsembleConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        from evorec.models.registry import build_model

        self.members = nn.ModuleList(build_model(m.name, m.config, sizes) for m in config.members)
        w = config.weights or [1.0] * len(config.members)
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32) / sum(w), persistent=False)  # (K,)

    def prepare(self, train) -> None:  # train: evorec.data.batches.TrainView
        for m in self.members:
            if not m.trainable:
                m.fit(train)

    def training_loss(self, batch: SequenceBatch, loss_fn: LossFn, generator: torch.Generator | None = None) -> Tensor:
        losses = [m.training_loss(batch, loss_fn, generator) for m in self.members if m.trainable]  # one per neural member
        return torch.stack(losses).mean()

    def score(self, batch: SequenceBatch) -> Tensor:
        out = None
        for w, m in zip(self.weights.tolist(), self.members, strict=True):
            if w == 0:
                continue
            s = m.score(batch).float()  # (B, n_items), -inf where a member rules an item out
            logp = torch.log_softmax(s.masked_fill(~torch.isfinite(s), -1e30), dim=-1)  # (B, n_items)
            out = w * logp if out is None else out + w * logp
        out[:, 0] = NEG_INF
        return out

    def encode(self, batch: SequenceBatch) -> Tensor:
        return torch.cat([m.encode(batch) for m in self.members], dim=-1)  # (B, sum of member D)
