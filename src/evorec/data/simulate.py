"""A synthetic e-commerce log whose interest evolution is known: demos, known-answer tests, scale.

Model (all in logits over ``n_categories`` leaf categories, per user and day):

    logit[u, d, c] = base[u, c]                       taste; redrawn at a life event
                   + drift[u, d, c]                   Ornstein-Uhlenbeck, weekly knots, interpolated
                   + season[d, c]                     yearly (some categories) + weekly (all)
                   + emerging[u, d, c]                a category the user never had rises to a share
                   - fading[u, d, c]                  one of the user's top categories decays to ~0

``interest[u, d] = softmax(logit[u, d])`` is the probability that an event of user ``u`` on day
``d`` falls in each category; it is what :func:`ground_truth` reports (averaged per period).

Activity: each user has a heavy-tailed (lognormal) activity level that sets the chance of being
active on a day; an active day has ``1 + Poisson`` sessions, a session a geometric number of
views seconds-to-minutes apart, sessions hours apart. A session has a focus category (drawn from
the interest) that most of its views keep; items are drawn from the category's Zipf popularity,
sometimes re-viewed. Each view may lead to a ``cart`` and/or ``fav`` a little later, and a cart
(rarely a bare view) to a ``buy``, so every buy follows a view of the same item.

Determinism: randomness comes from independent streams per *unit* of :data:`UNIT_USERS`
consecutive users (``SeedSequence(seed, spawn_key=(1, unit, stream))``) and one world stream, so
the output depends only on the config: neither the chunk size (memory) nor the batch size
changes a byte. Work is vectorised over a chunk of users; nothing loops per event.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evorec.errors import InputError
from evorec.types import EVENT_SCHEMA, ITEM_SCHEMA, Behavior
from evorec.utils.io import atomic_file
from evorec.utils.timeutil import DAY

log = logging.getLogger(__name__)

UNIT_USERS = 64
"""Users per random-stream unit. Part of the output's definition: changing it changes outputs."""

_BEHAVIOR_NAMES = (Behavior.VIEW.value, Behavior.CART.value, Behavior.FAV.value, Behavior.BUY.value)
_VIEW, _CART, _FAV, _BUY = 0, 1, 2, 3
_EMERGE_FLOOR = 10.0  # before onset an emerging category sits this many logits below the rest
_NO_DAY = np.int32(2**30)  # "never" for planted days
# Relative chance that a session starts in each hour of the day (UTC): quiet nights, evening peak.
_DIURNAL = np.array(
    [3, 2, 1, 1, 1, 1, 2, 4, 6, 7, 7, 8, 9, 8, 7, 7, 7, 8, 9, 11, 12, 12, 9, 5], dtype=np.float64
)
_DIURNAL /= _DIURNAL.sum()
_DEPARTMENTS = ("Fashion", "Electronics", "Home", "Beauty", "Sports", "Toys", "Grocery", "Books")
_TARGET_CHUNK_EVENTS = 300_000  # default chunk size aims at about this many events
ROW_GROUP_ROWS = 1 << 19  # Parquet row group size of the written files (fixed: part of the bytes)

TRUTH_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("day", pa.int32()),  # first day (0-based, from cfg.start) of the period
        pa.field("period_start", pa.int64()),  # unix seconds of that day's start
        pa.field("category_id", pa.string()),
        pa.field("prob", pa.float64()),  # mean over the period's days of the daily interest
    ]
)
"""Interest ground truth: one row per (user, period, category) with ``prob >= truth_min_prob``."""

PLANTED_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("kind", pa.string()),  # "emerging" | "fading" | "life_event"
        pa.field("category_id", pa.string()),  # null for life_event
        pa.field("day", pa.int32()),  # onset day (0-based from cfg.start)
        pa.field("ts", pa.int64()),  # unix seconds of the onset day's start
    ]
)
"""Planted interest changes. Emerging/fading ramp (smoothstep) over ``transition_days``."""


