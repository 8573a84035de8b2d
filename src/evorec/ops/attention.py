"""Multi-head self-attention over left-padded histories: a plain reference and a fused fast path.

Both paths compute ``softmax(Q K^T / sqrt(d) + mask) V`` with the same mask:

- key padding: a query never looks at padding;
- causal (optional): query i looks at keys j <= i only;
- every query may always look at itself. Valid queries see themselves anyway (their own key is
  valid and j = i is allowed under the causal rule), so this changes nothing for them; for padded
  queries (left padding, empty histories) it keeps the softmax row non-empty, so no NaN appears in
  the forward pass or in the gradients. Their outputs are then zeroed.

``reference_attention`` is the explicit formula; ``fused_attention`` calls
``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels where the
device has them). ``MultiHeadSelfAttention(fused=...)`` picks one; tests check they agree.
``TransformerBlock`` is the pre-/post-LayerNorm block that SASRec and BERT4Rec stack.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evorec.ops.dropout import Dropout, dropout


def attention_mask(key_mask: Tensor, causal: bool) -> Tensor:
    """(B, 1, T, T) bool, True where query i may attend to key j.

    ``key_mask`` is (B, T) bool, True at real events. The diagonal is always allowed (see module doc).
    """
    T = key_mask.shape[1]
    allowed = key_mask[:, None, None, :]  # (B, 1, 1, T)
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=key_mask.device).tril()  # (B, 1, T, T)
    eye = torch.eye(T, dtype=torch.bool, device=key_mask.device)
    return allowed | eye  # (B, 1, T, T)


def reference_attention(
    q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, dropout_p: float = 0.0, training: bool = False
) -> Tensor:
    """Plain attention. q, k, v: (B, H, T, d); allowed: (B, 1, T, T) bool -> (B, H, T, d)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # every row has its diagonal, so no all -inf row
    weights = dropout(weights, dropout_p, training)  # F.dropout, with a faster mask on a CPU
    return weights @ v  # (B, H, T, d)


def fused_attention(
    q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, dropout_p: float = 0.0, training: bool = False
) -> Tensor:
    """Same as ``reference_attention`` through ``scaled_dot_product_attention``."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p if training else 0.0)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention with key padding and an optional causal mask; ``fused`` picks the path.

    ``fused`` is a plain attribute (not state), so one checkpoint loads into either path.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, causal: bool = True, fused: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.causal = causal
        self.fused = fused
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_mask: Tensor, last_only: bool = False) -> Tensor:
        """x: (B, T, D), key_mask: (B, T) bool -> (B, T, D), zero at padded positions.

        ``last_only``: only the latest position queries (keys and values are still every position):
        (B, 1, D), equal to the last row of the full output at a fraction of the cost."""
        B, T, D = x.shape
        H = self.heads
        qkv = self.qkv(x).view(B, T, 3, H, D // H)  # (B, T, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, d)
        allowed = attention_mask(key_mask, self.causal)  # (B, 1, T, T)
        if last_only:
            q, allowed = q[:, :, -1:], allowed[:, :, -1:]  # (B, H, 1, d), (B, 1, 1, T)
            key_mask = key_mask[:, -1:]
        attend = fused_attention if self.fused else reference_attention
        if self.training and self.dropout > 0 and x.device.type == "cpu":
            # SDPA's CPU dropout draws one Bernoulli per weight (slow); the plain formula with the
            # fast mask of evorec.ops.dropout is ~2x faster per training step at Beauty's sizes.
            attend = reference_attention
        y = attend(q, k, v, allowed, self.dropout, self.training)  # (B, H, Tq, d)
        y = y.transpose(1, 2).reshape(B, q.shape[2], D)  # (B, Tq, D)
        return self.out(y) * key_mask[..., None]


class TransformerBlock(nn.Module):
    """Attention + position-wise feed-forward, each with residual and dropout.

    ``norm="pre"``: ``x + f(LN(x))`` (stable for deeper stacks; needs a final LayerNorm after the
    stack). ``norm="post"``: ``LN(x + f(x))`` (the original Transformer / BERT layout).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        causal: bool = True,
        fused: bool = True,
        norm: Literal["pre", "post"] = "pre",
        activation: Literal["relu", "gelu"] = "relu",
        ffn_dropout: float | None = None,
    ):
        super().__init__()
        self.norm = norm
        self.attn = MultiHeadSelfAttention(dim, heads, attn_dropout, causal, fused)
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim),
            nn.ReLU() if activation == "relu" else nn.GELU(),
            Dropout(dropout if ffn_dropout is None else ffn_dropout),  # inside the FFN (None: as ``dropout``)
            nn.Linear(ffn_dim, dim),
        )
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor, last_only: bool = False) -> Tensor:
        """x: (B, T, D), key_mask: (B, T) bool -> (B, T, D), zero at padded positions.

        ``last_only``: (B, 1, D), the latest position only (the last block of a stack whose
        caller reads only the latest state: scoring, or training on prefixes)."""
        if self.norm == "pre":
            h = self.attn(self.ln1(x), key_mask, last_only)
            x = (x[:, -1:] if last_only else x) + self.drop(h)
            x = x + self.drop(self.ffn(self.ln2(x)))
        else:
            h = self.attn(x, key_mask, last_only)
            x = self.ln1((x[:, -1:] if last_only else x) + self.drop(h))
            x = self.ln2(x + self.drop(self.ffn(x)))
        # Keep padding exactly zero: LayerNorm's bias would otherwise write into padded rows.
        return x * (key_mask[:, -1:] if last_only else key_mask)[..., None]
