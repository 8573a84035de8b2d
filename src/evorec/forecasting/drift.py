"""Per-user interest drift at a cutoff: who is about to change, and how.

:func:`drift` labels each forecast user for one horizon window with one of

- ``emerging-interest``: likely to engage with a category never touched before
  (``UserForecasts.p_emerging`` above ``emerging_p``);
- ``fading``: a current top interest (current share >= ``top_share``, and engaged with in the
  window of the same length before the cutoff) is likely to get no engagement in the window
  (``UserForecasts.p_fading`` above ``fading_p``);
- ``drifting``: the forecast category mix differs from the current one (Jensen-Shannon
  divergence in bits, in [0, 1], above ``drift_jsd``);
- ``stable``: none of these.

A user matching several labels gets the first one in ``precedence``. Users without history
before the cutoff are not forecast and so have no row (they are in ``UserForecasts.no_history``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, field_validator

from evorec.errors import InputError
from evorec.forecasting.metrics import jensen_shannon
from evorec.forecasting.predict import UserForecasts

LABELS = ("stable", "drifting", "emerging-interest", "fading")
_RANKED = ("emerging-interest", "fading", "drifting")  # the labels a precedence orders


class DriftConfig(BaseModel, extra="forbid"):
    """Thresholds of the drift labels (see the module docstring)."""

    drift_jsd: float = Field(0.15, ge=0, le=1, description="shift (JSD, bits) above which a user is drifting")
    emerging_p: float = Field(0.5, ge=0, le=1, description="p_emerging above which a user has an emerging interest")
    fading_p: float = Field(0.5, ge=0, le=1, description="p_fading of a current top interest above which it is fading")
    top_share: float = Field(0.15, gt=0, le=1, description="current share from which a category is a top interest")
    precedence: list[str] = Field(default_factory=lambda: list(_RANKED), description="first matching label wins")

    @field_validator("precedence")
    @classmethod
    def _known_labels(cls, v: list[str]) -> list[str]:
        unknown = [x for x in v if x not in _RANKED]
        if unknown:
            raise InputError(f"unknown drift label {unknown[0]!r}; known: {', '.join(_RANKED)}")
        if len(set(v)) != len(v):
            raise InputError("precedence lists a label twice")
        return v


def drift(uf: UserForecasts, horizon: int | str, cfg: DriftConfig | None = None) -> pa.Table:
    """One row per forecast user (in ``uf.users`` order) for the window ``horizon``.

    Columns: ``user_id``; ``shift`` (JSD between ``current`` and the forecast ``dist``);
    ``p_emerging``; ``fading_category`` / ``p_fading`` (the current top interest most likely to
    fade, null when the user has none that is also recent); ``top_current`` /
    ``top_current_share`` and ``top_forecast`` / ``top_forecast_share`` (over known categories,
    null when the share is 0); ``label`` (one of :data:`LABELS`). A label left out of
    ``cfg.precedence`` is never given. Unknown ``horizon``: KeyError.
    """
    cfg = cfg or DriftConfig()
    h = uf.horizon_index(horizon)
    U, C = uf.current.shape
    cats = np.asarray(uf.categories, dtype=object)  # (C,)
    cur = np.asarray(uf.current, dtype=np.float64)  # (U, C)
    fc = np.asarray(uf.dist[:, h], dtype=np.float64)  # (U, C)
    shift = jensen_shannon(cur, fc) if U else np.zeros(0)  # (U,), NaN for an empty row
    p_em = uf.p_emerging()[:, h]  # (U,)

    # fading: among current top interests that are recent (p_fading is NaN elsewhere)
    pf = uf.p_fading()[:, h].copy()  # (U, C)
    cand = (cur >= cfg.top_share) & ~np.isnan(pf)
    cand[:, 0] = False  # the unknown category is nobody's interest
    pf = np.where(cand, pf, -np.inf)
    f_idx = pf.argmax(1) if C else np.zeros(U, np.int64)  # (U,)
    has_f = cand.any(1)  # (U,)
    f_p = pf[np.arange(U), f_idx]  # (U,)

    def top(x: np.ndarray) -> tuple[pa.Array, pa.Array]:
        if C <= 1:
            return pa.nulls(U, pa.string()), pa.nulls(U, pa.float64())
        i = x[:, 1:].argmax(1) + 1  # (U,) over known categories
        share = x[np.arange(U), i]  # (U,)
        ok = share > 0
        return pa.array(np.where(ok, cats[i], None), pa.string()), pa.array(np.where(ok, share, np.nan), mask=~ok)

    match = {
        "emerging-interest": p_em > cfg.emerging_p,
        "fading": has_f & (f_p > cfg.fading_p),
        "drifting": np.nan_to_num(shift, nan=0.0) > cfg.drift_jsd,
    }
    label = np.full(U, "stable", dtype=object)
    done = np.zeros(U, dtype=bool)
    for name in cfg.precedence:
        hit = match[name] & ~done
        label[hit] = name
        done |= hit

    top_cur, top_cur_share = top(cur)
    top_fc, top_fc_share = top(fc)
    return pa.table({
        "user_id": pa.array(list(uf.users), pa.string()),
        "horizon": pa.array([uf.labels[h]] * U, pa.string()),
        "shift": pa.array(shift, mask=np.isnan(shift)),
        "p_emerging": pa.array(p_em),
        "fading_category": pa.array(np.where(has_f, cats[f_idx], None), pa.string()),
        "p_fading": pa.array(np.where(has_f, f_p, np.nan), mask=~has_f),
        "top_current": top_cur,
        "top_current_share": top_cur_share,
        "top_forecast": top_fc,
        "top_forecast_share": top_fc_share,
        "label": pa.array(label, pa.string()),
    })


def drift_summary(table: pa.Table) -> dict[str, Any]:
    """Counts per label (every label present, 0 if unused) and quantiles of ``shift``
    (None when there is no user)."""
    labels = table.column("label").to_pylist()
    shift = np.asarray(table.column("shift").to_numpy(zero_copy_only=False), dtype=np.float64)
    shift = shift[~np.isnan(shift)]
    qs = {"p10": 0.1, "p50": 0.5, "p90": 0.9, "p99": 0.99}
    return {
        "users": table.num_rows,
        "labels": {name: labels.count(name) for name in LABELS},
        "shift": {
            "mean": float(shift.mean()) if len(shift) else None,
            **{k: float(np.quantile(shift, q)) if len(shift) else None for k, q in qs.items()},
            "max": float(shift.max()) if len(shift) else None,
        },
    }
