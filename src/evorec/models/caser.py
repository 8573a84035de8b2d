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

**Fast path and reference.** :func:`caser_reference` is the plain version: it applies the 2-D
convolutions to each of the B*T window images. ``forward`` computes the same states without
redoing the overlapping work: a horizontal filter of height h is, along time, a 1-D convolution
with kernel h over the D channels, so it is computed once per position of the (front-padded)
sequence; the window at t then max-pools the L-h+1 of those outputs that lie inside it. The
vertical filters are a linear map along the window axis of the unfolded (B, T, L, D) windows.
The two are tested against each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from evorec.models.base import DataSizes, ModelConfig, SequentialModel, SideInfoConfig
from evorec.models.layers.embeddings import EventEmbedding, init_side_tables
from evorec.models.registry import register_model
from evorec.ops.dropout import Dropout
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
        init_side_tables(self.embed)
        # Horizontal filter of height h = a 1-D convolution along time with kernel h over D channels.
        self.horizontal = nn.ModuleList(nn.Conv1d(D, c.n_h, kernel_size=h) for h in range(1, L + 1))
        self.vertical = nn.Linear(L, c.n_v)  # vertical filters: weights over the L rows of a window
        self.drop = Dropout(c.dropout)
        self.fc = nn.Linear(L * c.n_h + c.n_v * D, D)
        self.item_out = nn.Embedding(sizes.n_items, D, padding_idx=0)  # W' (not tied to the input table)
        self.item_bias = nn.Parameter(torch.zeros(sizes.n_items))  # b'
        nn.init.normal_(self.item_out.weight, std=D**-0.5)
        with torch.no_grad():
            self.item_out.weight[0].zero_()

    def padded_events(self, batch: SequenceBatch) -> Tensor:
        """(B, T+L-1, D): event embeddings with L-1 zero rows in front, so every t has a full window."""
        x = self.embed(batch)  # (B, T, D), zero at padding
        return F.pad(x, (0, 0, self.config.L - 1, 0))  # (B, T+L-1, D)

    def windows(self, batch: SequenceBatch) -> Tensor:
        """(B, T, L, D): the embeddings of events t-L+1..t at every position t, oldest row first."""
        return self.padded_events(batch).unfold(1, self.config.L, 1).transpose(2, 3)  # (B, T, D, L) -> (B, T, L, D)

    def head(self, horizontal: Tensor, vertical: Tensor) -> Tensor:
        """(B, T, D) states from horizontal (B, T, L*n_h) and vertical (B, T, n_v*D) features."""
        return torch.relu(self.fc(self.drop(torch.cat([horizontal, vertical], dim=-1))))

    def forward(self, batch: SequenceBatch) -> Tensor:
        B, T = batch.items.shape
        L = self.config.L
        xp = self.padded_events(batch)  # (B, T+L-1, D)
        seq = xp.transpose(1, 2)  # (B, D, T+L-1): channels first for conv1d
        hor = []
        for h, conv in enumerate(self.horizontal, start=1):
            # o[:, :, j] is the filter on rows j..j+h-1 of xp; the window at t is rows t..t+L-1,
            # so its sub-positions are j = t..t+L-h: a sliding max of width L-h+1.
            o = torch.relu(conv(seq))  # (B, n_h, T+L-h)
            hor.append(o.unfold(2, L - h + 1, 1).max(dim=3).values)  # (B, n_h, T, L-h+1) -> (B, n_h, T)
        horizontal = torch.cat(hor, dim=1).transpose(1, 2)  # (B, T, L*n_h)
        win = xp.unfold(1, L, 1)  # (B, T, D, L): the window at t, window axis last
        vertical = self.vertical(win).transpose(2, 3).reshape(B, T, -1)  # (B, T, D, n_v) -> (B, T, n_v*D)
        return self.head(horizontal, vertical)  # (B, T, D)

    def output_embeddings(self) -> Tensor:
        return self.item_out.weight  # (n_items, D)

    def output_bias(self) -> Tensor:
        return self.item_bias  # (n_items,)


def caser_reference(model: Caser, batch: SequenceBatch) -> Tensor:
    """(B, T, D) Caser states the plain way: 2-D convolutions on every L x D window image.

    The same function as ``Caser.forward`` (and the same weights), as in the paper; for tests.
    """
    B, T = batch.items.shape
    L, D = model.config.L, model.config.embed_dim
    img = model.windows(batch).reshape(B * T, 1, L, D)  # (B*T, 1, L, D): one 1-channel image per position
    hor = []
    for conv in model.horizontal:
        w = conv.weight.transpose(1, 2)[:, None]  # (n_h, D, h) -> (n_h, 1, h, D): an h x D filter
        o = torch.relu(F.conv2d(img, w, conv.bias)).squeeze(3)  # (B*T, n_h, L-h+1)
        hor.append(o.max(dim=2).values)  # (B*T, n_h): max-pool over the positions in the window
    wv = model.vertical.weight[:, None, :, None]  # (n_v, L) -> (n_v, 1, L, 1): an L x 1 filter
    ver = F.conv2d(img, wv, model.vertical.bias)  # (B*T, n_v, 1, D)
    horizontal = torch.cat(hor, dim=1).reshape(B, T, -1)  # (B, T, L*n_h)
    vertical = ver.reshape(B, T, -1)  # (B, T, n_v*D)
    return model.head(horizontal, vertical)  # (B, T, D)
