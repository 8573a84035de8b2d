"""Audiences: the users most likely to engage with a category in a coming window."""

from __future__ import annotations

from typing import Any

import numpy as np

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
        raise ValueError(f"top must be at least 1, got {top}")
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
