"""Next-item losses. Each is a callable (hidden, targets, item_table, item_bias) -> scalar.

- ``FullSoftmaxCE``: cross-entropy over all items (the default when the catalogue fits).
- ``SampledSoftmax``: softmax over the target + shared negatives drawn from a proposal q, with the
  logQ correction (logits - log q) so the estimate is unbiased for large catalogues.
- ``BCENegatives``: binary cross-entropy of the target vs k uniform negatives per position
  (how SASRec/Caser/GRU4Rec papers trained; kept to reproduce them).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from evorec.ops.cross_entropy import softmax_cross_entropy


class LossConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["ce", "sampled_softmax", "bce"] = "ce"
    negatives: int = Field(256, ge=1, description="sampled_softmax: shared negatives per batch; bce: per position")
    proposal: Literal["uniform", "popularity"] = "popularity"  # sampled_softmax proposal q
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


class FullSoftmaxCE:
    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, hidden: Tensor, targets: Tensor, table: Tensor, bias: Tensor | None) -> Tensor:
        logits = hidden @ table.T  # (N, n_items)
        if bias is not None:
            logits = logits + bias
        if not self.label_smoothing:
            return softmax_cross_entropy(logits, targets)  # fused; column 0 (padding) excluded
        logits[:, 0] = float("-inf")  # padding is never a target
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)


class SampledSoftmax:
    """Shared-negative sampled softmax with logQ correction."""

    def __init__(self, n_items: int, negatives: int, item_counts: Tensor | None = None, generator: torch.Generator | None = None):
        self.negatives = min(negatives, max(n_items - 1, 1))
        if item_counts is None:
            q = torch.ones(n_items)
        else:
            q = item_counts.float().clamp(min=0) + 1.0  # smoothed popularity proposal
        q[0] = 0.0
        self.q = q / q.sum()
        self.log_q = torch.log(self.q.clamp(min=1e-12))
        self.generator = generator

    def __call__(self, hidden: Tensor, targets: Tensor, table: Tensor, bias: Tensor | None) -> Tensor:
        neg = torch.multinomial(self.q, self.negatives, replacement=True, generator=self.generator).to(hidden.device)  # (K,)
        log_q = self.log_q.to(hidden.device)
        pos_logit = (hidden * table[targets]).sum(-1)  # (N,)
        neg_logit = hidden @ table[neg].T  # (N, K)
        if bias is not None:
            pos_logit = pos_logit + bias[targets]
            neg_logit = neg_logit + bias[neg]
        pos_logit = pos_logit - log_q[targets]
        neg_logit = neg_logit - log_q[neg]
        # A sampled negative equal to the row's own target is not a negative.
        neg_logit = neg_logit.masked_fill(neg[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([pos_logit[:, None], neg_logit], dim=1)  # (N, 1+K)
        return F.cross_entropy(logits, torch.zeros_like(targets))


class BCENegatives:
    def __init__(self, n_items: int, negatives: int, generator: torch.Generator | None = None):
        self.n_items, self.negatives, self.generator = n_items, negatives, generator

    def __call__(self, hidden: Tensor, targets: Tensor, table: Tensor, bias: Tensor | None) -> Tensor:
        N = targets.shape[0]
        neg = torch.randint(1, self.n_items, (N, self.negatives), generator=self.generator).to(hidden.device)  # (N, k)
        pos = (hidden * table[targets]).sum(-1)  # (N,)
        negl = torch.einsum("nd,nkd->nk", hidden, table[neg])  # (N, k)
        if bias is not None:
            pos = pos + bias[targets]
            negl = negl + bias[neg]
        loss_pos = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
        valid = (neg != targets[:, None]).float()
        loss_neg = (F.binary_cross_entropy_with_logits(negl, torch.zeros_like(negl), reduction="none") * valid).sum() / valid.sum().clamp(min=1)
        return loss_pos + loss_neg


def make_loss(cfg: LossConfig, n_items: int, item_counts: Tensor | None = None, generator: torch.Generator | None = None):
    if cfg.kind == "ce":
        return FullSoftmaxCE(cfg.label_smoothing)
    if cfg.kind == "sampled_softmax":
        return SampledSoftmax(n_items, cfg.negatives, item_counts if cfg.proposal == "popularity" else None, generator)
    return BCENegatives(n_items, cfg.negatives, generator)
