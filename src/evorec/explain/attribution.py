"""Which past events drove a recommendation: per-event attribution weights for one (user, item).

- ``integrated_gradients`` (Captum ``IntegratedGradients``) over the output of the model's
  event-embedding layer (``model.embed``: item + side-information vectors of every event), from
  an all-zero embedding baseline: each event's weight is the sum over the embedding dimensions of
  its attribution, and the weights add up to ``score(history) - score(baseline)`` (completeness;
  the residual is reported as ``delta``).
- ``occlusion`` for models without an embedding layer (count-based baselines): an event's weight
  is how much the item's score drops when that one event is removed from the history (exact
  leave-one-out).

:func:`group` sums weights by category and by age (last day, week, month, older).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from evorec.errors import InputError, require_extra
from evorec.types import SequenceBatch
from evorec.utils.timeutil import DAY, WEEK

AGE_BUCKETS = ((DAY, "last day"), (WEEK, "last week"), (30 * DAY, "last month"), (None, "older"))


@dataclass
class Attribution:
    weights: np.ndarray  # (n_events,) one weight per real (unpadded) event, oldest first
    positions: np.ndarray  # (n_events,) their positions in the batch's T axis
    method: str
    score: float  # the item's score for the full history
    baseline_score: float | None = None
    delta: float | None = None  # IG completeness residual
    extra: dict[str, Any] = field(default_factory=dict)


def _score(model, batch: SequenceBatch, item: int) -> torch.Tensor:
    return model.score(batch)[:, item]  # (B,)


def integrated_gradients(model, batch: SequenceBatch, item: int, steps: int = 32) -> Attribution:
    captum_attr = require_extra("captum.attr", "integrated gradients (explanations)", "explain")

    if batch.size != 1:
        raise ValueError("explain one user at a time (batch size 1)")
    embed = getattr(model, "embed", None)
    if embed is None:
        raise InputError(f"{type(model).__name__} has no event-embedding layer for integrated gradients; use occlusion")
    was = model.training
    model.eval()
    replacement: list[torch.Tensor] = []

    def hook(_module, _inputs, _output):  # untyped: the layer's output becomes the IG input
        return replacement[0]

    def forward(emb: torch.Tensor) -> torch.Tensor:  # (n, T, D) -> (n,) the item's score
        n = emb.shape[0]
        b = SequenceBatch(*(x.expand(n, *x.shape[1:]) for x in (
            batch.items, batch.categories, batch.behaviors, batch.timestamps, batch.mask, batch.query_ts, batch.users)))
        replacement[:] = [emb]
        return _score(model, b, item)

    try:
        with torch.no_grad():
            e0 = embed(batch)  # (1, T, D) the event embeddings of this history
            full = float(_score(model, batch, item)[0])
        handle = embed.register_forward_hook(hook)
        try:
            ig = captum_attr.IntegratedGradients(forward)
            attr, delta = ig.attribute(e0, baselines=torch.zeros_like(e0), n_steps=int(steps), return_convergence_delta=True)
            with torch.no_grad():
                base = float(forward(torch.zeros_like(e0))[0])
        finally:
            handle.remove()
    finally:
        model.train(was)
    per_pos = attr.sum(-1)[0].detach().numpy()  # (T,)
    pos = np.flatnonzero(batch.mask[0].numpy())
    return Attribution(per_pos[pos], pos, "integrated_gradients", full, base, float(delta.abs().max()), {"steps": int(steps)})


def occlusion(model, batch: SequenceBatch, item: int) -> Attribution:
    if batch.size != 1:
        raise ValueError("explain one user at a time (batch size 1)")
    pos = np.flatnonzero(batch.mask[0].numpy())
    with torch.no_grad():
        full = float(_score(model, batch, item)[0])
        weights = np.zeros(len(pos))
        for j, p in enumerate(pos):
            keep = torch.ones(batch.items.shape[1], dtype=torch.bool)
            keep[int(p)] = False
            # drop event p and left-pad again so the latest event stays at position T-1
            b = _drop(batch, keep)
            weights[j] = full - float(_score(model, b, item)[0])
    return Attribution(weights, pos, "occlusion", full)


def _drop(batch: SequenceBatch, keep: torch.Tensor) -> SequenceBatch:
    def shift(x: torch.Tensor) -> torch.Tensor:
        kept = x[:, keep]
        pad = torch.zeros((x.shape[0], 1), dtype=x.dtype)
        return torch.cat([pad, kept], dim=1)

    return SequenceBatch(
        shift(batch.items), shift(batch.categories), shift(batch.behaviors), shift(batch.timestamps), shift(batch.mask),
        batch.query_ts, batch.users,
    )


def explain(model, batch: SequenceBatch, item: int, *, method: str = "auto", steps: int = 32) -> Attribution:
    """Attribution of ``item``'s score to the events of ``batch`` (one user)."""
    if not 0 < item < int(model.n_items):
        raise InputError(f"item index {item} is not an item of the model")
    if method == "auto":
        method = "integrated_gradients" if getattr(model, "embed", None) is not None else "occlusion"
    if method == "integrated_gradients":
        return integrated_gradients(model, batch, item, steps)
    if method == "occlusion":
        return occlusion(model, batch, item)
    raise InputError(f"unknown attribution method {method!r}: integrated_gradients, occlusion or auto")


def group(att: Attribution, categories: list[str | None], ages_s: np.ndarray) -> dict[str, Any]:
    """Weights summed by category and by age bucket; shares of the total absolute weight."""
    w = np.asarray(att.weights, dtype=np.float64)
    total = float(np.abs(w).sum()) or 1.0
    by_cat: dict[str, float] = {}
    for c, x in zip(categories, w):
        key = c if c is not None else "(unknown)"
        by_cat[key] = by_cat.get(key, 0.0) + float(x)
    by_age: dict[str, float] = {}
    for a, x in zip(ages_s, w):
        for limit, label in AGE_BUCKETS:
            if limit is None or a < limit:
                by_age[label] = by_age.get(label, 0.0) + float(x)
                break
    order = sorted(by_cat.items(), key=lambda kv: -abs(kv[1]))
    return {
        "by_category": [{"category_id": k, "weight": v, "share": abs(v) / total} for k, v in order],
        "by_age": [{"age": label, "weight": by_age[label], "share": abs(by_age[label]) / total} for _, label in AGE_BUCKETS if label in by_age],
    }
