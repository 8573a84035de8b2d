"""Most-popular: the same ranking for every user, from (optionally decayed, weighted) counts.

``fit`` counts every training event of the ``TrainView``::

    pop[i] = sum over training events e with item i of  w_behaviour(e) * 0.5 ** (age(e) / half_life)

- ``age`` on real-time (unix) datasets is ``(t_max - ts(e)) / 86400`` days, with ``t_max`` the
  latest training timestamp, so an event one half-life older than the newest counts half.
- On ordinal datasets (``ts`` is only a position) there is no shared clock; ``age`` is then the
  number of the user's own training events after ``e`` (0 for each user's latest event), and
  ``half_life_days`` is read as a half-life in events.
- ``w_behaviour`` comes from ``behavior_weights`` (e.g. ``{"buy": 5, "cart": 2}``); behaviours
  not named there weigh ``default_weight``.

The helpers :func:`training_events` and :func:`item_counts` are shared by the other count-based
baselines (ItemKNN, Markov).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor

from evorec.errors import InputError
from evorec.models.base import NEG_INF, DataSizes, ModelConfig, Recommender
from evorec.models.registry import register_model
from evorec.types import BEHAVIOR_INDEX, BEHAVIORS, SequenceBatch, TimeKind

SECONDS_PER_DAY = 86400.0


@dataclass
class TrainingEvents:
    """Every training event of a ``TrainView``, concatenated user after user (time order kept)."""

    item: np.ndarray  # (E,) int64 item index (0 = unknown)
    behavior: np.ndarray  # (E,) int64 behaviour index
    ts: np.ndarray  # (E,) int64 unix seconds or ordinal positions
    user: np.ndarray  # (E,) int64 user row owning the event
    from_end: np.ndarray  # (E,) int64 events after this one in the same user's training part


def training_events(view) -> TrainingEvents:  # untyped: evorec.data.batches.TrainView
    """Gather the training part of every user into flat arrays (one vectorised gather)."""
    seq = view.seq
    start = np.asarray(seq.offsets[:-1], dtype=np.int64)
    lengths = np.maximum(np.asarray(view.end, dtype=np.int64) - start, 0)
    total = int(lengths.sum())
    if total == 0 or seq.n_events == 0:
        z = np.zeros(0, dtype=np.int64)
        return TrainingEvents(z, z, z, z, z)
    user = np.repeat(np.arange(len(start), dtype=np.int64), lengths)  # (E,)
    first = np.cumsum(lengths) - lengths  # (n_users,) index of each user's first event in the flat arrays
    within = np.arange(total, dtype=np.int64) - first[user]  # (E,) position inside the user's part
    pos = start[user] + within  # (E,) global event positions
    return TrainingEvents(
        item=np.asarray(seq.item)[pos].astype(np.int64),
        behavior=np.asarray(seq.behavior)[pos].astype(np.int64),
        ts=np.asarray(seq.ts)[pos].astype(np.int64),
        user=user,
        from_end=lengths[user] - 1 - within,
    )


def item_counts(items: np.ndarray, n_items: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(n_items,) float64 (weighted) occurrences of each item; index 0 (unknown) is always 0."""
    counts = np.bincount(items, weights=weights, minlength=n_items).astype(np.float64)[:n_items]
    counts[0] = 0.0
    return counts


class PopConfig(ModelConfig):
    half_life_days: float | None = Field(
        None, gt=0, description="exponential time decay of counts (ordinal datasets: in events); None = plain counts"
    )
    behavior_weights: dict[str, float] = Field(
        default_factory=dict, description="weight of an event per behaviour name, e.g. {buy: 5, cart: 2}"
    )
    default_weight: float = Field(1.0, ge=0, description="weight of behaviours not in behavior_weights")

    @field_validator("behavior_weights")
    @classmethod
    def _known_behaviors(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(BEHAVIORS))
        if unknown:
            raise InputError(f"unknown behaviour(s) {unknown}; known: {list(BEHAVIORS)}")
        negative = sorted(k for k, w in v.items() if w < 0)
        if negative:
            raise InputError(f"behaviour weights must be >= 0: {negative}")
        return v


def event_weights(ev: TrainingEvents, cfg: PopConfig, time_kind: TimeKind) -> np.ndarray:
    """(E,) float64 weight of every training event: behaviour weight x time decay."""
    table = np.full(len(BEHAVIORS) + 1, cfg.default_weight, dtype=np.float64)  # index 0 = padding/unknown
    for name, w in cfg.behavior_weights.items():
        table[BEHAVIOR_INDEX[name]] = w
    w = table[np.clip(ev.behavior, 0, len(table) - 1)]
    if cfg.half_life_days is not None and len(ev.item):
        if time_kind is TimeKind.ORDINAL:
            age = ev.from_end.astype(np.float64)  # events, counted within each user's own history
        else:
            age = (ev.ts.max() - ev.ts).astype(np.float64) / SECONDS_PER_DAY
        w = w * np.exp2(-age / cfg.half_life_days)
    return w


@register_model("pop", PopConfig)
class Pop(Recommender):
    """Most popular items in the training part; every user gets the same scores."""

    trainable = False
    causal = True  # ignores the history altogether

    def __init__(self, config: PopConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        self.register_buffer("popularity", torch.zeros(sizes.n_items, dtype=torch.float32))  # (n_items,)
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, train) -> None:  # untyped: evorec.data.batches.TrainView
        ev = training_events(train)
        w = event_weights(ev, self.config, train.seq.time_kind)
        counts = item_counts(ev.item, self.n_items, w)
        self.popularity.copy_(torch.from_numpy(counts.astype(np.float32)))
        self.fitted.fill_(True)

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError(f"{type(self).__name__}: call fit() (or load a checkpoint) before scoring")

    def score(self, batch: SequenceBatch) -> Tensor:
        self._check_fitted()
        scores = self.popularity.to(batch.items.device).expand(batch.size, -1).clone()  # (B, n_items)
        scores[:, 0] = NEG_INF
        return scores

    def encode(self, batch: SequenceBatch) -> Tensor:
        """(B, 1) constant: popularity has no per-user state."""
        return torch.ones(batch.size, 1, device=batch.items.device)
