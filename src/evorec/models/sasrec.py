"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A causal Transformer over the event sequence; the state after event t is scored against the
(tied) item table to predict event t+1::

    x_t  = item(i_t) [+ category + behaviour + time gap] + position(t)     (right-aligned positions)
    h    = Blocks(dropout(x))                                                (causal self-attention)
    s(j) = <h_t [+ gap(t -> next)], item(j)>

With ``side.text`` every item's input and output vector is ``item(j) + W text(j)``, a learned
projection of its frozen title embedding (see ``EventEmbedding``): cold items borrow from warm
items with similar text.

With ``side.time = "gap_buckets"`` each event carries its gap since the previous event, and the
scored state also gets an embedding of the gap from the latest event to the time the next item is
asked for (``query_ts``): a user who comes back after three months is not scored like one who left
a minute ago. In training the same embedding carries the gap from event t to event t+1, so training
and scoring see the same thing. ``forward`` itself never looks at that gap, so it stays causal.

Positions are right-aligned (the latest event is always position ``max_len - 1``); histories
longer than ``max_len`` share the oldest position row rather than failing.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from evorec.models.base import AttentionConfig, DataSizes, LossFn, SequentialModel, SideInfoConfig
from evorec.models.layers.embeddings import EventEmbedding, QueryGapEmbedding, init_input_tables, positioned_input, query_state
from evorec.models.registry import register_model
from evorec.ops.attention import TransformerBlock
from evorec.ops.dropout import Dropout
from evorec.types import SequenceBatch


class SASRecConfig(AttentionConfig):
    hidden: int = Field(64, ge=2)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)  # on embeddings and on each residual branch / FFN
    attn_dropout: float = Field(0.2, ge=0.0, lt=1.0)  # on attention weights
    max_len: int = Field(50, ge=1)  # positions learned; the trainer's window should match
    norm: Literal["pre", "post"] = "pre"
    ffn_mult: int = Field(1, ge=1)  # FFN width = ffn_mult * hidden (the paper: 1)
    activation: Literal["relu", "gelu"] = "relu"
    ffn_dropout: float | None = Field(None, ge=0.0, lt=1.0)  # between the FFN's two layers; None: as dropout (RecBole: 0)
    init_std: float | None = Field(
        None, gt=0.0, description="N(0, init_std) for item, position and linear weights, zero biases (RecBole: 0.02); None: PyTorch's defaults, items D^-0.5"
    )
    fused_attention: bool = True  # scaled_dot_product_attention; False = the plain reference
    side: SideInfoConfig = Field(default_factory=SideInfoConfig)

@register_model("sasrec", SASRecConfig)
class SASRec(SequentialModel):
    causal = True

    def __init__(self, config: SASRecConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        c = config
        D = c.hidden
        self.embed = EventEmbedding(D, c.side, sizes)  # item + side info; positions are ours
        self.position = nn.Embedding(c.max_len, D)
        self.emb_drop = Dropout(c.dropout)
        self.emb_norm = nn.LayerNorm(D) if c.norm == "post" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(D, c.heads, c.ffn_mult * D, c.dropout, c.attn_dropout, True, c.fused_attention, c.norm, c.activation, c.ffn_dropout)
            for _ in range(c.layers)
        )
        self.final_norm = nn.LayerNorm(D) if c.norm == "pre" else None
        # Gap from the latest event to the query time, added to the scored state.
        self.query_time = QueryGapEmbedding(c.side.time_buckets, D) if c.side.time == "gap_buckets" else None  # starts at zero
        self._init_weights()

    def _init_weights(self) -> None:
        # EventEmbedding initialises the item table (std D^-0.5); side tables get a small std so
        # they start as refinements of the item signal rather than drowning it.
        init_input_tables(self.embed, self.position)  # category / behaviour / time and position tables: std 0.02, padding rows zero
        if self.config.init_std is not None:
            std = self.config.init_std
            nn.init.normal_(self.embed.item.weight, std=std)
            with torch.no_grad():
                self.embed.item.weight[0].zero_()
            nn.init.normal_(self.position.weight, std=std)
            for m in self.blocks.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=std)
                    nn.init.zeros_(m.bias)

    def forward(self, batch: SequenceBatch, last_only: bool = False) -> Tensor:
        """(B, T, D) states after every event; ``last_only``: (B, 1, D), the latest one only (the
        last block then queries one position: cheaper for scoring and for prefix training)."""
        mask = batch.mask  # (B, T)
        x = positioned_input(batch, self.embed, self.position, self.emb_drop, self.emb_norm)  # (B, T, D), zero at padding
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last_only and i == len(self.blocks) - 1)  # (B, T, D); (B, 1, D) after a last_only block
        if last_only:
            mask = mask[:, -1:]
        if self.final_norm is not None:
            x = self.final_norm(x) * mask[..., None]
        return x

    def output_embeddings(self) -> Tensor:
        # (n_items, D), tied with the input table; with side.text it includes the projected
        # item text, so an item never seen in training but with a title still scores sensibly.
        return self.embed.item_vectors()

    def encode(self, batch: SequenceBatch) -> Tensor:
        return self.query_state(batch, self(batch, last_only=True))  # (B, D)

    def query_state(self, batch: SequenceBatch, hidden: Tensor) -> Tensor:
        return query_state(batch, hidden, self.query_time)  # (B, D)

    def training_loss(self, batch: SequenceBatch, loss_fn: LossFn, generator: torch.Generator | None = None) -> Tensor:
        # Prefix samples (train.windows=prefixes) have their one target in the last column: only
        # the latest state is needed, so the last block queries one position.
        last_only = batch.length > 1 and not bool((batch.targets[:, :-1] > 0).any())
        hidden = self(batch, last_only=last_only)  # (B, T, D) or (B, 1, D)
        targets = batch.targets[:, -1:] if last_only else batch.targets  # (B, T) or (B, 1)
        if self.query_time is not None:
            # The state at t predicts event t+1: add the gap to it, as query_state does at scoring.
            gaps = self.query_time.at_next(batch)  # (B, T, D)
            hidden = hidden + (gaps[:, -1:] if last_only else gaps)  # (B, T, D) or (B, 1, D)
        sel = targets > 0  # (B, T) or (B, 1)
        return loss_fn(hidden[sel], targets[sel], self.output_embeddings(), self.output_bias())