class SimConfig(BaseModel):
    """Everything that defines a simulated log. Same config (seed included) -> same bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(1000, ge=1)
    days: int = Field(365, ge=1, le=36_500)
    seed: int = Field(0, ge=0)
    n_categories: int = Field(40, ge=2)
    n_items: int = Field(5000, ge=2)
    start: datetime = datetime(2024, 1, 1, tzinfo=timezone.utc)
    # activity
    active_day_prob: float = Field(0.1, gt=0, le=1)  # mean chance a user is active on a day
    events_per_active_day: float = Field(8.0, ge=1)  # mean events of a user on an active day
    sessions_per_active_day: float = Field(1.5, ge=1)
    activity_sigma: float = Field(1.0, ge=0)  # lognormal sigma of per-user activity (heavy tail)
    session_focus: float = Field(0.7, ge=0, le=1)  # chance a view keeps the session's category
    revisit_prob: float = Field(0.15, ge=0, lt=1)  # chance a view re-views the previous item
    # interest dynamics
    interest_concentration: float = Field(2.0, ge=0)  # sd of base logits (higher: peakier)
    drift_sigma: float = Field(0.2, ge=0)  # weekly innovation sd of the OU drift on logits
    drift_reversion: float = Field(0.02, ge=0, le=1)  # weekly mean reversion of the drift
    seasonal_fraction: float = Field(0.3, ge=0, le=1)  # share of categories with yearly season
    seasonality_amplitude: float = Field(1.0, ge=0)  # yearly amplitude, logits
    weekly_amplitude: float = Field(0.2, ge=0)  # weekly amplitude, logits (all categories)
    emerging_prob: float = Field(0.3, ge=0, le=1)  # chance a user gets an emerging interest
    emerging_share: float = Field(0.3, gt=0, lt=1)  # share it reaches (before drift/season)
    fading_prob: float = Field(0.3, ge=0, le=1)  # chance one of a user's top-3 interests fades
    fade_depth: float = Field(12.0, ge=0)  # logits removed once faded
    life_event_prob: float = Field(0.05, ge=0, le=1)  # chance of an abrupt redraw of tastes
    transition_days: int = Field(21, ge=1)  # ramp length of emerging / fading
    # catalogue and funnel
    zipf_exponent: float = Field(1.0, ge=0)  # item popularity within a category ~ rank^-s
    p_cart: float = Field(0.06, ge=0, le=1)  # view -> cart
    p_fav: float = Field(0.03, ge=0, le=1)  # view -> fav
    p_buy_after_cart: float = Field(0.35, ge=0, le=1)  # cart -> buy
    p_buy_direct: float = Field(0.005, ge=0, le=1)  # view (no cart) -> buy
    # ground truth output
    truth_period_days: int = Field(7, ge=1)
    truth_min_prob: float = Field(0.01, ge=0, le=1)

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _enough_items(self) -> SimConfig:
        if self.n_items < self.n_categories:
            raise InputError(f"n_items ({self.n_items}) < n_categories ({self.n_categories})")
        return self

    @property
    def t0(self) -> int:
        """Unix seconds of day 0's start."""
        return int(self.start.timestamp())

    @property
    def t_end(self) -> int:
        """Unix seconds just after the last simulated second (events have ``ts < t_end``)."""
        return self.t0 + self.days * DAY

    def expected_events(self) -> float:
        """Approximate number of events the config produces (ignores capping at one day)."""
        return self.users * self.days * self.active_day_prob * self.events_per_active_day


@dataclass(frozen=True)
class SimSummary:
    """What :func:`write_simulation` wrote."""

    events: int
    users: int
    items: int
    categories: int
    time_min: int | None  # unix seconds, None if no events
    time_max: int | None
    paths: dict[str, Path]  # events, items, truth, planted
    behavior_counts: dict[str, int] = field(default_factory=dict)
    truth_rows: int = 0
    planted_rows: int = 0


@dataclass(frozen=True)
class GroundTruth:
    interest: pa.Table  # TRUTH_SCHEMA
    planted: pa.Table  # PLANTED_SCHEMA


# --------------------------------------------------------------------------------------------
# the world: categories, items, seasonality (shared by all users)


@dataclass
class _World:
    n_cat: int
    cat_ids: pa.Array  # (C,) strings
    cat_start: np.ndarray  # (C+1,) items of category c are cat_start[c]:cat_start[c+1]
    item_cum: np.ndarray  # (N,) c + within-category cumulative popularity (sorted, ends c+1)
    item_cat: np.ndarray  # (N,) category index
    item_ids: pa.Array  # (N,) strings
    price: np.ndarray  # (N,)
    season: np.ndarray  # (D, C) float32 seasonal logit offsets per day
    brand: np.ndarray  # (N,) brand index


def _world(cfg: SimConfig) -> _World:
    g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(cfg.seed, spawn_key=(0,))))
    C, N, D = cfg.n_categories, cfg.n_items, cfg.days
    # category sizes: every category has an item, the rest spread unevenly
    sizes = 1 + g.multinomial(N - C, g.dirichlet(np.full(C, 2.0)))
    cat_start = np.concatenate([[0], np.cumsum(sizes)])
    item_cat = np.repeat(np.arange(C), sizes)
    rank = np.arange(N) - cat_start[item_cat] + 1  # 1-based popularity rank inside category
    w = rank.astype(np.float64) ** -cfg.zipf_exponent
    within = np.cumsum(w)
    base = np.concatenate([[0.0], within[cat_start[1:-1] - 1]])
    within = within - base[item_cat]
    within /= within[cat_start[1:] - 1][item_cat]
    item_cum = item_cat + within
    item_cum[cat_start[1:] - 1] = np.arange(C) + 1.0  # exact ends
    # ids are shuffled so an id says nothing about popularity
    width_i = max(6, len(str(N - 1)))
    item_ids = pa.array([f"i{j:0{width_i}d}" for j in g.permutation(N)], pa.string())
    width_c = max(3, len(str(C - 1)))
    cat_ids = pa.array([f"c{c:0{width_c}d}" for c in range(C)], pa.string())
    cat_price = g.lognormal(3.0, 1.0, C)
    price = np.floor(cat_price[item_cat] * g.lognormal(0.0, 0.5, N)) + 0.99  # shop prices: x.99
    brand = item_cat * 8 + g.integers(0, 8, N)  # a handful of brands per category
    # seasonality on the calendar (not on day index) so different starts line up
    abs_day = cfg.t0 // DAY + np.arange(D)
    year_frac = (abs_day / 365.2425) % 1.0
    dow = (abs_day + 3) % 7  # 0 = Monday (1970-01-01 was a Thursday)
    seasonal = g.random(C) < cfg.seasonal_fraction
    y_amp = cfg.seasonality_amplitude * g.uniform(0.5, 1.5, C) * seasonal
    y_phase = g.random(C)
    w_amp = cfg.weekly_amplitude * g.random(C)
    w_phase = g.integers(0, 7, C)
    season = y_amp * np.cos(2 * np.pi * (year_frac[:, None] - y_phase))  # (D, C)
    season += w_amp * np.cos(2 * np.pi * (dow[:, None] - w_phase) / 7.0)
    return _World(C, cat_ids, cat_start, item_cum, item_cat, item_ids, price,
                  season.astype(np.float32), brand)


