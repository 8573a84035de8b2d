"""GRU4Rec (Hidasi et al., 2016), trained on whole sequences instead of session-parallel mini-batches.

    event embeddings (item [+ category, behaviour, time gap]) -> dropout
      -> multi-layer GRU (or LSTM: ``cell: lstm``, the classic recurrent recipe) over the history
      -> linear to D -> scored against the (tied) item table

Histories are LEFT-padded (position T-1 is the latest event). A GRU run straight over such a
row would update its state on the padding too (zero input still moves the state through the
gate biases), so the state at the first real event would depend on how much padding precedes
it. The model must behave as if each sequence started at its first event:

    h_t = mask_t * GRU(x_t, h_{t-1}) + (1 - mask_t) * h_{t-1},   h_{-1} = 0

:func:`masked_gru_reference` is that recurrence written out step by step (plain reference).
:func:`left_padded_gru`, the path the model uses, gets the same states from the fused
``nn.GRU`` kernel: it shifts every row so that its events start at position 0, packs the rows
by length (so the kernel stops at each row's end), and shifts the outputs back. Padded positions
come out as zeros, which is what the recurrence gives for left padding. Both assume the
documented contiguous left padding (``mask`` is False then True along each row).

DIEN's interest extractor is the same GRU and imports :func:`left_padded_gru` from here.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from evorec.models.base import DataSizes, ModelConfig, SequentialModel, SideInfoConfig
from evorec.models.layers.embeddings import EventEmbedding, init_side_tables
from evorec.models.registry import register_model
from evorec.ops.dropout import Dropout
from evorec.types import SequenceBatch


def left_padded_gru(gru: nn.GRU, x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, H) outputs of a ``batch_first`` GRU over left-padded inputs; padded positions are 0.

    x: (B, T, D) inputs, mask: (B, T) True at events (contiguous at the right of each row).
    Each row's state starts at zero at its first event, whatever the amount of padding.
    """
    B, T, D = x.shape
    lengths = mask.sum(1)  # (B,)
    pad = T - lengths  # (B,) padded positions at the left of each row
    ar = torch.arange(T, device=x.device)
    # Left -> right padding: right[b, j] = x[b, j + pad_b] (j < length_b; the rest is never read).
    src = (ar[None, :] + pad[:, None]).clamp(max=T - 1)  # (B, T)
    right = x.gather(1, src[..., None].expand(B, T, D))  # (B, T, D)
    # pack_padded_sequence refuses empty rows: run them on one (zero) step and zero the output below.
    packed = pack_padded_sequence(right, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = gru(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, H)
    H = out.shape[-1]
    # Right -> left padding: y[b, t] = out[b, t - pad_b] for t >= pad_b.
    back = (ar[None, :] - pad[:, None]).clamp(min=0)  # (B, T)
    y = out.gather(1, back[..., None].expand(B, T, H))  # (B, T, H)
    return y * mask[..., None]


def _masked_reference(rnn: nn.GRU | nn.LSTM, x: Tensor, mask: Tensor, step) -> Tensor:  # untyped: step: a cell
    """Layer after layer, step by step: ``state_t = m_t * cell(x_t, state_{t-1}) + (1 - m_t) *
    state_{t-1}`` with the weights of ``rnn``; ``step(gi_t, gh_t, state) -> state`` is the cell on
    the input and hidden projections, ``state[0]`` the output h."""
    B, T, _ = x.shape
    m = mask[..., None].to(x.dtype)  # (B, T, 1)
    layer_in = x
    for layer in range(rnn.num_layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
        gi = layer_in @ w_ih.T + b_ih  # (B, T, G*H): input projections of all steps at once
        state = tuple(x.new_zeros(B, rnn.hidden_size) for _ in range(2 if isinstance(rnn, nn.LSTM) else 1))
        outs = []
        for t in range(T):
            new = step(gi[:, t], state[0] @ w_hh.T + b_hh, state)  # hidden projection: (B, G*H)
            state = tuple(m[:, t] * a + (1 - m[:, t]) * b for a, b in zip(new, state))
            outs.append(state[0])
        layer_in = torch.stack(outs, dim=1)  # (B, T, H)
    return layer_in


def _gru_step(gi: Tensor, gh: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor]:
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)  # PyTorch's convention: z is the share of the old state kept
    n = torch.tanh(i_n + r * h_n)
    return ((1 - z) * n + z * state[0],)


def _lstm_step(gi: Tensor, gh: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    i, f, g, o = (gi + gh).chunk(4, dim=-1)  # PyTorch's gate order
    c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def masked_gru_reference(gru: nn.GRU, x: Tensor, mask: Tensor) -> Tensor:
    """Plain step-by-step reference of :func:`left_padded_gru` (eval mode: no inter-layer dropout).

    Implements ``h_t = m_t * GRU(x_t, h_{t-1}) + (1 - m_t) * h_{t-1}`` layer after layer with the
    weights of ``gru``; it accepts any mask, but is slow (a Python loop over T). For tests.
    """
    return _masked_reference(gru, x, mask, _gru_step)


def masked_lstm_reference(lstm: nn.LSTM, x: Tensor, mask: Tensor) -> Tensor:
    """Plain step-by-step reference of :func:`left_padded_gru` run with an ``nn.LSTM`` (eval
    mode): ``(h_t, c_t) = m_t * LSTM(x_t, (h_{t-1}, c_{t-1})) + (1 - m_t) * (h_{t-1}, c_{t-1})``."""
    return _masked_reference(lstm, x, mask, _lstm_step)


class GRU4RecConfig(ModelConfig):
    cell: Literal["gru", "lstm"] = Field("gru", description="the recurrent cell: gru (GRU4Rec) or lstm")
    embed_dim: int = Field(64, ge=1, description="D: item embedding and output size")
    hidden_size: int = Field(100, ge=1, description="GRU state size (projected to D for scoring)")
    num_layers: int = Field(1, ge=1)
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="on the event embeddings and between GRU layers")
    side: SideInfoConfig = Field(default_factory=SideInfoConfig)


@register_model("gru4rec", GRU4RecConfig)
class GRU4Rec(SequentialModel):
    causal = True

    def __init__(self, config: GRU4RecConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        c = config
        self.embed = EventEmbedding(c.embed_dim, c.side, sizes)
        init_side_tables(self.embed)
        self.drop = Dropout(c.dropout)
        rnn = nn.LSTM if c.cell == "lstm" else nn.GRU
        self.gru = rnn(
            c.embed_dim,
            c.hidden_size,
            num_layers=c.num_layers,
            batch_first=True,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
        )
        self.out = nn.Linear(c.hidden_size, c.embed_dim)

    def forward(self, batch: SequenceBatch) -> Tensor:
        x = self.drop(self.embed(batch))  # (B, T, D)
        h = left_padded_gru(self.gru, x, batch.mask)  # (B, T, H)
        return self.out(h)  # (B, T, D)

    def output_embeddings(self) -> Tensor:
        return self.embed.item_vectors()  # (n_items, D): tied with the input item table (+ text, if on)
