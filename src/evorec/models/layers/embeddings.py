"""Event embeddings with optional side information (category, behaviour, time)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from evorec.models.base import DataSizes, SideInfoConfig
from evorec.types import SequenceBatch

# Gap buckets are log-spaced from 1 second to ~3 years: minutes, hours, days, weeks, months.
_MAX_GAP_S = 3 * 365 * 86400


def time_gap_buckets(batch: SequenceBatch, n_buckets: int) -> Tensor:
    """(B, T) bucket of the time since the previous event (0 = padding / first event).

    Uses only the event's own and earlier timestamps, so it keeps causal models causal.
    """
    ts = batch.timestamps  # (B, T)
    prev = torch.cat([ts[:, :1], ts[:, :-1]], dim=1)  # (B, T)
    has_prev = torch.cat([torch.zeros_like(batch.mask[:, :1]), batch.mask[:, :-1]], dim=1) & batch.mask
    gap = (ts - prev).clamp(min=0).float()
    scale = (n_buckets - 2) / math.log1p(_MAX_GAP_S)
    b = (torch.log1p(gap) * scale).long().clamp(max=n_buckets - 2) + 1  # 1..n-1
    return torch.where(has_prev, b, torch.zeros_like(b))


def query_gap_bucket(batch: SequenceBatch, n_buckets: int) -> Tensor:
    """(B,) bucket of the time from the last event to the query time."""
    gap = (batch.query_ts - batch.timestamps[:, -1]).clamp(min=0).float()
    scale = (n_buckets - 2) / math.log1p(_MAX_GAP_S)
    return (torch.log1p(gap) * scale).long().clamp(max=n_buckets - 2) + 1


def next_gap_buckets(batch: SequenceBatch, n_buckets: int) -> Tensor:
    """(B, T) bucket of the time from each event to the one it predicts (0 = padding).

    The training counterpart of ``query_gap_bucket``: the state at t predicts event t+1, which
    happens at ``timestamps[t+1]``; the last position predicts the query at ``query_ts``. So the
    last column equals ``query_gap_bucket`` wherever the last event is real.
    """
    ts = batch.timestamps  # (B, T)
    nxt = torch.cat([ts[:, 1:], batch.query_ts[:, None]], dim=1)  # (B, T)
    gap = (nxt - ts).clamp(min=0).float()
    scale = (n_buckets - 2) / math.log1p(_MAX_GAP_S)
    b = (torch.log1p(gap) * scale).long().clamp(max=n_buckets - 2) + 1  # 1..n-1
    return torch.where(batch.mask, b, torch.zeros_like(b))


class EventEmbedding(nn.Module):
    """item + [category] + [behaviour] + [time-gap bucket] (+ learned positions if asked).

    Index 0 of every table is padding and stays zero.
    """

    def __init__(self, dim: int, side: SideInfoConfig, sizes: DataSizes, max_len: int | None = None):
        super().__init__()
        self.side = side
        self.item = nn.Embedding(sizes.n_items, dim, padding_idx=0)
        self.category = nn.Embedding(sizes.n_categories, dim, padding_idx=0) if side.use_category else None
        self.behavior = nn.Embedding(sizes.n_behaviors, dim, padding_idx=0) if side.use_behavior else None
        self.time = nn.Embedding(side.time_buckets, dim, padding_idx=0) if side.time != "none" else None
        self.position = nn.Embedding(max_len, dim) if max_len else None
        nn.init.normal_(self.item.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, batch: SequenceBatch) -> Tensor:
        x = self.item(batch.items)  # (B, T, D)
        if self.category is not None:
            x = x + self.category(batch.categories)
        if self.behavior is not None:
            x = x + self.behavior(batch.behaviors)
        if self.time is not None:
            x = x + self.time(time_gap_buckets(batch, self.side.time_buckets))
        if self.position is not None:
            T = batch.items.shape[1]
            pos = torch.arange(self.position.num_embeddings - T, self.position.num_embeddings, device=x.device)
            x = x + self.position(pos)[None]  # right-aligned positions: the latest event is always the last row
        return x * batch.mask[..., None]
