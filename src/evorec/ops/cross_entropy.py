"""Full-softmax cross-entropy over a catalogue in fewer passes than ``F.cross_entropy``.

The full-softmax loss of a (N, n_items) logit block is a large share of a training step on a
CPU (Beauty: 256 x 12,101 logits per step, ~40% of a SASRec step through ``F.cross_entropy``
under bfloat16 autocast: a cast to float32, ``log_softmax``, a zero-filled gradient for the
negative log-likelihood, ``log_softmax``'s backward and a cast back). ``softmax_cross_entropy``
does the same sum in one autograd node: the forward keeps the unnormalised ``exp(logits - max)``
(in the logits' dtype: bfloat16 under autocast, with float32 row sums), and the backward turns it
into ``softmax - onehot`` in place (one pass).

Column 0 is the padding item: it is never a target and never a competitor (its probability is
zero), as if its logit were -inf. ``reference_softmax_cross_entropy`` is that plain formula
through ``F.cross_entropy``; tests check loss and gradients agree in float32 and bfloat16.

With ATen capped to AVX2 (``ATEN_CPU_CAPABILITY=avx2``, an AVX2-only CPU emulated) the fused node
was still faster than the reference: 1.36x on float32 logits (what ``train.precision: auto``
trains there), 1.22x on bfloat16 (benchmarks/train_step.py, results/train_step_avx2_emulated.json),
so there is no AVX2 fallback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reference_softmax_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of (N, V) logits against (N,) targets, column 0 excluded."""
    logits = logits.clone()
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits.float(), targets)


def _row_sums(e: Tensor, rows: int = 64) -> Tensor:
    """(N, 1) float32 row sums of (N, V) ``e``, a block of rows at a time: summing with
    ``dtype=float32`` casts its input first, and a whole-block cast is a fresh 12 MB buffer per
    step on Beauty (1.5 ms in a training step, page faults); blocks of 64 rows reuse the heap."""
    if e.dtype == torch.float32:
        return e.sum(dim=1, keepdim=True)
    return torch.cat([blk.sum(dim=1, keepdim=True, dtype=torch.float32) for blk in e.split(rows)])


class _SoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:  # logits (N, V), targets (N,)
        N = logits.shape[0]
        low = logits.dtype in (torch.bfloat16, torch.float16)
        # Half-precision logits (autocast) stay in their dtype: exp in bf16 is ~2x cheaper on a
        # CPU, the row sums accumulate in float32, and the gradient is bf16 anyway.
        x = logits if low else logits.float()
        m = x.amax(dim=1, keepdim=True).clamp(min=torch.finfo(x.dtype).min)  # (N, 1), exact in x's dtype
        target_logit = x.gather(1, targets[:, None]).float()  # (N, 1)
        e = torch.sub(x, m).exp_()  # (N, V) exp(logit - max), our own buffer
        e[:, 0] = 0.0  # padding: no probability
        s = _row_sums(e)  # (N, 1) float32
        loss = (m.float() + s.log() - target_logit).sum() / N
        ctx.save_for_backward(e, s, targets)
        ctx.logits_dtype = logits.dtype
        ctx.done = False
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        if ctx.done:  # the gradient was written into the saved buffer
            raise RuntimeError("softmax_cross_entropy cannot be back-propagated twice; use reference_softmax_cross_entropy")
        ctx.done = True
        e, s, targets = ctx.saved_tensors
        N = e.shape[0]
        g = e.mul_((grad / N / s).to(e.dtype))  # (N, V) softmax * grad / N
        # minus grad / N at each row's target; indexing touches N elements, where scatter_add_ on
        # a bfloat16 CPU tensor copies the whole block to float32 and back (2 x 0.6 ms on Beauty)
        rows = torch.arange(N, device=g.device)
        g[rows, targets] -= (grad / N).to(g.dtype)
        return g.to(ctx.logits_dtype), None


def softmax_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of (N, V) logits against (N,) item targets, column 0 (padding) excluded."""
    if logits.shape[0] == 0:
        return reference_softmax_cross_entropy(logits, targets)
    return _SoftmaxCrossEntropy.apply(logits, targets)
