"""Time points and horizons are read and written in one place; what is written reads back."""

from __future__ import annotations

import numpy as np
import pytest

from evorec.errors import InputError
from evorec.types import TimeKind
from evorec.utils.timeutil import (
    DAY,
    HOUR,
    SplitError,
    duration_label,
    format_time,
    horizon_label,
    horizon_unit,
    resolve_horizon,
    resolve_time,
    utc_iso,
)


@pytest.mark.parametrize("h", [1, 45, 60, 90, HOUR, 12 * HOUR, DAY, 7 * DAY, 30 * DAY, 365 * DAY + 1])
def test_duration_labels_read_back(h):
    assert resolve_horizon(horizon_label(h, "seconds"), "seconds") == h
    assert horizon_label(h, "seconds") == duration_label(h)


def test_labels():
    assert [duration_label(h) for h in (DAY, 7 * DAY, 12 * HOUR, 30 * 60, 45)] == ["1d", "7d", "12h", "30m", "45s"]
    assert horizon_label(5, "events") == "5ev" and resolve_horizon("5ev", "events") == 5


def test_units_by_time_kind():
    assert horizon_unit(TimeKind.ORDINAL) == horizon_unit("ordinal") == "events"
    assert horizon_unit(TimeKind.UNIX) == horizon_unit("unix") == "seconds"
    with pytest.raises(ValueError, match="not a time kind"):
        horizon_unit("weekly")


def test_time_formats():
    t = 1512115200  # 2017-12-01 08:00:00 UTC
    assert utc_iso(t) == str(np.datetime64(t, "s")) == "2017-12-01T08:00:00"
    assert utc_iso(np.int64(t), "date") == "2017-12-01" and utc_iso(t + 0.5, "minutes") == "2017-12-01T08:00"
    assert format_time(t, TimeKind.UNIX) == "2017-12-01 08:00" and format_time(t, "unix", "seconds") == "2017-12-01 08:00:00"
    assert format_time(12, TimeKind.ORDINAL) == "position 12"
    assert resolve_time(utc_iso(t), "unix") == t


def test_errors_are_user_errors():
    for bad in (lambda: resolve_time("next tuesday", "unix"), lambda: resolve_time("2017-12-01", "ordinal"),
                lambda: resolve_horizon("7d", "events"), lambda: resolve_horizon(0, "seconds")):
        with pytest.raises(SplitError) as info:
            bad()
        assert isinstance(info.value, InputError)
    from evorec.data.splits import SplitError as SplitsError

    assert SplitsError is SplitError  # the split module raises the same type for the rest of a config
