"""Time points and horizons: the one place evorec reads and writes them.

A *time point* (a split's cut, a backtest cutoff) is an int: unix seconds on dated data, an event
position on ordinal data (no calendar: ``ts`` is 1970-01-01 + position seconds). Configs may write
it as an ISO date or datetime (UTC if naive) on dated data. A *horizon* is the length of a window
after a cutoff: seconds on dated data (``"7d"``, ``"12h"``, ``"30m"``, ``"2w"``, ``"45s"`` or an
int), a number of events on ordinal data (an int, or ``"5ev"``).

:func:`resolve_time` and :func:`resolve_horizon` read them; :func:`horizon_label`,
:func:`format_time` and :func:`utc_iso` write them, in forms the readers take back.

The bottom layer: time kinds are known by their names (``"unix"``, ``"ordinal"``; the str enum
``evorec.types.TimeKind`` compares equal to them), and nothing of evorec above
``evorec.errors`` is imported.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

import numpy as np

from evorec.errors import InputError

MINUTE = 60
HOUR = 3_600
DAY = 86_400
WEEK = 7 * DAY

TimePoint = int | datetime | date | str
"""A cut: unix seconds (or an ordinal position), or an ISO date / datetime (UTC if naive)."""

Horizon = int | str
"""Seconds (int, or "7d", "12h", "30m", "2w", "45s") or, when horizons count events, an int ("5ev")."""

TIME_KINDS = ("unix", "ordinal")


class SplitError(InputError):
    """A time cut, a horizon or a split config cannot be applied to this dataset (a date on an
    ordinal dataset, a duration where horizons count events...). ``evorec.data.splits`` raises it
    for the rest of a split's config."""


def _kind(time_kind: str) -> str:
    kind = getattr(time_kind, "value", time_kind)
    if kind not in TIME_KINDS:
        raise ValueError(f"{time_kind!r} is not a time kind ({', '.join(TIME_KINDS)})")
    return kind


def horizon_unit(time_kind: str) -> str:
    """What horizons count: ``events`` on ordinal data, ``seconds`` on dated data."""
    return "events" if _kind(time_kind) == "ordinal" else "seconds"


def resolve_time(value: TimePoint, time_kind: str, *, what: str = "time cut") -> int:
    """A cut as int seconds (or position). Dates are refused on ordinal datasets (their ts are positions)."""
    kind = _kind(time_kind)
    if isinstance(value, bool):
        raise SplitError(f"{what}: {value!r} is not a time")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if kind == "ordinal":
        raise SplitError(
            f"{what} {value!r} is a date, but this dataset is ordinal: its timestamps are event "
            "positions (1970-01-01 + position seconds), not dates. Give the cut as an integer "
            "position, or use a leave-one-out split."
        )
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise SplitError(f"{what} {value!r} is neither unix seconds nor an ISO date/datetime") from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return int(value.timestamp())
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp())
    raise SplitError(f"{what}: cannot read {value!r} as a time")


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": MINUTE, "h": HOUR, "d": DAY, "w": WEEK}
_EVENTS = re.compile(r"^\s*([0-9]+)\s*(?:ev|events?)\s*$")


def resolve_horizon(value: Horizon, unit: str) -> int:
    """A horizon as int seconds (unit ``seconds``) or int events (unit ``events``)."""
    if isinstance(value, bool):
        raise SplitError(f"horizon {value!r} is not a number")
    if isinstance(value, str) and len(value) > 32:
        raise SplitError(f"horizon {value[:20]!r}...: too long to be a horizon")
    if isinstance(value, (int, np.integer)) or isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        out = int(value)
    elif isinstance(value, str) and (m := _EVENTS.match(value)):  # "5ev": how horizon_label writes event horizons
        if unit != "events":
            raise SplitError(f"horizon {value!r} counts events, but this data has timestamps; give a duration like '7d'")
        out = int(m.group(1))
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        if unit == "events":
            raise SplitError(f"horizon {value!r} is a duration, but horizons count events here; give an integer")
        out = int(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise SplitError(f"horizon {value!r}: expected an integer or a duration like '7d', '12h'")
    if out <= 0:
        raise SplitError(f"horizon {value!r} must be positive")
    return out


def duration_label(seconds: int) -> str:
    """``"7d"``, ``"12h"``, ``"30m"`` or ``"45s"``: the largest of those units that divides ``seconds``."""
    for size, suffix in ((DAY, "d"), (HOUR, "h"), (MINUTE, "m")):
        if seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


def horizon_label(h: int, unit: str) -> str:
    """A horizon as evorec names it in outputs (``"30d"``, or ``"5ev"`` when horizons count
    events); :func:`resolve_horizon` reads it back."""
    return f"{h}ev" if unit == "events" else duration_label(h)


def utc_iso(t: float | np.integer, timespec: str = "seconds") -> str:
    """Unix seconds as a UTC ISO 8601 string without offset: ``2017-12-01T08:00:00`` (``timespec``
    ``"minutes"``: ``2017-12-01T08:00``; ``"date"``: ``2017-12-01``)."""
    dt = datetime.fromtimestamp(int(t) if isinstance(t, (int, np.integer)) else float(t), tz=timezone.utc).replace(tzinfo=None)
    return dt.date().isoformat() if timespec == "date" else dt.isoformat(timespec=timespec)


def format_time(t: int, time_kind: str, timespec: str = "minutes") -> str:
    """A time point as evorec shows it to people (messages, forecast outputs): ``position 12`` on
    ordinal data, ``2017-12-01 08:00`` (UTC; ``timespec="seconds"``: ``2017-12-01 08:00:00``) on dated data."""
    if _kind(time_kind) == "ordinal":
        return f"position {int(t)}"
    return utc_iso(t, timespec).replace("T", " ")
