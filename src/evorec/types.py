"""Layer 0: the canonical schema every part of evorec agrees on.

An *event* is one user action on one item at one time. Every reader maps its source onto
these columns; everything downstream (cleaning, sequences, models, serving) reads only them.
"""

from __future__ import annotations

from enum import Enum

import pyarrow as pa


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
