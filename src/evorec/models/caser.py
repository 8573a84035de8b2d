"""Caser (Tang & Wang, 2018): convolutional sequence embedding over the last L events.

The L most recent event embeddings form an L x D "image":

- horizontal filters of every height h in 1..L (``n_h`` of each, width D) slide down the image;
  each output is ReLU-ed and max-pooled over its L-h+1 positions (union-level patterns: "bought
  these h things in a row"); -> L * n_h features
- vertical filters (``n_v``, height L, width 1) are weighted sums of the L rows per dimension
  (point-level patterns); -> n_v * D features
- concat -> dropout -> FC -> ReLU -> z (D), scored against a separate output item table plus a
  per-item bias (the paper's W' and b').

**No user embedding.** The paper concatenates a learned user vector P_u to z. evorec scores users
from their history alone (new and unseen users at evaluation and serving time have no row), so
the user term is left out: the state is a function of the events only.

**One state per position, in one pass.** Caser as published makes one prediction per window. Here
``forward`` unfolds the window of the last L events *at every position* of the left-padded
sequence, (B, T, L, D), and runs the convolutions on all B*T windows at once. The window at t holds
events t-L+1..t (zeros where the history is shorter), so the model stays causal and training uses
every position of every sequence in a single pass, like the other sequence models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from evorec.models.base import DataSizes, ModelConfig, SequentialModel, SideInfoConfig
from evorec.models.layers.embeddings import EventEmbedding
from evorec.models.registry import register_model
from evorec.types import SequenceBatch


class CaserConfig(ModelConfig):
    embed_dim: int = Field(50, ge=1, description="D (the paper's d)")
    L: int = Field(5, ge=1, description="window: how many of the latest events form the image")
    n_h: int = Field(16, ge=1, description="horizontal filters per height 1..L")
    n_v: int = Field(4, ge=1, description="vertical filters")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="on the concatenated convolution features")
    side: SideInfoConfig = Field(default_factory=SideInfoConfig)


@register_model("caser", CaserConfig)
class Caser(SequentialModel):
    causal = True

    def __init__(self, config: CaserConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        c = config
        D, L = c.embed_dim, c.L
        self.embed = EventEmbedding(D, c.side, sizes)
        self.horizontal = nn.ModuleList(nn.Conv2d(1, c.n_h, kernel_size=(h, D)) for h in range(1, L + 1))
        self.vertical = nn.Conv2d(1, c.n_v, kernel_size=(L, 1))
        self.drop = nn.Dropout(c.dropout)
        self.fc = nn.Linear(L * c.n_h + c.n_v * D, D)
        self.item_out = nn.Embedding(sizes.n_items, D, padding_idx=0)  # W' (not tied to the input table)
        self.item_bias = nn.Parameter(torch.zeros(sizes.n_items))  # b'
        nn.init.normal_(self.item_out.weight, std=D**-0.5)
        with torch.no_grad():
            self.item_out.weight[0].zero_()

    def windows(self, batch: SequenceBatch) -> Tensor:
        """(B, T, L, D): the embeddings of events t-L+1..t at every position t (zeros before the start)."""
        L = self.config.L
        x = self.embed(batch)  # (B, T, D), zero at padding
        x = F.pad(x, (0, 0, L - 1, 0))  # (B, T+L-1, D): L-1 zero rows in front so every t has a full window
        return x.unfold(1, L, 1).transpose(2, 3)  # (B, T, D, L) -> (B, T, L, D), oldest row first

    def forward(self, batch: SequenceBatch) -> Tensor:
        B, T = batch.items.shape
        L, D = self.config.L, self.config.embed_dim
        img = self.windows(batch).reshape(B * T, 1, L, D)  # (B*T, 1, L, D): one 1-channel image per position
        feats = []
        for conv in self.horizontal:
            o = torch.relu(conv(img)).squeeze(3)  # (B*T, n_h, L-h+1)
            feats.append(o.max(dim=2).values)  # (B*T, n_h): max-pool over the positions in the window
        feats.append(self.vertical(img).reshape(B * T, -1))  # (B*T, n_v*D)
        z = torch.relu(self.fc(self.drop(torch.cat(feats, dim=1))))  # (B*T, D)
        return z.reshape(B, T, D)  # (B, T, D)

    def output_embeddings(self) -> Tensor:
        return self.item_out.weight  # (n_items, D)

    def output_bias(self) -> Tensor:
        return self.item_bias  # (n_items,)
