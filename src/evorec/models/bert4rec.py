"""BERT4Rec: bidirectional Transformer trained by cloze (masked-item) prediction (Sun et al., CIKM 2019).

Every position sees the whole window (no causal mask), so the model is trained by hiding items:
a fraction ``mask_prob`` of the real events is replaced by a [MASK] token and the model predicts
the original items there. To score the next item, a [MASK] is appended after the history (the
oldest event is dropped if the window is full) and its state is scored against the item table.

- [MASK] is item index ``n_items``: the input table has ``n_items + 1`` rows; the output table
  (tied) is its first ``n_items`` rows, so [MASK] is never recommended.
- A masked event keeps its timestamp but loses its category and behaviour (those would give the
  answer away, and the appended query token has none either). Its timestamp is the point: with
  ``side.time = "gap_buckets"`` the query token's gap is ``query_ts - last event``, so the model
  learns how the elapsed time changes what comes next.
- Training windows are shifted by one to end with the window's own next event (the target at
  T-1), so the latest position, the one scoring uses, is trained too; with probability
  ``last_mask_prob`` per sequence that latest event is masked on top of the random ones (the
  paper's "mask the last item" samples that match the scoring task).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from evorec.models.base import AttentionConfig, DataSizes, LossFn, SequentialModel, SideInfoConfig
from evorec.models.layers.embeddings import EventEmbedding, init_input_tables, positioned_input
from evorec.models.registry import register_model
from evorec.ops.attention import TransformerBlock
from evorec.ops.dropout import Dropout
from evorec.types import SequenceBatch


class BERT4RecConfig(AttentionConfig):
    hidden: int = Field(64, ge=2)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)  # on embeddings and on each residual branch / FFN
    attn_dropout: float = Field(0.2, ge=0.0, lt=1.0)  # on attention weights
    max_len: int = Field(50, ge=1)  # window incl. the appended [MASK] at scoring time
    norm: Literal["pre", "post"] = "post"  # BERT is post-LN
    ffn_mult: int = Field(4, ge=1)  # FFN width = ffn_mult * hidden (BERT: 4)
    activation: Literal["relu", "gelu"] = "gelu"
    fused_attention: bool = True  # scaled_dot_product_attention; False = the plain reference
    mask_prob: float = Field(0.2, gt=0.0, lt=1.0)  # share of real events hidden in training
    last_mask_prob: float = Field(0.1, ge=0.0, le=1.0)  # per sequence: also hide the latest event
    side: SideInfoConfig = Field(default_factory=SideInfoConfig)

@register_model("bert4rec", BERT4RecConfig)
class BERT4Rec(SequentialModel):
    causal = False

    def __init__(self, config: BERT4RecConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        c = config
        D = c.hidden
        self.mask_id = sizes.n_items  # one row past the real items
        self.embed = EventEmbedding(D, c.side, replace(sizes, n_items=sizes.n_items + 1))
        self.position = nn.Embedding(c.max_len, D)
        self.emb_drop = Dropout(c.dropout)
        self.emb_norm = nn.LayerNorm(D) if c.norm == "post" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(D, c.heads, c.ffn_mult * D, c.dropout, c.attn_dropout, False, c.fused_attention, c.norm, c.activation)
            for _ in range(c.layers)
        )
        self.final_norm = nn.LayerNorm(D) if c.norm == "pre" else None
        # BERT's masked-LM head: a transform before the tied item table, plus a per-item bias.
        self.head = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.LayerNorm(D))
        self.bias = nn.Parameter(torch.zeros(sizes.n_items))
        # Category of each item, to fill in the category of the shifted-in last target.
        if c.side.use_category and sizes.item_category is not None:
            self.register_buffer("item_category", torch.tensor(sizes.item_category, dtype=torch.long), persistent=False)
        else:
            self.item_category = None
        self._init_weights()

    def _init_weights(self) -> None:
        init_input_tables(self.embed, self.position)  # category / behaviour / time and position tables: std 0.02, padding rows zero

    # -- the network -------------------------------------------------------------------------

    def forward(self, batch: SequenceBatch) -> Tensor:
        """(B, T, D) state at every position, each from the whole window (bidirectional)."""
        mask = batch.mask  # (B, T)
        x = positioned_input(batch, self.embed, self.position, self.emb_drop, self.emb_norm)  # (B, T, D), zero at padding
        for block in self.blocks:
            x = block(x, mask)  # (B, T, D)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.head(x) * mask[..., None]  # (B, T, D)

    def output_embeddings(self) -> Tensor:
        return self.embed.item.weight[: self.n_items]  # (n_items, D): [MASK] is not an output

    def output_bias(self) -> Tensor:
        return self.bias

    # -- scoring: a [MASK] after the history -------------------------------------------------

    def with_query_token(self, batch: SequenceBatch) -> SequenceBatch:
        """The history's last ``max_len - 1`` events followed by a [MASK] at ``query_ts``."""
        B, T = batch.size, batch.length
        keep = min(T, self.config.max_len - 1)
        dev = batch.items.device

        def append(x: Tensor, last: Tensor) -> Tensor:
            return torch.cat([x[:, T - keep :], last[:, None]], dim=1)  # (B, keep + 1)

        zeros = torch.zeros(B, dtype=torch.long, device=dev)
        return SequenceBatch(
            items=append(batch.items, torch.full((B,), self.mask_id, dtype=torch.long, device=dev)),
            categories=append(batch.categories, zeros),
            behaviors=append(batch.behaviors, zeros),
            timestamps=append(batch.timestamps, batch.query_ts),
            mask=append(batch.mask, torch.ones(B, dtype=torch.bool, device=dev)),
            query_ts=batch.query_ts,
            users=batch.users,
        )

    def encode(self, batch: SequenceBatch) -> Tensor:
        return self(self.with_query_token(batch))[:, -1]  # (B, D) state of the [MASK]

    # -- training: cloze ---------------------------------------------------------------------

    def training_sequence(self, batch: SequenceBatch) -> SequenceBatch:
        """The window shifted by one to end with its next event (rows that have one)."""
        if batch.targets is None:
            return batch
        last = batch.targets[:, -1]  # (B,)
        shift = last > 0  # (B,)

        def shifted(x: Tensor, new: Tensor) -> Tensor:
            return torch.where(shift[:, None], torch.cat([x[:, 1:], new[:, None]], dim=1), x)  # (B, T)

        zeros = torch.zeros_like(last)
        new_cat = self.item_category[last] if self.item_category is not None else zeros
        new_beh = batch.target_behaviors[:, -1] if batch.target_behaviors is not None else zeros
        return SequenceBatch(
            items=shifted(batch.items, last),
            categories=shifted(batch.categories, new_cat),
            behaviors=shifted(batch.behaviors, new_beh),
            timestamps=shifted(batch.timestamps, batch.query_ts),
            mask=shifted(batch.mask, shift),
            query_ts=batch.query_ts,
            users=batch.users,
        )

    def mask_positions(self, seq: SequenceBatch, generator: torch.Generator | None = None) -> Tensor:
        """(B, T) bool: positions to hide. Only real, known items (index > 0) are candidates.

        Each candidate is hidden with probability ``mask_prob``; the latest position also with
        probability ``last_mask_prob`` per row, and always in a row where nothing else was hidden
        (every sequence then teaches something). Random draws come from ``generator``.
        """
        B, T = seq.items.shape
        cand = seq.mask & (seq.items > 0)  # (B, T)
        gdev = generator.device if generator is not None else cand.device
        u = torch.rand((B, T), generator=generator, device=gdev).to(cand.device)  # (B, T)
        r = torch.rand((B,), generator=generator, device=gdev).to(cand.device)  # (B,)
        hidden = cand & (u < self.config.mask_prob)
        force_last = (r < self.config.last_mask_prob) | ~hidden.any(dim=1)  # (B,)
        hidden[:, -1] |= force_last & cand[:, -1]
        return hidden

    def apply_mask(self, seq: SequenceBatch, hidden: Tensor) -> SequenceBatch:
        """Replace hidden events by [MASK] (no category, no behaviour; time kept)."""
        zero = torch.zeros_like(seq.items)
        return replace(
            seq,
            items=torch.where(hidden, torch.full_like(seq.items, self.mask_id), seq.items),
            categories=torch.where(hidden, zero, seq.categories),
            behaviors=torch.where(hidden, zero, seq.behaviors),
            targets=None,
            target_behaviors=None,
        )

    def training_loss(self, batch: SequenceBatch, loss_fn: LossFn, generator: torch.Generator | None = None) -> Tensor:
        """Cloze loss: predict the original item at every hidden position with ``loss_fn``."""
        seq = self.training_sequence(batch)
        hidden = self.mask_positions(seq, generator)  # (B, T)
        states = self(self.apply_mask(seq, hidden))  # (B, T, D)
        if not hidden.any():  # nothing to predict (no known items): a zero that keeps the graph
            return states.sum() * 0.0
        return loss_fn(states[hidden], seq.items[hidden], self.output_embeddings(), self.output_bias())