def items_table(cfg: SimConfig) -> pa.Table:
    """The item catalogue (ITEM_SCHEMA) used by the simulation of ``cfg``."""
    w = _world(cfg)
    cats = w.cat_ids.to_pylist()
    item_cat = w.item_cat
    paths = [f"{_DEPARTMENTS[c % len(_DEPARTMENTS)]}/{cats[c]}" for c in range(w.n_cat)]
    ids = w.item_ids.to_pylist()
    brands = [f"brand{b:06d}" for b in w.brand]
    return pa.table(
        {
            "item_id": w.item_ids,
            "category_id": w.cat_ids.take(pa.array(item_cat)),
            "category_path": pa.array(paths, pa.string()).take(pa.array(item_cat)),
            "brand": pa.array(brands, pa.string()),
            "title": pa.array([f"{b} {cats[c]} {i}" for b, c, i in zip(brands, item_cat, ids)], pa.string()),
            "price": pa.array(w.price, pa.float64()),
        },
        schema=ITEM_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# per-unit random streams


class _Streams:
    """One generator per unit; a draw gives each unit its own count and concatenates."""

    def __init__(self, seed: int, unit_lo: int, unit_hi: int, stream: int) -> None:
        self.gens = [
            np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(1, u, stream))))
            for u in range(unit_lo, unit_hi)
        ]

    def draw(self, counts: np.ndarray, fn: Callable[[np.random.Generator, int], np.ndarray]) -> np.ndarray:
        return np.concatenate([fn(g, int(n)) for g, n in zip(self.gens, counts)])


def _seg_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of consecutive segments of ``values`` with the given lengths (empty segments ok)."""
    cs = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return cs[bounds[1:]] - cs[bounds[:-1]]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# --------------------------------------------------------------------------------------------
# latent state of a chunk of users


@dataclass
class _Latent:
    user_lo: int  # global index of the chunk's first user
    unit_sizes: np.ndarray  # (n_units,) users per unit
    p_active: np.ndarray  # (B,)
    base0: np.ndarray  # (B, C) float32
    base1: np.ndarray  # (B, C) float32, in force from l_day on
    drift: np.ndarray  # (B, W, C) float32, weekly knots
    e_cat: np.ndarray  # (B,) -1 if none
    e_day: np.ndarray
    e_lo: np.ndarray
    e_hi: np.ndarray
    f_cat: np.ndarray
    f_day: np.ndarray
    l_day: np.ndarray  # _NO_DAY if none

    @property
    def n(self) -> int:
        return len(self.p_active)


def _latent_unit(cfg: SimConfig, g: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    C, D = cfg.n_categories, cfg.days
    W = D // 7 + 2
    rows = np.arange(n)
    s = cfg.activity_sigma
    act = g.lognormal(-s * s / 2.0, s, n) if s > 0 else np.ones(n)
    base0 = g.normal(0.0, cfg.interest_concentration, (n, C))
    base1 = g.normal(0.0, cfg.interest_concentration, (n, C))
    order = np.argsort(base0, axis=1, kind="stable")
    low, top = C // 2, min(3, C - C // 2)
    e_cat = order[rows, g.integers(0, low, n)]  # among the user's weaker half
    f_cat = order[rows, C - 1 - g.integers(0, top, n)]  # among the user's top 3
    has_e = g.random(n) < cfg.emerging_prob
    has_f = g.random(n) < cfg.fading_prob
    has_l = g.random(n) < cfg.life_event_prob
    lo, hi = int(0.15 * D), max(int(0.15 * D) + 1, int(0.85 * D))
    days = g.integers(lo, hi, (3, n)).astype(np.int32)
    eps = g.standard_normal((n, W - 1, C), dtype=np.float32)
    # emerging: the category's own base is replaced by a ramp from ~0 share to emerging_share
    be = base0[rows, e_cat]
    lse = np.log(np.exp(base0).sum(1) - np.exp(be))
    e_lo = lse - _EMERGE_FLOOR
    e_hi = lse + np.log(cfg.emerging_share / (1.0 - cfg.emerging_share))
    base0[rows[has_e], e_cat[has_e]] = 0.0
    base1[rows[has_e], e_cat[has_e]] = 0.0
    base1[rows[has_f], f_cat[has_f]] = base0[rows[has_f], f_cat[has_f]]  # fading stays planted
    return {
        "p_active": np.minimum(1.0, cfg.active_day_prob * act),
        "base0": base0.astype(np.float32),
        "base1": base1.astype(np.float32),
        "eps": eps,
        "e_cat": np.where(has_e, e_cat, -1),
        "e_day": np.where(has_e, days[0], _NO_DAY),
        "e_lo": e_lo.astype(np.float32),
        "e_hi": e_hi.astype(np.float32),
        "f_cat": np.where(has_f, f_cat, -1),
        "f_day": np.where(has_f, days[1], _NO_DAY),
        "l_day": np.where(has_l, days[2], _NO_DAY),
    }


def _latent(cfg: SimConfig, unit_lo: int, unit_hi: int) -> _Latent:
    streams = _Streams(cfg.seed, unit_lo, unit_hi, stream=0)
    user_lo = unit_lo * UNIT_USERS
    user_hi = min(cfg.users, unit_hi * UNIT_USERS)
    sizes = np.diff(np.minimum(np.arange(unit_lo, unit_hi + 1) * UNIT_USERS, user_hi)) \
        if unit_hi > unit_lo else np.zeros(0, np.int64)
    parts = [_latent_unit(cfg, g, int(n)) for g, n in zip(streams.gens, sizes)]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    eps = cat.pop("eps")  # (B, W-1, C)
    # Ornstein-Uhlenbeck on weekly knots, starting at 0
    B, W1, C = eps.shape
    drift = np.zeros((B, W1 + 1, C), np.float32)
    keep = np.float32(1.0 - cfg.drift_reversion)
    sig = np.float32(cfg.drift_sigma)
    for k in range(W1):
        drift[:, k + 1] = keep * drift[:, k] + sig * eps[:, k]
    return _Latent(user_lo=user_lo, unit_sizes=sizes, drift=drift, **cat)


def _logits(cfg: SimConfig, world: _World, lat: _Latent, ui: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Logits of local users ``ui`` on days ``d`` (broadcastable index arrays): shape + (C,).

    Events ask for pairs (``ui``, ``d`` of shape (n,)); the truth asks for a grid ((b, 1), (1, D)).
    """
    z = np.where((d >= lat.l_day[ui])[..., None], lat.base1[ui], lat.base0[ui])
    k = d // 7
    f = ((d % 7) / np.float32(7.0)).astype(np.float32)[..., None]
    z = z + lat.drift[ui, k] * (1 - f)
    z += lat.drift[ui, k + 1] * f
    z += world.season[d]
    ub, db = np.broadcast_arrays(ui, d)
    T = float(cfg.transition_days)
    sel = np.nonzero(lat.e_cat[ub] >= 0)
    if sel[0].size:
        u = ub[sel]
        r = _smoothstep((db[sel] - lat.e_day[u]) / T)
        z[sel + (lat.e_cat[u],)] += lat.e_lo[u] + (lat.e_hi[u] - lat.e_lo[u]) * r
    sel = np.nonzero(lat.f_cat[ub] >= 0)
    if sel[0].size:
        u = ub[sel]
        z[sel + (lat.f_cat[u],)] -= cfg.fade_depth * _smoothstep((db[sel] - lat.f_day[u]) / T)
    return z


