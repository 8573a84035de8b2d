"""Category demand: how many users will engage with each category in a coming window.

With calibrated per-user probabilities ``p_u = engage[u, h, c]`` taken as independent, the
number of engaged users of a category is Poisson-binomial: mean ``sum p_u``, variance
``sum p_u (1 - p_u)``. :func:`demand` reports the mean with a normal-approximation interval
(lower end clipped at 0). Only users with history before the cutoff are forecast, so new users
arriving in the window are not counted.

:func:`demand_backtest` checks this at past cutoffs against what happened, beside a
persistence baseline (the users who engaged with the category in the window of the same length
just before the cutoff).
"""

from __future__ import annotations

import logging
from statistics import NormalDist
from typing import Any

import numpy as np
import pyarrow as pa

from evorec.data.sequences import SequenceData
from evorec.errors import InputError
from evorec.forecasting.payload import ForecasterPayload
from evorec.forecasting.predict import UserForecasts, forecast_at
from evorec.forecasting.windows import build_samples, check_cutoffs
from evorec.utils.timeutil import format_time, horizon_unit, resolve_horizon, resolve_time

logger = logging.getLogger(__name__)


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _intervals(engage: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, sd, lower, upper), each (C,), of the engaged-user counts of ``engage`` (U, C)."""
    p = np.clip(np.asarray(engage, dtype=np.float64), 0.0, 1.0)  # (U, C)
    mean = p.sum(0)  # (C,)
    sd = np.sqrt((p * (1.0 - p)).sum(0))  # (C,)
    return mean, sd, np.maximum(mean - z * sd, 0.0), mean + z * sd


def demand(uf: UserForecasts, horizon: int | str, confidence: float = 0.95) -> pa.Table:
    """One row per known category (index >= 1): ``category_id``, ``expected_users`` (sum of
    engagement probabilities), ``sd``, ``lower`` / ``upper`` (the ``confidence`` interval),
    ``expected_share`` (mean forecast share of the window's events over the forecast users)
    and ``recent_users`` (users engaged in the window of the same length before the cutoff).
    Unknown horizon: KeyError; confidence outside (0, 1): ValueError."""
    z = _z(confidence)
    h = uf.horizon_index(horizon)
    mean, sd, lo, hi = _intervals(uf.engage[:, h, 1:], z)  # (C - 1,) each
    U = len(uf.users)
    share = uf.dist[:, h, 1:].mean(0) if U else np.zeros(len(uf.categories) - 1)  # (C - 1,)
    return pa.table({
        "category_id": pa.array(uf.categories[1:], pa.string()),
        "horizon": pa.array([uf.labels[h]] * (len(uf.categories) - 1), pa.string()),
        "expected_users": pa.array(mean),
        "sd": pa.array(sd),
        "lower": pa.array(lo),
        "upper": pa.array(hi),
        "expected_share": pa.array(np.asarray(share, dtype=np.float64)),
        "recent_users": pa.array(uf.recent[:, h, 1:].sum(0).astype(np.int64)),
    })


def _wape(actual: np.ndarray, pred: np.ndarray) -> float | None:
    total = float(np.abs(actual).sum())
    return float(np.abs(actual - pred).sum() / total) if total > 0 else None


def demand_backtest(
    payload: ForecasterPayload, seq: SequenceData, cutoffs: list[Any], horizon: int | str, confidence: float = 0.95,
) -> dict[str, Any]:
    """Forecast demand at each past cutoff with a forecast run's trained forecaster and
    compare with what happened in the window.

    Actual demand of a category is the number of forecast users (history before the cutoff)
    with at least one event of it in [T, T + horizon). Per cutoff: ``wape_model`` and
    ``wape_persistence`` (sum |actual - predicted| / sum actual over categories; None when
    nothing happened), ``coverage`` (share of categories whose actual lies in the
    ``confidence`` interval) and ``categories`` rows; ``mean`` averages the three over cutoffs.
    A cutoff whose window does not lie inside the data: SplitError (a ValueError). On
    order-only data, users whose next ``horizon`` events are not all in the data are left out.
    """
    z = _z(confidence)
    if not cutoffs:
        raise InputError("give at least one backtest cutoff")
    unit = horizon_unit(seq.time_kind)
    h = resolve_horizon(horizon, unit)
    Ts = [resolve_time(c, seq.time_kind, what="backtest cutoff") for c in cutoffs]
    check_cutoffs(seq, Ts, [h], what="backtest cutoff")
    per_cutoff = []
    label = None
    for T in Ts:
        uf = forecast_at(payload, seq, T, [horizon])
        label = uf.labels[0]
        samples = build_samples(seq, [T], [h], min_history=1, visible_until=None, users=uf.user_rows)
        if not np.array_equal(samples.users, uf.user_rows):  # same rule (history before T) picks the same users
            raise RuntimeError("demand backtest: the forecast and the realised windows cover different users")
        ok = samples.observed[:, 0]  # (U,) all True on dated data once check_cutoffs passed
        actual = (samples.counts[ok, 0, 1:] > 0).sum(0).astype(np.float64)  # (C - 1,)
        mean, _, lo, hi = _intervals(uf.engage[ok, 0, 1:], z)  # (C - 1,) each
        persist = uf.recent[ok, 0, 1:].sum(0).astype(np.float64)  # (C - 1,)
        inside = (actual >= lo) & (actual <= hi)
        rows = [
            {"category_id": uf.categories[c + 1], "actual": int(actual[c]), "expected": float(mean[c]),
             "lower": float(lo[c]), "upper": float(hi[c]), "persistence": int(persist[c]), "inside": bool(inside[c])}
            for c in range(len(actual))
        ]
        res = {
            "cutoff": format_time(T, seq.time_kind),
            "users": int(ok.sum()),
            "wape_model": _wape(actual, mean),
            "wape_persistence": _wape(actual, persist),
            "coverage": float(inside.mean()) if len(inside) else None,
            "categories": rows,
        }
        logger.info("demand backtest %s: WAPE %s (persistence %s), coverage %s",
                    res["cutoff"], res["wape_model"], res["wape_persistence"], res["coverage"])
        per_cutoff.append(res)

    def avg(key: str) -> float | None:
        vals = [r[key] for r in per_cutoff if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "horizon": label,
        "unit": unit,
        "confidence": confidence,
        "cutoffs": per_cutoff,
        "mean": {k: avg(k) for k in ("wape_model", "wape_persistence", "coverage")},
    }
