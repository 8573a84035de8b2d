"""Layer 0: the canonical schema every part of evorec agrees on.

An *event* is one user action on one item at one time. Every reader maps its source onto
these columns; everything downstream (cleaning, sequences, models, serving) reads only them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:  # torch is only needed by code that builds or consumes batches
    from torch import Tensor


class Behavior(str, Enum):
    """The fixed behaviour vocabulary. Sources map their own codes onto it at ingest."""

    VIEW = "view"
    CLICK = "click"
    CART = "cart"
    FAV = "fav"
    BUY = "buy"
    RATE = "rate"
    REVIEW = "review"


BEHAVIORS: tuple[str, ...] = tuple(b.value for b in Behavior)
"""Behaviour names in their fixed index order (index 0 is padding, so ``view`` is 1)."""

BEHAVIOR_INDEX: dict[str, int] = {name: i + 1 for i, name in enumerate(BEHAVIORS)}


class TimeKind(str, Enum):
    """How a dataset's ``ts`` column is to be read."""

    UNIX = "unix"  # real wall-clock time (UTC, seconds)
    ORDINAL = "ordinal"  # order-only source: ts is 1970-01-01 + position seconds, not a date


# Canonical event columns as produced by a reader, before the store adds its own bookkeeping.
# ``ts`` is int64 unix seconds here; the store keeps it as a TIMESTAMP.
EVENT_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("ts", pa.int64()),
        pa.field("behavior", pa.string()),
        pa.field("category_id", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("source_row", pa.int64()),
        # The source's basket (order, transaction) id where it has one: the lines of one
        # checkout share it. NULL elsewhere; downstream a basket is then a user's day.
        pa.field("basket_id", pa.string()),
    ]
)

ITEM_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string()),
        pa.field("category_id", pa.string()),
        pa.field("category_path", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("title", pa.string()),
        pa.field("price", pa.float64()),
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        pa.field("source_row", pa.int64()),
        pa.field("raw", pa.string()),
        pa.field("reason", pa.string()),
    ]
)

# Timestamps outside this range are quarantined as out of range (unless the dataset is ordinal).
TS_MIN = 0  # 1970-01-01
TS_MAX = 4_102_444_800  # 2100-01-01


# ---------------------------------------------------------------------------------------------
# The one batch that crosses from data to model.


@dataclass
class SequenceBatch:
    """A batch of user histories, LEFT-padded so position T-1 is each user's latest event.

    Built once by ``evorec.data.batches`` (collation and device placement happen there, never in
    a model's ``forward``). All tensors are on the same device. Shapes (B users, T positions):

    - ``items``       (B, T) int64   item index, 0 = padding
    - ``categories``  (B, T) int64   category index, 0 = padding/unknown
    - ``behaviors``   (B, T) int64   behaviour index (``BEHAVIOR_INDEX``), 0 = padding
    - ``timestamps``  (B, T) int64   unix seconds (or ordinal positions), 0 at padding
    - ``mask``        (B, T) bool    True where there is an event
    - ``targets``     (B, T) int64   training only: the item to predict after position t
                                     (the next event's item), 0 = no target at t
    - ``target_behaviors`` (B, T) int64  training only: behaviour of that next event, 0 = none
    - ``query_ts``    (B,)   int64   the time at which the next item is asked for (the target's
                                     time in evaluation, last event time otherwise)
    - ``users``       (B,)   int64   user rows (``SequenceData`` row numbers), -1 if unknown
    - ``baskets``     (B, T) int64   optional: the event's basket number within its user
                                     (``SequenceData.basket``; events of one basket share it), 0 at
                                     padding; None where the source of the batch has none (models
                                     then group a user's events by day, ``evorec.models.baskets``)
    """

    items: Tensor
    categories: Tensor
    behaviors: Tensor
    timestamps: Tensor
    mask: Tensor
    query_ts: Tensor
    users: Tensor
    targets: Tensor | None = None
    target_behaviors: Tensor | None = None
    baskets: Tensor | None = None

    def to(self, device) -> SequenceBatch:
        return SequenceBatch(**{k: (v.to(device, non_blocking=True) if v is not None else None) for k, v in self.__dict__.items()})

    @property
    def size(self) -> int:
        return int(self.items.shape[0])

    @property
    def length(self) -> int:
        return int(self.items.shape[1])


# -- documents stored as plain dicts ----------------------------------------------------------

JSONDoc = dict[str, Any]
"""A JSON object as it lies in a file or inside a payload: a config dump
(``model_dump(mode="json")``), metrics, a backtest's results. Validate it into its typed config
where one exists (``ExperimentConfig.model_validate``)."""

StateDict = dict[str, Any]
"""A ``state_dict``: a torch module's or optimizer's, or a fitted forecaster's own state -- values
by name, read back only by the object that wrote it."""