def _softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in place when ``z`` may be overwritten."""
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _user_ids(cfg: SimConfig, lo: int, hi: int) -> pa.Array:
    width = max(6, len(str(cfg.users - 1)))
    return pa.array([f"u{u:0{width}d}" for u in range(lo, hi)], pa.string())


# --------------------------------------------------------------------------------------------
# events of a chunk


def _events(cfg: SimConfig, world: _World, lat: _Latent, unit_lo: int, unit_hi: int) -> dict[str, np.ndarray]:
    """Events of the chunk's users, sorted by (user, ts). Arrays of equal length."""
    st = _Streams(cfg.seed, unit_lo, unit_hi, stream=1)
    C, D, t0 = cfg.n_categories, cfg.days, cfg.t0
    ucnt = lat.unit_sizes
    # active (user, day) pairs, user-major so every array below stays grouped by unit
    u01 = st.draw(ucnt, lambda g, n: g.random((n, D), dtype=np.float32))
    pu, pd = np.nonzero(u01 < lat.p_active[:, None].astype(np.float32))
    pd = pd.astype(np.int64)
    pcnt = np.bincount(pu // UNIT_USERS, minlength=len(ucnt))
    P = len(pu)
    day_start = st.draw(pcnt, lambda g, n: g.choice(24, n, p=_DIURNAL) * 3600 + g.integers(0, 3600, n))
    n_sess = 1 + st.draw(pcnt, lambda g, n: g.poisson(cfg.sessions_per_active_day - 1.0, n))
    scnt = _seg_sums(n_sess, pcnt)
    S = int(n_sess.sum())
    s_pair = np.repeat(np.arange(P), n_sess)
    expansion = 1.0 + cfg.p_cart + cfg.p_fav + cfg.p_cart * cfg.p_buy_after_cart \
        + (1.0 - cfg.p_cart) * cfg.p_buy_direct
    views_per_session = max(1.0, cfg.events_per_active_day / expansion / cfg.sessions_per_active_day)
    nv = st.draw(scnt, lambda g, n: g.geometric(1.0 / views_per_session, n))
    vcnt = _seg_sums(nv, scnt)
    V = int(nv.sum())
    v_sess = np.repeat(np.arange(S), nv)
    first_v = np.cumsum(nv) - nv
    # times: views seconds-to-minutes apart inside a session, sessions hours apart
    gaps = 1 + st.draw(vcnt, lambda g, n: g.lognormal(np.log(45.0), 1.0, n))
    gaps = np.minimum(gaps, 3600).astype(np.int64)
    gaps[first_v] = 0
    cs = np.cumsum(gaps)
    v_off = cs - cs[first_v][v_sess]
    s_dur = v_off[first_v + nv - 1]
    s_gap = st.draw(scnt, lambda g, n: g.lognormal(np.log(7200.0), 1.0, n)).astype(np.int64)
    step = np.cumsum(s_dur + s_gap)
    excl = step - (s_dur + s_gap)
    first_s = np.cumsum(n_sess) - n_sess
    s_ts = t0 + pd[s_pair] * DAY + day_start[s_pair] + (excl - excl[first_s][s_pair])
    v_ts = s_ts[v_sess] + v_off
    # categories: session focus from the day's interest, some views re-drawn from it
    cum = np.cumsum(_softmax(_logits(cfg, world, lat, pu, pd)).astype(np.float64), axis=1)
    cum[:, -1] = 1.0
    flat = (cum + np.arange(P)[:, None]).ravel()
    s_cat = np.searchsorted(flat, s_pair + st.draw(scnt, lambda g, n: g.random(n)), side="right") - s_pair * C
    v_pair = s_pair[v_sess]
    v_cat = s_cat[v_sess]
    fresh_mask = st.draw(vcnt, lambda g, n: g.random(n)) >= cfg.session_focus
    u = st.draw(_seg_sums(fresh_mask, vcnt), lambda g, n: g.random(n))
    fresh = np.nonzero(fresh_mask)[0]
    v_cat[fresh] = np.searchsorted(flat, v_pair[fresh] + u, side="right") - v_pair[fresh] * C
    np.minimum(v_cat, C - 1, out=v_cat)  # guards a float edge at a row's very end
    # items from the category's Zipf popularity; some views re-view the previous item
    item = np.searchsorted(world.item_cum, v_cat + st.draw(vcnt, lambda g, n: g.random(n)), side="right")
    item = np.clip(item, world.cat_start[v_cat], world.cat_start[v_cat + 1] - 1)
    rev = st.draw(vcnt, lambda g, n: g.random(n)) < cfg.revisit_prob
    rev[first_v] = False
    src = np.maximum.accumulate(np.where(rev, 0, np.arange(V)))
    item, v_cat = item[src], v_cat[src]
    # funnel
    r3 = st.draw(vcnt, lambda g, n: g.random((n, 3)).ravel()).reshape(V, 3)
    cart = r3[:, 0] < cfg.p_cart
    fav = r3[:, 1] < cfg.p_fav
    buy = np.where(cart, r3[:, 2] < cfg.p_buy_after_cart, r3[:, 2] < cfg.p_buy_direct)

    def later(mask: np.ndarray, median: float) -> np.ndarray:
        n = _seg_sums(mask, vcnt)
        return 1 + st.draw(n, lambda g, k: g.lognormal(np.log(median), 0.8, k)).astype(np.int64)

    cart_ts = v_ts.copy()
    cart_ts[cart] += later(cart, 20.0)
    fav_ts = v_ts[fav] + later(fav, 20.0)
    buy_ts = cart_ts[buy] + later(buy, 90.0)
    v_user = pu[v_pair]
    sel = (slice(None), cart, fav, buy)
    ts = np.concatenate([v_ts, cart_ts[cart], fav_ts, buy_ts])
    user = np.concatenate([v_user[s] for s in sel])
    it = np.concatenate([item[s] for s in sel])
    cat = np.concatenate([v_cat[s] for s in sel])
    sizes = (V, int(np.count_nonzero(cart)), len(fav_ts), len(buy_ts))
    beh = np.repeat(np.array([_VIEW, _CART, _FAV, _BUY], np.int8), sizes)
    keep = ts < cfg.t_end  # late sessions of the last day can spill past the end
    key = (user[keep].astype(np.int64) << 34) | (ts[keep] - t0)
    order = np.nonzero(keep)[0][np.argsort(key, kind="stable")]
    return {"user": user[order], "ts": ts[order], "item": it[order], "cat": cat[order], "beh": beh[order]}


def _event_batch(
    cfg: SimConfig, world: _World, lat: _Latent, ev: dict[str, np.ndarray], row0: int
) -> pa.RecordBatch:
    n = len(ev["ts"])
    users = _user_ids(cfg, lat.user_lo, lat.user_lo + lat.n)
    is_buy = ev["beh"] == _BUY
    value = np.where(is_buy, world.price[ev["item"]], np.nan)
    return pa.record_batch(
        [
            users.take(pa.array(ev["user"])),
            world.item_ids.take(pa.array(ev["item"])),
            pa.array(ev["ts"], pa.int64()),
            pa.array(_BEHAVIOR_NAMES, pa.string()).take(pa.array(ev["beh"])),
            world.cat_ids.take(pa.array(ev["cat"])),
            pa.array(value, pa.float64(), mask=~is_buy),
            pa.array(np.arange(row0 + 1, row0 + n + 1, dtype=np.int64), pa.int64()),
            pa.nulls(n, pa.string()),  # no basket ids: a simulated user's basket is a day
        ],
        schema=EVENT_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# ground truth of a chunk


def _truth_batch(cfg: SimConfig, world: _World, lat: _Latent) -> pa.RecordBatch:
    D, C, Pd = cfg.days, cfg.n_categories, cfg.truth_period_days
    starts = np.arange(0, D, Pd)
    lengths = np.diff(np.append(starts, D)).astype(np.float32)
    sub = max(1, 4_000_000 // (D * C))  # users per slice: bounded memory
    parts_u, parts_k, parts_c, parts_p = [], [], [], []
    for lo in range(0, lat.n, sub):
        ui = np.arange(lo, min(lat.n, lo + sub))[:, None]
        p = _softmax(_logits(cfg, world, lat, ui, np.arange(D)[None, :]))  # (b, D, C)
        pm = np.add.reduceat(p, starts, axis=1) / lengths[None, :, None]  # (b, K, C)
        b, k, c = np.nonzero(pm >= cfg.truth_min_prob)
        parts_u.append(b + lo)
        parts_k.append(k)
        parts_c.append(c)
        parts_p.append(pm[b, k, c].astype(np.float64))
    u = np.concatenate(parts_u) if parts_u else np.zeros(0, np.int64)
    k = np.concatenate(parts_k) if parts_k else np.zeros(0, np.int64)
    c = np.concatenate(parts_c) if parts_c else np.zeros(0, np.int64)
    p = np.concatenate(parts_p) if parts_p else np.zeros(0)
    day = starts[k].astype(np.int32)
    return pa.record_batch(
        [
            _user_ids(cfg, lat.user_lo, lat.user_lo + lat.n).take(pa.array(u)),
            pa.array(day, pa.int32()),
            pa.array(cfg.t0 + day.astype(np.int64) * DAY, pa.int64()),
            world.cat_ids.take(pa.array(c)),
            pa.array(p, pa.float64()),
        ],
        schema=TRUTH_SCHEMA,
    )


def _planted_batch(cfg: SimConfig, world: _World, lat: _Latent) -> pa.RecordBatch:
    users, kinds, cats, days = [], [], [], []
    for kind, cat_arr, day_arr in (("emerging", lat.e_cat, lat.e_day), ("fading", lat.f_cat, lat.f_day),
                                   ("life_event", None, lat.l_day)):
        idx = np.nonzero(day_arr != _NO_DAY)[0]
        users.append(idx)
        kinds.append(np.full(len(idx), kind, dtype=object))
        cats.append(cat_arr[idx] if cat_arr is not None else np.full(len(idx), -1))
        days.append(day_arr[idx])
    u, c, d = np.concatenate(users), np.concatenate(cats), np.concatenate(days).astype(np.int32)
    kind = np.concatenate(kinds)
    order = np.lexsort((d, u))
    u, c, d, kind = u[order], c[order], d[order], kind[order]
    return pa.record_batch(
        [
            _user_ids(cfg, lat.user_lo, lat.user_lo + lat.n).take(pa.array(u, pa.int64())),
            pa.array(kind.tolist(), pa.string()),
            world.cat_ids.take(pa.array(c, pa.int64(), mask=c < 0)),
            pa.array(d, pa.int32()),
            pa.array(cfg.t0 + d.astype(np.int64) * DAY, pa.int64()),
        ],
        schema=PLANTED_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# public API


def default_chunk_users(cfg: SimConfig) -> int:
    """Users per chunk: about 300k events and a bounded drift cube; a multiple of UNIT_USERS."""
    per_user = max(1.0, cfg.days * cfg.active_day_prob * cfg.events_per_active_day)
    by_events = _TARGET_CHUNK_EVENTS / per_user
    by_cube = 8_000_000 / ((cfg.days // 7 + 2) * cfg.n_categories + 2 * cfg.days)
    n = int(min(by_events, by_cube) // UNIT_USERS) * UNIT_USERS
    return max(UNIT_USERS, min(n, 65_536))


def _chunks(cfg: SimConfig, chunk_users: int | None) -> Iterator[tuple[int, int]]:
    cu = default_chunk_users(cfg) if chunk_users is None else chunk_users
    if cu < 1:
        raise InputError("chunk_users must be >= 1")
    units_per_chunk = max(1, -(-cu // UNIT_USERS))
    n_units = -(-cfg.users // UNIT_USERS)
    for lo in range(0, n_units, units_per_chunk):
        yield lo, min(n_units, lo + units_per_chunk)


def _iter_chunks(cfg: SimConfig, chunk_users: int | None, events: bool, truth: bool, planted: bool = True):
    world = _world(cfg)
    row0 = 0
    for unit_lo, unit_hi in _chunks(cfg, chunk_users):
        lat = _latent(cfg, unit_lo, unit_hi)
        ev_batch = None
        if events:
            ev_batch = _event_batch(cfg, world, lat, _events(cfg, world, lat, unit_lo, unit_hi), row0)
            row0 += ev_batch.num_rows
        tr = _truth_batch(cfg, world, lat) if truth else None
        pl = _planted_batch(cfg, world, lat) if planted else None
        yield ev_batch, (tr, pl)


def simulate_batches(cfg: SimConfig, *, chunk_users: int | None = None,
                     max_rows: int | None = None) -> Iterator[pa.RecordBatch]:
    """Stream the simulated events (EVENT_SCHEMA), users one after another, each time-ordered.

    ``chunk_users`` (memory: users generated together; default :func:`default_chunk_users`) and
    ``max_rows`` (split batches) change only batch boundaries, never the rows.
    """
    for batch, _ in _iter_chunks(cfg, chunk_users, events=True, truth=False, planted=False):
        if max_rows is None or batch.num_rows <= max_rows:
            yield batch
        else:
            for off in range(0, batch.num_rows, max_rows):
                yield batch.slice(off, max_rows)


def iter_ground_truth(cfg: SimConfig, *, chunk_users: int | None = None
                      ) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """Stream (interest truth in TRUTH_SCHEMA, planted events in PLANTED_SCHEMA) per chunk."""
    for _, tr in _iter_chunks(cfg, chunk_users, events=False, truth=True):
        yield tr


def ground_truth(cfg: SimConfig, *, chunk_users: int | None = None) -> GroundTruth:
    """The true interest per user and period, and the planted changes, as in-memory tables.

    ``prob`` is the mean over the period's days of the daily interest (the chance that an event
    of that user on that day is in that category); rows below ``cfg.truth_min_prob`` are left
    out. Consistent with :func:`simulate_batches` for the same config.
    """
    interest, planted = [], []
    for tr, pl in iter_ground_truth(cfg, chunk_users=chunk_users):
        interest.append(tr)
        planted.append(pl)
    return GroundTruth(pa.Table.from_batches(interest, TRUTH_SCHEMA),
                       pa.Table.from_batches(planted, PLANTED_SCHEMA))


@dataclass(frozen=True)
class InterestOracles:
    """The simulator's interest over forecast windows, per sample and horizon.

    ``future[s, j, c]``: the mean over the days of window ``[T_s, T_s + h_j)`` of user ``s``'s
    true daily interest in category ``c`` (what the window was drawn from: the ceiling of any
    forecaster). ``now[s, j, c]``: the same mean of the interest *state at the cutoff carried
    forward by the simulator's deterministic parts only*: the taste in force (a life event
    counts once it has happened), the drift at the cutoff decayed by its weekly mean reversion
    (its expectation), the calendar season of each future day, and the emerging/fading ramps
    whose onset lies before the cutoff; no future noise, no onset after the cutoff (the fair
    ceiling of a forecaster that sees only the past)."""

    future: np.ndarray  # (S, H, C) float64
    now: np.ndarray  # (S, H, C) float64
    category_ids: list[str]  # (C,) the simulator's category ids, in column order


def _logits_now(cfg: SimConfig, world: _World, lat: _Latent, ui: np.ndarray, d: np.ndarray, dT: np.ndarray) -> np.ndarray:
    """(n, L, C) logits of users ``ui`` (n, 1) on days ``d`` (n, L) as known at cutoff day ``dT`` (n, 1)."""
    seen = dT - 1  # the last day before the cutoff
    z = np.where((lat.l_day[ui] <= seen)[..., None], lat.base1[ui], lat.base0[ui])  # (n, 1, C)
    k = np.maximum(seen, 0) // 7
    f = ((np.maximum(seen, 0) % 7) / np.float32(7.0)).astype(np.float32)[..., None]
    drift_T = lat.drift[ui, k] * (1 - f) + lat.drift[ui, k + 1] * f  # (n, 1, C)
    keep = np.float32(1.0 - cfg.drift_reversion) ** ((d - seen) / np.float32(7.0)).astype(np.float32)  # (n, L)
    z = z + drift_T * keep[..., None] + world.season[d]  # (n, L, C)
    ub, db = np.broadcast_arrays(ui, d)
    T = float(cfg.transition_days)
    for cat, day, ramp in ((lat.e_cat, lat.e_day, True), (lat.f_cat, lat.f_day, False)):
        has = cat[ub] >= 0
        if ramp:  # an emerging category sits at its floor until an onset that the past has shown
            sel = np.nonzero(has)
            u = ub[sel]
            r = np.where(day[u] <= np.broadcast_to(seen, db.shape)[sel], _smoothstep((db[sel] - day[u]) / T), 0.0)
            z[sel + (cat[u],)] += lat.e_lo[u] + (lat.e_hi[u] - lat.e_lo[u]) * r
        else:
            sel = np.nonzero(has & (day[ub] <= np.broadcast_to(seen, db.shape)))
            u = ub[sel]
            z[sel + (cat[u],)] -= cfg.fade_depth * _smoothstep((db[sel] - day[u]) / T)
    return z


def interest_oracles(cfg: SimConfig, user_ids: list[str], cutoffs: np.ndarray, horizon_days: list[int],
                     chunk: int = 2048) -> InterestOracles:
    """The simulator's true (``future``) and carried-forward (``now``) interest over each
    sample's windows: sample ``s`` is user ``user_ids[s]`` at unix time ``cutoffs[s]``; window
    ``j`` covers the ``horizon_days[j]`` days from the cutoff's day (days past the simulated
    period repeat its last day)."""
    world = _world(cfg)
    width = max(6, len(str(cfg.users - 1)))
    try:
        rows = np.array([int(u[1:]) for u in user_ids], dtype=np.int64)
    except ValueError as e:
        raise InputError(f"not a simulated user id (expected u{'0' * width}..): {e}") from None
    if len(rows) and (rows.min() < 0 or rows.max() >= cfg.users):
        raise InputError(f"user ids outside the simulated {cfg.users} users")
    cut_day = (np.asarray(cutoffs, dtype=np.int64) - cfg.t0) // DAY
    S, H, C, D = len(rows), len(horizon_days), cfg.n_categories, cfg.days
    L = max(int(h) for h in horizon_days) if H else 0
    future, now = np.zeros((S, H, C)), np.zeros((S, H, C))
    ends = np.asarray(horizon_days, dtype=np.int64) - 1
    units = rows // UNIT_USERS
    for lo in range(0, int(units.max()) + 1 if S else 0, max(1, chunk // UNIT_USERS)):
        hi = min(lo + max(1, chunk // UNIT_USERS), (cfg.users + UNIT_USERS - 1) // UNIT_USERS)
        idx = np.flatnonzero((units >= lo) & (units < hi))
        if not len(idx):
            continue
        lat = _latent(cfg, lo, hi)
        for part in np.array_split(idx, max(1, len(idx) * L * C // 4_000_000 + 1)):
            ui = (rows[part] - lat.user_lo)[:, None]  # (n, 1)
            dT = cut_day[part][:, None]  # (n, 1)
            d = np.clip(dT + np.arange(L)[None, :], 0, D - 1)  # (n, L)
            for out, z in ((future, _logits(cfg, world, lat, ui, d)), (now, _logits_now(cfg, world, lat, ui, d, dT))):
                cum = np.cumsum(_softmax(z.astype(np.float64)), axis=1)  # (n, L, C)
                out[part] = cum[:, ends] / (ends + 1)[None, :, None]
    return InterestOracles(future, now, world.cat_ids.to_pylist())


def sidecar_paths(out: Path) -> dict[str, Path]:
    """Where :func:`write_simulation` puts each file for the events path ``out``."""
    out = Path(out)
    stem = out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name
    return {
        "events": out,
        "items": out.with_name(stem + ".items.parquet"),
        "truth": out.with_name(stem + ".truth.parquet"),
        "planted": out.with_name(stem + ".planted.parquet"),
    }


class _RowGroupWriter:
    """A ParquetWriter that cuts row groups at fixed row counts, so files do not depend on the
    chunking that produced the batches (and memory stays at one row group)."""

    def __init__(self, path: Path, schema: pa.Schema, rows: int = ROW_GROUP_ROWS) -> None:
        self._w = pq.ParquetWriter(path, schema, compression="zstd")
        self._schema, self._rows = schema, rows
        self._pending: list[pa.RecordBatch] = []
        self._n = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._n += batch.num_rows
        while self._n >= self._rows:
            t = pa.Table.from_batches(self._pending, self._schema)
            self._w.write_table(t.slice(0, self._rows), row_group_size=self._rows)
            rest = t.slice(self._rows)
            self._pending, self._n = rest.to_batches(), rest.num_rows

    def close(self) -> None:
        if self._n:
            self._w.write_table(pa.Table.from_batches(self._pending, self._schema), row_group_size=self._rows)
        self._pending, self._n = [], 0
        self._w.close()

    def abort(self) -> None:
        self._pending, self._n = [], 0
        self._w.close()


def _abort(writers: dict[str, _RowGroupWriter]) -> None:
    """Close the writers a failure left open (their temporary files are removed next)."""
    for w in writers.values():
        try:
            w.abort()
        except Exception:  # noqa: BLE001 - already failing; the temporary file is removed anyway
            pass


def write_simulation(cfg: SimConfig, out: Path, progress: Callable[[int], None] | None = None,
                     *, chunk_users: int | None = None, truth: bool = True) -> SimSummary:
    """Write events to ``out`` (Parquet) and items / truth / planted beside it, atomically.

    Memory is bounded by the chunk size, not by the number of events. Every file is written
    under a temporary name in the same directory and renamed at the end (side files first, the
    events file last), so a failed run leaves nothing under the final names and no temp files.
    ``progress`` receives the number of events written so far after each chunk. With
    ``truth=False`` the (large: about 10 rows per user and week) interest truth file is skipped
    and ``paths`` has no ``"truth"``; the planted table is always written.
    """
    paths = sidecar_paths(Path(out))
    if not truth:
        paths.pop("truth")
    writers: dict[str, _RowGroupWriter] = {}
    # Files leave the stack in reverse order: the events file, entered first, is renamed last.
    with contextlib.ExitStack() as stack:
        tmp = {name: stack.enter_context(atomic_file(paths[name])) for name in ("events", "truth", "planted", "items") if name in paths}
        stack.callback(_abort, writers)  # runs first: a failure closes the open writers, then their files go
        for name, schema in (("events", EVENT_SCHEMA), ("truth", TRUTH_SCHEMA), ("planted", PLANTED_SCHEMA)):
            if name in paths:
                writers[name] = _RowGroupWriter(tmp[name], schema)
        n_events = n_truth = n_planted = 0
        tmin: int | None = None
        tmax: int | None = None
        counts = np.zeros(len(_BEHAVIOR_NAMES), np.int64)
        log.info("simulating %d users x %d days (~%.0f events) -> %s",
                 cfg.users, cfg.days, cfg.expected_events(), paths["events"])
        for batch, (tr, pl) in _iter_chunks(cfg, chunk_users, events=True, truth=truth):
            writers["events"].write(batch)
            if truth:
                writers["truth"].write(tr)
            writers["planted"].write(pl)
            n_events += batch.num_rows
            n_truth += tr.num_rows if truth else 0
            n_planted += pl.num_rows
            if batch.num_rows:
                ts = batch.column(2).to_numpy()
                tmin = int(ts.min()) if tmin is None else min(tmin, int(ts.min()))
                tmax = int(ts.max()) if tmax is None else max(tmax, int(ts.max()))
                beh = batch.column(3).dictionary_encode()
                for name, cnt in zip(beh.dictionary.to_pylist(),
                                     np.bincount(beh.indices.to_numpy(), minlength=len(beh.dictionary))):
                    counts[_BEHAVIOR_NAMES.index(name)] += cnt
            if progress is not None:
                progress(n_events)
        for w in writers.values():
            w.close()
        writers.clear()
        pq.write_table(items_table(cfg), tmp["items"], compression="zstd")
    log.info("wrote %d events, %d truth rows, %d planted rows", n_events, n_truth, n_planted)
    return SimSummary(
        events=n_events, users=cfg.users, items=cfg.n_items, categories=cfg.n_categories,
        time_min=tmin, time_max=tmax, paths=paths,
        behavior_counts={b: int(c) for b, c in zip(_BEHAVIOR_NAMES, counts)},
        truth_rows=n_truth, planted_rows=n_planted,
    )
