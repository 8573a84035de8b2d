"""Event embeddings with optional side information (category, behaviour, time, item text), and
the pieces the sequence Transformers share: right-aligned positions and the query-gap state."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from evorec.errors import InputError
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


def right_aligned_positions(T: int, max_len: int, device: torch.device) -> Tensor:
    """(T,) position rows for a left-padded window of T events: the latest event always gets row
    ``max_len - 1``; events older than the last ``max_len`` share row 0 (rather than failing)."""
    return (torch.arange(T, device=device) + (max_len - T)).clamp(min=0)


def positioned_input(
    batch: SequenceBatch, embed: EventEmbedding, position: nn.Embedding, drop: nn.Module, norm: nn.Module | None = None,
) -> Tensor:
    """(B, T, D) a sequence Transformer's input: event embeddings + right-aligned learned
    positions (``position``: (max_len, D)) [-> ``norm``] -> ``drop``, zero at padding."""
    x = embed(batch)  # (B, T, D), zero at padding
    x = x + position(right_aligned_positions(batch.length, position.num_embeddings, x.device))[None]  # (B, T, D)
    if norm is not None:
        x = norm(x)
    return drop(x) * batch.mask[..., None]  # (B, T, D)


class QueryGapEmbedding(nn.Embedding):
    """(n_buckets, D) embedding of the gap from an event to the one it predicts, added to the
    scored state (``side.time = "gap_buckets"``): at scoring the gap from the latest event to
    ``query_ts`` (:meth:`at_query`), in training from event t to event t+1 (:meth:`at_next`), so
    both see the same thing. Starts at zero: enabling it starts from the time-free model."""

    def __init__(self, n_buckets: int, dim: int):
        super().__init__(n_buckets, dim, padding_idx=0)
        nn.init.zeros_(self.weight)

    def at_query(self, batch: SequenceBatch) -> Tensor:
        """(B, D) embedding of the gap from each history's latest event to its ``query_ts``."""
        return self(query_gap_bucket(batch, self.num_embeddings))

    def at_next(self, batch: SequenceBatch) -> Tensor:
        """(B, T, D) embedding of the gap from each event to the next (the last: to ``query_ts``)."""
        return self(next_gap_buckets(batch, self.num_embeddings))


def query_state(batch: SequenceBatch, hidden: Tensor, gap: QueryGapEmbedding | None) -> Tensor:
    """(B, D) state that scores the next item: the latest position of ``hidden`` (B, T, D), plus
    the embedded gap to ``query_ts`` when the model has one."""
    state = hidden[:, -1]  # (B, D); left-padded: T-1 is the latest event
    if gap is not None:
        state = state + gap.at_query(batch)  # (B, D)
    return state


