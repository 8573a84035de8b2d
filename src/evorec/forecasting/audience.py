"""Audiences: the users most likely to engage with a category in a coming window."""

from __future__ import annotations

from typing import Any

import numpy as np

from evorec.errors import InputError
from evorec.forecasting.predict import UserForecasts


def audience(uf: UserForecasts, category: str, horizon: int | str, top: int = 100) -> dict[str, Any]:
    """The ``top`` users by calibrated probability of engaging with ``category`` within
    ``horizon`` of the cutoff (ties keep ``uf.users`` order).

    Returns ``category``, ``horizon`` (label), ``cutoff``, ``n_users`` (users forecast: those
    with history; ``no_history`` counts the others, who are not in any audience),
    ``users`` (list of ``{"user_id", "p_engage"}``, most likely first),
    ``expected_reach_top`` (sum of their probabilities: expected engaged users if exactly this
    audience is targeted) and ``expected_reach_all`` (the same over every forecast user).
    ``top < 1``: ValueError; unknown category or horizon: KeyError.
    """
    if int(top) < 1:
        raise InputError(f"top must be at least 1, got {top}")
    h = uf.horizon_index(horizon)
    c = uf.category_index(category)
    p = np.asarray(uf.engage[:, h, c], dtype=np.float64)  # (U,)
    order = np.argsort(-p, kind="stable")[: int(top)]  # (N,)
    return {
        "category": str(category),
        "horizon": uf.labels[h],
        "cutoff": int(uf.cutoff),
        "n_users": len(p),
        "no_history": len(uf.no_history),
        "users": [{"user_id": uf.users[i], "p_engage": float(p[i])} for i in order],
        "expected_reach_top": float(p[order].sum()),
        "expected_reach_all": float(p.sum()),
    }


def population_interests(uf: UserForecasts, top: int = 10, min_users: int = 20) -> dict[str, Any]:
    """The population's interests now and forecast, as aggregates only: per category the mean
    current share over the forecast users, and per horizon the mean forecast share and the
    expected number of engaged users (sum of the calibrated probabilities).

    Categories are the ``top`` by their largest mean share (now or at any horizon). With fewer
    than ``min_users`` users nothing is reported (``withheld`` with the reason): an average of
    a handful of people says too much about each of them (the same k-anonymity rule as segments).
    """
    if int(top) < 1:
        raise InputError(f"top must be at least 1, got {top}")
    U = len(uf.users)
    out: dict[str, Any] = {
        "cutoff": int(uf.cutoff), "n_users": U, "no_history": len(uf.no_history), "horizons": list(uf.labels),
        "min_users": int(min_users), "withheld": U < min_users, "reason": None, "categories": [],
    }
    if U < min_users:
        out["reason"] = f"{U} forecast users, fewer than {min_users}: no aggregate is reported"
        return out
    now = np.asarray(uf.current, dtype=np.float64).mean(0)  # (C,)
    share = np.asarray(uf.dist, dtype=np.float64).mean(0)  # (H, C)
    engaged = np.asarray(uf.engage, dtype=np.float64).sum(0)  # (H, C)
    rank = np.maximum(now, share.max(0) if len(share) else now)[1:]  # (C-1,) index 0 is the unknown category
    order = [int(i) + 1 for i in np.argsort(-rank, kind="stable")[: int(top)] if rank[i] > 0]
    out["categories"] = [
        {
            "category_id": str(uf.categories[c]),
            "current_share": float(now[c]),
            "forecast": {lab: {"share": float(share[j, c]), "expected_users": float(engaged[j, c])} for j, lab in enumerate(uf.labels)},
        }
        for c in order
    ]
    return out
