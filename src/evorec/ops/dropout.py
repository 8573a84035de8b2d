"""Dropout whose CPU mask costs a fraction of ``torch.nn.functional.dropout``'s.

On a CPU, ``F.dropout`` draws one Bernoulli sample per element through the scalar generator:
about 1.5 ms for a (256, 9, 64) tensor on this project's 2-core machine, a third of a SASRec
prefix-training step. ``dropout`` here draws 64 random bits per four elements instead (one
``randint`` over int64, read as four int16 lanes) and keeps an element when its lane is at or
above a threshold: about 6x cheaper, with the drop probability rounded to a multiple of 1/65536
(exact for 0.5, 0.25, ...) and the kept values scaled by the inverse of the keep probability
actually used, so the expectation is unchanged. Under a seed it is as deterministic as
``F.dropout`` (it draws from the same default generator, or from ``generator``).

The mask needs no AVX512: with ATen capped to AVX2 (``ATEN_CPU_CAPABILITY=avx2``, an AVX2-only
CPU emulated) it was still 4.3x cheaper than ``F.dropout`` (0.78 against 3.32 ms,
benchmarks/train_step.py, results/train_step_avx2_emulated.json), so there is no AVX2 fallback.

Elsewhere than a CPU (CUDA's kernel is already fast), under ``torch.compile`` (which fuses its own
mask) and in eval mode it is ``F.dropout``.
``reference_dropout`` is that plain path; tests check both keep ~(1-p) of the elements, scale
them the same way, and pass gradients through the same mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LANES = 4  # int16 lanes per int64 draw
_LEVELS = 1 << 16


def reference_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """The plain path: ``torch.nn.functional.dropout``."""
    return F.dropout(x, p=p, training=training)


def keep_scale(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """A tensor shaped like ``x`` (its dtype): 0 where dropped, 1 / keep-probability where kept."""
    n = x.numel()
    draws = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + _LANES - 1) // _LANES,), dtype=torch.int64, generator=generator)
    lanes = draws.view(torch.int16)[:n].view(x.shape)  # uniform over [-32768, 32767]
    dropped_levels = round(p * _LEVELS)  # P(drop) = dropped_levels / 65536
    threshold = dropped_levels - _LEVELS // 2
    keep = _LEVELS - dropped_levels
    return (lanes >= threshold).to(x.dtype).mul_(_LEVELS / keep)


def dropout(x: Tensor, p: float, training: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout of ``x`` with drop probability ``p`` (see the module doc)."""
    if not training or p == 0.0:
        return x
    # torch.compile fuses its own masks; off a CPU the kernel is already fast; some p the lanes cannot represent.
    if torch.compiler.is_compiling() or x.device.type != "cpu" or x.numel() == 0 or not 0 < round(p * _LEVELS) < _LEVELS:
        return reference_dropout(x, p, training)
    return x * keep_scale(x, p, generator)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the fast CPU mask (same arguments, no state: checkpoints are unchanged)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