class EventEmbedding(nn.Module):
    """item + [text] + [category] + [behaviour] + [time-gap bucket]; positions are the model's
    (see :func:`right_aligned_positions`).

    Index 0 of every table is padding and stays zero.

    With ``side.text`` an item's vector is ``item(i) + W @ text(i)``: ``text`` is a frozen
    (n_items, text_dim) matrix of sentence embeddings (``evorec.data.text``) held as a persistent
    buffer (so checkpoints carry it and the optimiser never touches it), ``W`` a learned
    bias-free projection, so items without text (zero rows) get exactly their item embedding.
    The buffer starts at zeros and is filled by :meth:`set_item_text`. Models that score against
    :meth:`item_vectors` (SASRec) also give a cold item with a title a meaningful output score.
    """

    def __init__(self, dim: int, side: SideInfoConfig, sizes: DataSizes):
        super().__init__()
        self.side = side
        self.item = nn.Embedding(sizes.n_items, dim, padding_idx=0)
        self.category = nn.Embedding(sizes.n_categories, dim, padding_idx=0) if side.use_category else None
        self.behavior = nn.Embedding(sizes.n_behaviors, dim, padding_idx=0) if side.use_behavior else None
        self.time = nn.Embedding(side.time_buckets, dim, padding_idx=0) if side.time != "none" else None
        self.text_proj = None
        self.register_buffer("item_text", None)
        if side.text:
            if sizes.text_dim <= 0:
                raise InputError("side.text needs DataSizes.text_dim > 0 (the pipeline sets it from the item text matrix)")
            self.register_buffer("item_text", torch.zeros(sizes.n_items, sizes.text_dim), persistent=True)
            self.text_proj = nn.Linear(sizes.text_dim, dim, bias=False)
        self.attributes = None
        self.register_buffer("item_attributes", None)
        if side.attributes:
            if sizes.n_attributes <= 1 or sizes.attribute_width <= 0:
                raise InputError("side.attributes needs DataSizes.n_attributes > 1 (the pipeline sets it from the items' attributes)")
            # mean of the item's token vectors; token 0 (none) is left out of the mean
            self.attributes = nn.EmbeddingBag(sizes.n_attributes, dim, mode="mean", padding_idx=0)
            self.register_buffer("item_attributes", torch.zeros(sizes.n_items, sizes.attribute_width, dtype=torch.long), persistent=True)
        nn.init.normal_(self.item.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def set_item_text(self, matrix) -> None:  # untyped: np.ndarray | Tensor
        """Copy the frozen (rows, text_dim) item text matrix into the buffer.

        ``rows`` may be fewer than this table's (BERT4Rec's extra [MASK] row): the rest stay zero.
        """
        if self.item_text is None:
            raise ValueError("this embedding was built with side.text off")
        _fill_rows(self.item_text, torch.as_tensor(matrix, dtype=torch.float32), "item text matrix")

    def set_item_attributes(self, matrix) -> None:  # untyped: np.ndarray | Tensor
        """Copy the (rows, width) attribute-token matrix into the buffer (rows <= this table's;
        the rest, e.g. BERT4Rec's [MASK] row, have no attributes)."""
        if self.item_attributes is None:
            raise ValueError("this embedding was built with side.attributes off")
        m = torch.as_tensor(matrix, dtype=torch.long)
        if len(m) and (int(m.min()) < 0 or int(m.max()) >= self.attributes.num_embeddings):
            raise ValueError(f"item attribute tokens must lie in [0, {self.attributes.num_embeddings}), got [{int(m.min())}, {int(m.max())}]")
        _fill_rows(self.item_attributes, m, "item attribute matrix")

    def attribute_vectors(self, items: Tensor) -> Tensor:
        """(..., D) mean attribute vector of each item index in ``items`` (zero without attributes)."""
        tokens = self.item_attributes[items.reshape(-1)]  # (N, width)
        return self.attributes(tokens).view(*items.shape, -1)  # (N, D) -> (..., D)

    def item_vectors(self) -> Tensor:
        """(n_items, D) every item's vector: its embedding [+ projected text] [+ attributes]."""
        w = self.item.weight
        if self.text_proj is not None:
            w = w + self.text_proj(self.item_text)  # (n_items, D)
        if self.attributes is not None:
            w = w + self.attributes(self.item_attributes)  # (n_items, D)
        return w

    def forward(self, batch: SequenceBatch) -> Tensor:
        x = self.item(batch.items)  # (B, T, D)
        if self.text_proj is not None:
            x = x + self.text_proj(self.item_text[batch.items])  # (B, T, text_dim) -> (B, T, D)
        if self.attributes is not None:
            x = x + self.attribute_vectors(batch.items)  # (B, T, D)
        if self.category is not None:
            x = x + self.category(batch.categories)
        if self.behavior is not None:
            x = x + self.behavior(batch.behaviors)
        if self.time is not None:
            x = x + self.time(time_gap_buckets(batch, self.side.time_buckets))
        return x * batch.mask[..., None]


def _fill_rows(buffer: Tensor, m: Tensor, what: str) -> None:
    """Copy (rows, width) ``m`` into the first rows of ``buffer`` (rows <= the buffer's; the rest
    are zeroed, e.g. BERT4Rec's extra [MASK] row)."""
    n, w = buffer.shape
    if m.ndim != 2 or m.shape[1] != w or m.shape[0] > n:
        raise ValueError(f"{what} must be (<= {n}, {w}), got {tuple(m.shape)}")
    with torch.no_grad():
        buffer.zero_()
        buffer[: m.shape[0]].copy_(m)


def init_input_tables(embed: EventEmbedding, position: nn.Embedding, std: float = 0.02) -> None:
    """:func:`init_side_tables`, then N(0, std) for the (max_len, D) position table."""
    init_side_tables(embed, std)
    nn.init.normal_(position.weight, std=std)


def init_side_tables(embed: EventEmbedding, std: float = 0.02) -> None:
    """Small init for the category / behaviour / time tables (EventEmbedding leaves them at N(0, 1)),
    so side information starts as a refinement of the item signal (std D^-0.5) instead of drowning it.
    Padding rows stay zero."""
    for emb in (embed.category, embed.behavior, embed.time, embed.attributes):
        if emb is not None:
            nn.init.normal_(emb.weight, std=std)
            with torch.no_grad():
                emb.weight[0].zero_()

