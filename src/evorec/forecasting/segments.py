"""Segments of users by the trajectory of their interests, with k-anonymity.

Each forecast user is described by their *trajectory* for one horizon: the concatenation of the
current category shares, the forecast shares and their difference, (U, 3C), standardised per
column. Users are clustered with k-means or HDBSCAN (whose noise points form one
``unassigned`` group, id -1), then small groups are merged so every segment has at least
``min_size`` users:

- while some group is smaller than ``min_size``: if at least one group is large enough, each
  small group joins the large group with the nearest centroid (a real cluster rather than
  ``unassigned`` when there is one); otherwise the smallest group
  joins its nearest group and the centroids are recomputed;
- with fewer than ``min_size`` users in total nothing is segmented and the result is
  *withheld* (``withheld=True`` with the reason, no per-user rows).

Segments are numbered by decreasing size (0 = largest; -1 stays ``unassigned``). Each has a
profile built only from aggregates over its members (see :func:`segments`), and every user
gets 2-D coordinates from a PCA of the trajectories for plotting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from evorec.forecasting.predict import UserForecasts

logger = logging.getLogger(__name__)

UNASSIGNED = -1
N_TOP = 5


class SegmentConfig(BaseModel, extra="forbid"):
    """How to segment (see the module docstring)."""

    method: Literal["kmeans", "hdbscan"] = "kmeans"
    k: int = Field(8, ge=1, description="clusters of k-means (at most the number of users)")
    min_size: int = Field(20, ge=1, description="k-anonymity: the smallest segment that may be reported")
    horizon: str = Field("30d", description="forecast window the trajectories end at")
    seed: int = 0
    hdbscan_min_cluster_size: int = Field(20, ge=2)


@dataclass
class SegmentResult:
    """Segments of ``n_users`` users. ``assignment`` (user_id, segment, x, y) and ``profiles``
    are empty when ``withheld``; use :meth:`export` for anything leaving the process."""

    config: SegmentConfig
    horizon: str
    cutoff: int
    n_users: int
    withheld: bool
    reason: str | None
    assignment: pa.Table
    profiles: list[dict[str, Any]] = field(default_factory=list)
    merged: int = 0  # groups merged into others for k-anonymity

    def export(self, users: bool = True) -> dict[str, Any]:
        """What may be shown: only segments with ``>= min_size`` users, and per-user rows
        (``users`` key, a pa.Table, when ``users``) only of those segments."""
        k = self.config.min_size
        ok = [p for p in self.profiles if p["size"] >= k] if not self.withheld else []
        out: dict[str, Any] = {
            "method": self.config.method,
            "horizon": self.horizon,
            "cutoff": self.cutoff,
            "min_size": k,
            "n_users": self.n_users,
            "withheld": self.withheld,
            "reason": self.reason,
            "merged": self.merged,
            "segments": ok,
        }
        if users:
            keep = pa.array([p["segment"] for p in ok], pa.int64())
            seg = self.assignment.column("segment")
            out["users"] = self.assignment.filter(pc.is_in(seg, value_set=keep)) if len(ok) else self.assignment.slice(0, 0)
        return out


def trajectory_features(uf: UserForecasts, h: int) -> np.ndarray:
    """(U, 3C) standardised concat(current, dist[:, h], dist[:, h] - current)."""
    cur = np.asarray(uf.current, dtype=np.float64)  # (U, C)
    fc = np.asarray(uf.dist[:, h], dtype=np.float64)  # (U, C)
    x = np.concatenate([cur, fc, fc - cur], axis=1)  # (U, 3C)
    if not len(x):
        return x
    sd = x.std(0)  # (3C,)
    return (x - x.mean(0)) / np.where(sd > 1e-12, sd, 1.0)  # constant columns become 0


def _cluster(x: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """(U,) raw cluster labels (-1: HDBSCAN noise)."""
    U = len(x)
    if U < 2:
        return np.zeros(U, dtype=np.int64)
    if cfg.method == "kmeans":
        from sklearn.cluster import KMeans

        k = min(cfg.k, U)
        return KMeans(n_clusters=k, n_init=10, random_state=cfg.seed).fit_predict(x).astype(np.int64)
    from sklearn.cluster import HDBSCAN

    mcs = min(cfg.hdbscan_min_cluster_size, U)
    return HDBSCAN(min_cluster_size=max(mcs, 2), copy=True).fit_predict(x).astype(np.int64)


def _merge_small(x: np.ndarray, labels: np.ndarray, min_size: int) -> tuple[np.ndarray, int]:
    """Labels with every group of at least ``min_size`` users (needs ``len(x) >= min_size``);
    returns (labels, number of groups merged away)."""
    labels = labels.copy()
    merged = 0
    while True:
        groups, sizes = np.unique(labels, return_counts=True)
        small = groups[sizes < min_size]
        if not len(small):
            return labels, merged
        cent = {g: x[labels == g].mean(0) for g in groups}  # centroid of each group, (3C,)
        large = groups[sizes >= min_size]
        if (large != UNASSIGNED).any():  # real clusters are better homes than the noise group
            large = large[large != UNASSIGNED]
        if len(large):
            L = np.stack([cent[g] for g in large])  # (G_large, 3C)
            for g in small:
                into = large[np.linalg.norm(L - cent[g], axis=1).argmin()]
                labels[labels == g] = into
                merged += 1
            return labels, merged
        # no group is large enough yet: grow the smallest into its nearest neighbour
        g = small[sizes[sizes < min_size].argmin()]
        others = groups[groups != g]
        other_cent = np.stack([cent[o] for o in others])  # (G - 1, 3C)
        labels[labels == g] = others[np.linalg.norm(other_cent - cent[g], axis=1).argmin()]
        merged += 1


def _pca_2d(x: np.ndarray, seed: int) -> np.ndarray:
    """(U, 2) PCA coordinates (zero-padded when there are fewer than 2 components)."""
    U = len(x)
    out = np.zeros((U, 2))
    n = min(2, U, x.shape[1] if x.ndim == 2 else 0)
    if U >= 2 and n >= 1:
        from sklearn.decomposition import PCA

        out[:, :n] = PCA(n_components=n, random_state=seed).fit_transform(x)
    return out


def _top(categories: np.ndarray, values: np.ndarray, n: int, reverse: bool = False) -> list[dict[str, Any]]:
    """Top ``n`` known categories (index >= 1) by ``values`` (C,), largest first (smallest
    with ``reverse``), skipping zeros."""
    v = values[1:]
    order = np.argsort(v if reverse else -v, kind="stable")[:n]
    return [{"category": str(categories[i + 1]), "value": float(v[i])} for i in order if v[i] != 0]


def segments(uf: UserForecasts, cfg: SegmentConfig | None = None, drift_table: pa.Table | None = None) -> SegmentResult:
    """Segment the users of ``uf`` (see the module docstring).

    Each profile holds ``segment``, ``name``, ``size``, ``share`` of the users, ``top_now``
    (5 categories by mean current share), ``top_forecast`` (by mean forecast share), ``gains``
    and ``losses`` (5 largest mean forecast - current changes each way), ``center`` (mean 2-D
    coordinates) and, with ``drift_table`` (from :func:`evorec.forecasting.drift.drift`),
    ``drift_mix`` (users per drift label). Unknown ``cfg.horizon``: KeyError.
    """
    cfg = cfg or SegmentConfig()
    h = uf.horizon_index(cfg.horizon)
    U = len(uf.users)
    base = {"config": cfg, "horizon": uf.labels[h], "cutoff": int(uf.cutoff), "n_users": U}
    empty = pa.table({"user_id": pa.array([], pa.string()), "segment": pa.array([], pa.int64()),
                      "x": pa.array([], pa.float64()), "y": pa.array([], pa.float64())})
    if U < cfg.min_size:
        reason = f"{U} forecast users, fewer than min_size={cfg.min_size}: no segment could be reported"
        logger.info("segments withheld: %s", reason)
        return SegmentResult(**base, withheld=True, reason=reason, assignment=empty)

    x = trajectory_features(uf, h)  # (U, 3C)
    raw = _cluster(x, cfg)  # (U,)
    labels, merged = _merge_small(x, raw, cfg.min_size)
    # number by decreasing size; HDBSCAN noise that survived the merge stays -1
    groups, sizes = np.unique(labels, return_counts=True)
    real = [g for g in groups[np.argsort(-sizes, kind="stable")] if g != UNASSIGNED]
    remap = {g: i for i, g in enumerate(real)}
    remap[UNASSIGNED] = UNASSIGNED
    seg = np.array([remap[g] for g in labels], dtype=np.int64)  # (U,)
    xy = _pca_2d(x, cfg.seed)  # (U, 2)

    cats = np.asarray(uf.categories, dtype=object)
    cur = np.asarray(uf.current, dtype=np.float64)  # (U, C)
    fc = np.asarray(uf.dist[:, h], dtype=np.float64)  # (U, C)
    drift_of: dict[str, str] = {}
    if drift_table is not None:
        drift_of = dict(zip(drift_table.column("user_id").to_pylist(), drift_table.column("label").to_pylist()))
    users = np.asarray(uf.users, dtype=object)
    profiles = []
    for s in sorted(set(seg.tolist()), key=lambda s: (s == UNASSIGNED, s)):
        m = seg == s  # (U,)
        now, then = cur[m].mean(0), fc[m].mean(0)  # (C,)
        p: dict[str, Any] = {
            "segment": int(s),
            "name": "unassigned" if s == UNASSIGNED else f"segment {s}",
            "size": int(m.sum()),
            "share": float(m.mean()),
            "top_now": _top(cats, now, N_TOP),
            "top_forecast": _top(cats, then, N_TOP),
            "gains": [g for g in _top(cats, then - now, N_TOP) if g["value"] > 0],
            "losses": [g for g in _top(cats, then - now, N_TOP, reverse=True) if g["value"] < 0],
            "center": [float(xy[m, 0].mean()), float(xy[m, 1].mean())],
        }
        if drift_table is not None:
            mix: dict[str, int] = {}
            for u in users[m]:
                lab = drift_of.get(u)
                if lab is not None:
                    mix[lab] = mix.get(lab, 0) + 1
            p["drift_mix"] = mix
        profiles.append(p)
    assignment = pa.table({
        "user_id": pa.array(list(uf.users), pa.string()),
        "segment": pa.array(seg),
        "x": pa.array(xy[:, 0]),
        "y": pa.array(xy[:, 1]),
    })
    logger.info("segments: %d users -> %d segments (%d small groups merged)", U, len(profiles), merged)
    return SegmentResult(**base, withheld=False, reason=None, assignment=assignment, profiles=profiles, merged=merged)
