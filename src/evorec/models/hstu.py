"""HSTU: Hierarchical Sequential Transduction Units (Zhai et al., ICML 2024, "Actions Speak Louder
than Words", Meta's generative recommenders).

Each layer replaces softmax attention + FFN by one gated, pointwise-normalised unit::

    U, V, Q, K = split(SiLU(W_1 LN(X)))                      (one linear, four heads' worth each)
    A          = SiLU(Q K^T + rab_pos(i - j) + rab_time(|t_i - t_j|)) / n      (causal, j <= i)
    Y          = X + dropout(W_o(LN(A V) * U))

- No softmax: SiLU weights are not forced to sum to one, so the *amount* of relevant history
  stays visible (a user with twenty camera views is not the same as one with one), which is
  what HSTU argues for on non-stationary, large vocabularies. ``n`` is the number of keys the
  query can see (``attn_norm="visible"``) or ``max_len`` (``"max_len"``, as in Meta's code).
- ``rab``: learned per head and per layer, from the clipped relative position ``i - j`` and from
  the log-bucketed time between the two events (``relative_time_buckets``). The time part reads
  the batch's real timestamps, so "bought a tent two years ago" and "two minutes ago" weigh
  differently: the heart of long-term interest evolution. Only earlier keys are combined with a
  query, so the bias is causal.
- With ``side.time = "gap_buckets"``, as in SASRec, the scored state also gets the gap from the
  latest event to ``query_ts`` (training: from event t to event t+1).

This is the plain PyTorch reference (memory O(B H T^2)); the fused Triton/CUDA kernels of the
paper are not reproduced here.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from evorec.models.base import AttentionConfig, DataSizes, LossFn, SequentialModel, SideInfoConfig
from evorec.models.layers.embeddings import EventEmbedding, QueryGapEmbedding, init_input_tables, positioned_input, query_state
from evorec.models.registry import register_model
from evorec.ops.dropout import Dropout
from evorec.types import SequenceBatch

_LOG_BASE = 0.301  # bucket = ln(|dt| seconds) / 0.301, as in Meta's generative-recommenders


def relative_time_buckets(ts: Tensor, n_buckets: int) -> Tensor:
    """(B, T, T) bucket of |t_i - t_j| for every query i and key j; log-spaced, 0 for < 1 s.

    Each bucket spans a factor e^0.301 (about 1.35); 64 buckets reach about 5 years (bucket 30 is
    ~2 hours, 40 ~2 days, 50 ~6 weeks); longer gaps share the last bucket.
    """
    dt = (ts[:, :, None] - ts[:, None, :]).abs().clamp(min=1).float()  # (B, T, T)
    return (torch.log(dt) / _LOG_BASE).long().clamp(max=n_buckets - 1)


class HSTUConfig(AttentionConfig):
    hidden: int = Field(64, ge=2)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)  # on embeddings and on each layer's gated output
    attn_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # on the pointwise attention weights
    max_len: int = Field(50, ge=1)  # positions learned; relative distances are clipped to it
    attn_norm: Literal["visible", "max_len"] = "visible"  # what n in A = SiLU(.) / n counts
    rab_position: bool = True  # relative position bias
    rab_time: bool = True  # relative time bias from the events' timestamps
    rab_time_buckets: int = Field(64, ge=2, le=512)
    side: SideInfoConfig = Field(default_factory=SideInfoConfig)

class HSTULayer(nn.Module):
    def __init__(self, c: HSTUConfig):
        super().__init__()
        D = c.hidden
        self.heads = c.heads
        self.max_len = c.max_len
        self.attn_norm = c.attn_norm
        self.time_buckets = c.rab_time_buckets
        self.norm_in = nn.LayerNorm(D)
        self.uvqk = nn.Linear(D, 4 * D)
        self.norm_attn = nn.LayerNorm(D)
        self.out = nn.Linear(D, D)
        self.pos_bias = nn.Embedding(c.max_len, c.heads) if c.rab_position else None
        self.time_bias = nn.Embedding(c.rab_time_buckets, c.heads) if c.rab_time else None
        for emb in (self.pos_bias, self.time_bias):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        self.attn_drop = Dropout(c.attn_dropout)
        self.drop = Dropout(c.dropout)

    def relative_bias(self, timestamps: Tensor) -> Tensor | float:
        """(B, H, T, T) rab from relative positions and relative times (0.0 if both are off)."""
        T = timestamps.shape[1]
        bias: Tensor | float = 0.0
        if self.pos_bias is not None:
            idx = torch.arange(T, device=timestamps.device)
            dist = (idx[:, None] - idx[None, :]).clamp(0, self.max_len - 1)  # (T, T); j > i is masked anyway
            bias = self.pos_bias(dist).permute(2, 0, 1)[None]  # (1, H, T, T)
        if self.time_bias is not None:
            buckets = relative_time_buckets(timestamps, self.time_buckets)  # (B, T, T)
            bias = bias + self.time_bias(buckets).permute(0, 3, 1, 2)  # (B, H, T, T)
        return bias

    def forward(self, x: Tensor, mask: Tensor, timestamps: Tensor) -> Tensor:
        """x: (B, T, D), mask: (B, T) bool, timestamps: (B, T) -> (B, T, D), zero at padding."""
        B, T, D = x.shape
        H = self.heads
        u, v, q, k = F.silu(self.uvqk(self.norm_in(x))).split(D, dim=-1)  # 4 x (B, T, D)
        q = q.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, d)
        k = k.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, d)
        v = v.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, d)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
        allowed = (mask[:, None, :] & causal)[:, None]  # (B, 1, T, T): earlier-or-same, real keys
        if self.attn_norm == "visible":
            n = allowed.sum(-1, keepdim=True).clamp(min=1)  # (B, 1, T, 1)
        else:
            n = self.max_len
        scores = q @ k.transpose(-2, -1) + self.relative_bias(timestamps)  # (B, H, T, T)
        # Pointwise: disallowed pairs are zeroed, not -inf'd; an empty row is simply all zeros.
        a = F.silu(scores) / n * allowed  # (B, H, T, T)
        y = self.attn_drop(a) @ v  # (B, H, T, d)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        y = self.out(self.drop(self.norm_attn(y) * u))  # (B, T, D)
        return (x + y) * mask[..., None]


@register_model("hstu", HSTUConfig)
class HSTU(SequentialModel):
    causal = True

    def __init__(self, config: HSTUConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        c = config
        D = c.hidden
        self.embed = EventEmbedding(D, c.side, sizes)
        self.position = nn.Embedding(c.max_len, D)
        self.emb_drop = Dropout(c.dropout)
        self.layers = nn.ModuleList(HSTULayer(c) for _ in range(c.layers))
        self.final_norm = nn.LayerNorm(D)
        self.query_time = QueryGapEmbedding(c.side.time_buckets, D) if c.side.time == "gap_buckets" else None  # starts at zero
        self._init_weights()

    def _init_weights(self) -> None:
        init_input_tables(self.embed, self.position)  # category / behaviour / time and position tables: std 0.02, padding rows zero

    def forward(self, batch: SequenceBatch) -> Tensor:
        mask = batch.mask  # (B, T)
        x = positioned_input(batch, self.embed, self.position, self.emb_drop)  # (B, T, D), zero at padding
        for layer in self.layers:
            x = layer(x, mask, batch.timestamps)  # (B, T, D)
        return self.final_norm(x) * mask[..., None]

    def output_embeddings(self) -> Tensor:
        return self.embed.item_vectors()  # (n_items, D), tied with the input table (+ projected text / attributes)

    def query_state(self, batch: SequenceBatch, hidden: Tensor) -> Tensor:
        return query_state(batch, hidden, self.query_time)  # (B, D)

    def training_loss(self, batch: SequenceBatch, loss_fn: LossFn, generator: torch.Generator | None = None) -> Tensor:
        hidden = self(batch)  # (B, T, D)
        if self.query_time is not None:
            hidden = hidden + self.query_time.at_next(batch)  # (B, T, D)
        sel = batch.targets > 0  # (B, T)
        return loss_fn(hidden[sel], batch.targets[sel], self.output_embeddings(), self.output_bias())
