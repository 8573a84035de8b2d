"""Forecasts of a trained forecaster at any cutoff: the table drift, segments, audiences and
demand are built on.

:func:`forecast_at` returns a :class:`UserForecasts` for every user with at least one event
before the cutoff (users without history are not forecast: they are listed in ``no_history``
so a caller can answer them explicitly, never with silent zeros).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from evorec.data.sequences import SequenceData
from evorec.errors import InputError, NotFoundError
from evorec.forecasting.backtest import HALF_LIVES_EVENTS, HALF_LIVES_S
from evorec.forecasting.baselines import Context, FittedBaseline, new_mask, normalize
from evorec.forecasting.forecaster import Featurizer
from evorec.forecasting.payload import ForecasterPayload, TrainedForecaster
from evorec.forecasting.ranker import RankerForecaster
from evorec.forecasting.windows import WindowSamples, build_samples, history_features
from evorec.utils.timeutil import SplitError, format_time, horizon_label, horizon_unit, resolve_horizon, resolve_time

CURRENT_HALF_LIFE_S = 30 * 86_400  # "current interests": history decayed with a 30-day half-life
CURRENT_HALF_LIFE_EVENTS = 10


@dataclass
class UserForecasts:
    """Forecasts of U users over C categories (index 0 = unknown category) for H horizons."""

    users: list[str]  # (U,) user ids (pseudonymised as stored)
    user_rows: np.ndarray  # (U,) rows in the sequences
    categories: list[str]  # (C,) category id of each index; index 0 is "(unknown)"
    horizons: tuple[int, ...]
    unit: str  # "seconds" | "events"
    cutoff: int
    current: np.ndarray  # (U, C) current interest: decayed history shares at the cutoff
    past: np.ndarray  # (U, C) all-history counts
    recent: np.ndarray  # (U, H, C) bool: engaged in the window of the same length before the cutoff
    dist: np.ndarray  # (U, H, C) forecast share of the window's events per category
    engage: np.ndarray  # (U, H, C) probability of engaging with each category in the window
    no_history: list[str] = field(default_factory=list)  # users with no event before the cutoff
    rank_new: np.ndarray | None = None  # (U, H, C) the `new` list's score (-inf: not new to the user)
    rank_all: np.ndarray | None = None  # (U, H, C) the `all` list's score (default: engage)

    def ranked(self, row: int, h: int, k: int | None = None) -> list[int]:
        """Categories (never 0) of user ``row`` at horizon index ``h`` in the forecaster's order."""
        score = (self.rank_all if self.rank_all is not None else self.engage)[row, h].astype(np.float64).copy()
        score[0] = -np.inf
        order = [int(c) for c in np.argsort(-score, kind="stable") if c > 0]
        return order if k is None else order[:k]

    def new_list(self, row: int, h: int, k: int = 10) -> list[int]:
        """The top ``k`` categories new to user ``row`` at horizon index ``h`` (the `new` list)."""
        score = self.rank_new[row, h] if self.rank_new is not None else np.where(self.past[row] == 0, self.engage[row, h], -np.inf)
        score = score.copy()
        score[0] = -np.inf
        order = np.argsort(-score, kind="stable")[:k]
        return [int(c) for c in order if np.isfinite(score[c])]

    @property
    def labels(self) -> list[str]:
        return [horizon_label(h, self.unit) for h in self.horizons]

    def horizon_index(self, horizon: int | str) -> int:
        """Index of ``horizon`` ("30d", seconds, or events); a horizon the model was not trained
        for is an error naming the ones it has."""
        try:
            h = resolve_horizon(horizon, self.unit)
        except SplitError:
            h = None
        if h not in self.horizons:
            shown = repr(horizon) if len(repr(horizon)) <= 40 else repr(horizon)[:37] + "..."
            raise NotFoundError(f"horizon {shown} is not one the forecaster was trained for; it has {', '.join(self.labels)}")
        return self.horizons.index(h)

    def category_index(self, category: str) -> int:
        try:
            c = self.categories.index(str(category))
        except ValueError:
            raise NotFoundError(f"category {category!r} is unknown to the model ({len(self.categories) - 1} categories)") from None
        if c == 0:
            raise NotFoundError("the unknown category cannot be targeted")
        return c

    def p_emerging(self) -> np.ndarray:
        """(U, H) probability of engaging with at least one never-touched category
        (engagement of different categories taken as independent)."""
        new = (self.past == 0)[:, None, :]  # (U, 1, C)
        new[..., 0] = False
        log_none = np.log1p(-np.clip(self.engage, 0, 1 - 1e-12)) * new  # (U, H, C)
        return 1.0 - np.exp(log_none.sum(-1))

    def p_fading(self) -> np.ndarray:
        """(U, H, C) probability that a recent interest gets no engagement in the window (NaN
        where the category is not a recent interest)."""
        return np.where(self.recent, 1.0 - self.engage, np.nan)

    def without(self, user_ids: list[str]) -> UserForecasts:
        """The same forecasts with these users removed (the right to be forgotten)."""
        drop = set(user_ids)
        keep = np.array([u not in drop for u in self.users], dtype=bool)
        return UserForecasts(
            users=[u for u, k in zip(self.users, keep) if k], user_rows=self.user_rows[keep], categories=self.categories,
            horizons=self.horizons, unit=self.unit, cutoff=self.cutoff, current=self.current[keep], past=self.past[keep],
            recent=self.recent[keep], dist=self.dist[keep], engage=self.engage[keep],
            no_history=[u for u in self.no_history if u not in drop],
            rank_new=None if self.rank_new is None else self.rank_new[keep],
            rank_all=None if self.rank_all is None else self.rank_all[keep],
        )

    def to_table(self) -> pa.Table:
        """One row per (user, horizon, category) with any forecast mass or history."""
        U, H, C = self.dist.shape
        u, h, c = np.nonzero((self.dist > 1e-4) | (self.engage > 1e-3) | (self.past[:, None, :] > 0))
        keep = c > 0
        u, h, c = u[keep], h[keep], c[keep]
        pf = self.p_fading()
        return pa.table({
            "user_id": pa.array(np.asarray(self.users, dtype=object)[u]),
            "cutoff": pa.array(np.full(len(u), self.cutoff, np.int64)),
            "horizon": pa.array(np.asarray(self.labels, dtype=object)[h]),
            "category_id": pa.array(np.asarray(self.categories, dtype=object)[c]),
            "current_share": pa.array(self.current[u, c]),
            "forecast_share": pa.array(self.dist[u, h, c]),
            "p_engage": pa.array(self.engage[u, h, c]),
            "p_fading": pa.array(pf[u, h, c]),
            "p_emerging_any": pa.array(self.p_emerging()[u, h]),
            "new_category": pa.array(self.past[u, c] == 0),
        })


def forecast_at(
    payload: ForecasterPayload, seq: SequenceData, cutoff: Any, horizons: list[Any] | None = None, *, users: list[str] | None = None,
) -> UserForecasts:
    """Forecast every user (or ``users``) with history before ``cutoff`` with a trained forecaster;
    ``seq`` is the sequences it was trained on (checked once, when its run was loaded:
    ``evorec.experiments.runs.ForecastRun``)."""
    model = payload.build_model()
    unit = horizon_unit(seq.time_kind)
    T = resolve_time(cutoff, seq.time_kind, what="cutoff")
    ts = np.asarray(seq.ts)
    if not len(ts) or not int(ts.min()) < T <= int(ts.max()) + 1:
        lo, hi = (int(ts.min()), int(ts.max())) if len(ts) else (0, 0)
        raise SplitError(f"cutoff {cutoff!r} is outside the data's time span ({format_time(lo, seq.time_kind)} .. {format_time(hi, seq.time_kind)})")
    want = _wanted_horizons(model, unit, horizons)
    rows = None
    no_history: list[str] = []
    if users is not None:
        idx = seq.users.lookup(list(users)) - 1  # row = index - 1; unknown ids -> -1
        unknown = [u for u, i in zip(users, idx) if i < 0]
        if unknown:
            raise NotFoundError(f"unknown user {unknown[0]!r}")
        rows = idx.astype(np.int64)
    samples = build_samples(seq, [T], list(model.horizons), min_history=1, visible_until=T, users=rows)
    cand = np.arange(len(seq)) if rows is None else rows
    have = set(samples.users.tolist())
    no_history = [seq.users.id_of(int(r) + 1) for r in cand if int(r) not in have]
    return _forecast(model, payload, seq, seq, samples, want, T, seq.users.reverse(samples.users + 1), no_history)


def _wanted_horizons(model: TrainedForecaster, unit: str, horizons: list[Any] | None) -> list[int]:
    """``horizons`` resolved (default: all the model has); one it was not trained for is a KeyError."""
    all_h = list(model.horizons)
    want = [resolve_horizon(h, unit) for h in horizons] if horizons else all_h
    missing = [h for h in want if h not in all_h]
    if missing:
        raise NotFoundError(
            f"horizon {horizon_label(missing[0], unit)} is not one the forecaster was trained for; "
            f"it has {', '.join(horizon_label(h, unit) for h in all_h)}"
        )
    return want


def _forecast(
    model: TrainedForecaster, payload: ForecasterPayload, data, seq: SequenceData, samples, want: list[int], cutoff: int,
    users: list[str], no_history: list[str], ctx: Context | None = None,
) -> UserForecasts:
    """Predict ``samples`` of ``data`` (the sequences or one user's events) and keep ``want``.

    ``seq`` is the forecaster's training sequences (vocabularies, population context); ``ctx`` the
    context over them when the caller holds one (default: a fresh one)."""
    unit = samples.unit
    ctx = payload.context.over(seq) if ctx is None else ctx
    half_lives = HALF_LIVES_S if unit == "seconds" else HALF_LIVES_EVENTS
    if isinstance(model, RankerForecaster):
        score, new_score = model.predict(samples, seq, ctx.baskets, data=data)
        engage = model.engagement(score, tuple(samples.horizons))
        dist = normalize(engage)
        rank_all, rank_new = score, new_score
    elif isinstance(model, FittedBaseline):
        feats_b = history_features(data, samples, half_lives)
        dist, engage, rank_all = model.predict(samples, feats_b, ctx, data=data)
        rank_new = model.predict_new(samples, feats_b, ctx, rank_all, data=data)
    else:
        dist, engage, rank_all = model.predict_ranked(data, samples, Featurizer(data, samples, ctx, half_lives))
        rank_new = rank_all
    cur_hl = CURRENT_HALF_LIFE_S if unit == "seconds" else CURRENT_HALF_LIFE_EVENTS
    feats = history_features(data, samples, [cur_hl])
    rank_new = np.where(new_mask(feats.past)[:, None, :], rank_new, -np.inf)
    all_h = list(model.horizons)
    sel = [all_h.index(h) for h in want]
    return UserForecasts(
        users=users,
        user_rows=np.asarray(samples.users, dtype=np.int64),
        categories=["(unknown)"] + [str(x) for x in seq.categories.ids.to_pylist()],
        horizons=tuple(want),
        unit=unit,
        cutoff=int(cutoff),
        current=normalize(feats.decayed[0]),
        past=feats.past,
        recent=np.stack([feats.last[j] > 0 for j in sel], 1),
        dist=dist[:, sel],
        engage=engage[:, sel],
        rank_new=rank_new[:, sel],
        rank_all=rank_all[:, sel],
        no_history=no_history,
    )


class _OneUser:
    """A single user's events as the minimal sequence object the window/feature code reads
    (``offsets``, ``item``, ``category``, ``behavior``, ``ts``, ``categories``, ``time_kind``)."""

    def __init__(self, item: np.ndarray, category: np.ndarray, behavior: np.ndarray, ts: np.ndarray, like: SequenceData):
        order = np.argsort(ts, kind="stable")
        self.item, self.category, self.behavior, self.ts = (np.asarray(a)[order] for a in (item, category, behavior, ts))
        self.offsets = np.array([0, len(ts)], dtype=np.int64)
        self.categories, self.items, self.users, self.time_kind = like.categories, like.items, like.users, like.time_kind

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return 1


def forecast_history(
    payload: ForecasterPayload, seq: SequenceData, events: list[tuple[str, str | None, str, int]], cutoff: int, horizons: list[Any] | None = None,
) -> UserForecasts:
    """Forecast one user from their own events ``(item_id, category_id, behavior, ts)`` (e.g. a
    live service's store) with a forecaster trained on ``seq``; items and categories the model
    does not know are kept as "unknown category" events. Raises ValueError on an empty history.
    Builds the forecaster for this one call; a caller forecasting many users (a service) builds a
    :class:`LiveForecaster` once instead."""
    return LiveForecaster.build(payload, seq).user(events, cutoff, horizons)


@dataclass(frozen=True)
class LiveForecaster:
    """A trained forecaster built once -- model, population context, item -> category table --
    to forecast and explain any number of users from their own events (what a service holds)."""

    payload: ForecasterPayload
    seq: SequenceData  # the sequences it was trained on (vocabularies, population)
    model: TrainedForecaster
    context: Context  # caches the population trends it computes, for every later call
    item_category: np.ndarray  # (n_items,) category index of every item of ``seq``

    @classmethod
    def build(cls, payload: ForecasterPayload, seq: SequenceData) -> LiveForecaster:
        return cls(payload, seq, payload.build_model(), payload.context.over(seq), seq.item_category())

    def user(self, events: list[tuple[str, str | None, str, int]], cutoff: int, horizons: list[Any] | None = None) -> UserForecasts:
        """One user's forecast at ``cutoff`` from their own events (see :func:`forecast_history`)."""
        want = _wanted_horizons(self.model, horizon_unit(self.seq.time_kind), horizons)
        one, samples = _one_user(self.model, self.seq, events, cutoff, self.item_category)
        return _forecast(self.model, self.payload, one, self.seq, samples, want, int(cutoff), ["?"], [], self.context)

    def explain(self, events: list[tuple[str, str | None, str, int]], cutoff: int, pairs: list[tuple[str, int]]) -> dict[tuple[str, int], SignalAttribution]:
        """Attributions of the user's forecast (see :func:`explain_history`)."""
        from evorec.forecasting.ranker import FEATURES, GROUPS

        model = _ranker(self.payload, self.model)
        unit = horizon_unit(self.seq.time_kind)
        index = {horizon_label(h, unit): j for j, h in enumerate(model.horizons)}
        one, samples = _one_user(model, self.seq, events, cutoff, self.item_category)
        got = model.contributions(samples, self.seq, self.context.baskets, [(0, index[label], int(c)) for label, c in pairs], data=one)
        out = {}
        for (label, c), (X, contrib, base) in zip(pairs, got):
            groups = {g: float(sum(contrib[FEATURES.index(f)] for f in fs)) for g, fs in GROUPS.items()}
            strongest = np.argsort(-np.abs(contrib), kind="stable")[:3]
            out[(label, int(c))] = SignalAttribution(
                score=float(base + contrib.sum()), base=float(base), groups=dict(sorted(groups.items(), key=lambda kv: -abs(kv[1]))),
                top_signals={FEATURES[f]: float(X[f]) for f in strongest},
            )
        return out


def _one_user(
    model: TrainedForecaster, seq: SequenceData, events: list[tuple[str, str | None, str, int]], cutoff: int, item_category: np.ndarray,
) -> tuple[_OneUser, WindowSamples]:
    """One user's own events as sequences beside ``seq`` (its vocabularies; ``item_category`` its
    item -> category table) and their sample at ``cutoff``."""
    from evorec.types import BEHAVIOR_INDEX

    if not events:
        raise InputError("the user has no events: nothing to forecast from")
    item_idx = seq.items.lookup([e[0] for e in events])
    given = seq.categories.lookup([e[1] for e in events])
    cat = np.where(given > 0, given, item_category[item_idx])
    beh = np.array([BEHAVIOR_INDEX.get(e[2], 0) for e in events], dtype=np.int8)
    one = _OneUser(item_idx, cat, beh, np.array([int(e[3]) for e in events], dtype=np.int64), seq)
    samples = build_samples(one, [int(cutoff)], list(model.horizons), min_history=1, visible_until=int(cutoff))
    if not len(samples):
        raise InputError("the user has no event before the cutoff: nothing to forecast from")
    return one, samples


@dataclass
class SignalAttribution:
    """Why one (horizon, category) of a forecast scores what it does: the ranker's raw score as a
    base plus the exact (TreeSHAP) contribution of each signal group, and the strongest signals."""

    score: float
    base: float
    groups: dict[str, float]  # signal group -> contribution, largest magnitude first
    top_signals: dict[str, float]  # the 3 signals with the largest contributions: their values

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def explain_history(
    payload: ForecasterPayload, seq: SequenceData, events: list[tuple[str, str | None, str, int]], cutoff: int,
    pairs: list[tuple[str, int]],
) -> dict[tuple[str, int], SignalAttribution]:
    """Attributions of a live user's forecast (as :func:`forecast_history`) for each (horizon
    label, category index) of ``pairs``; a forecaster that is not a ranker raises ValueError."""
    return LiveForecaster.build(payload, seq).explain(events, cutoff, pairs)


@dataclass
class ForecastExplanation:
    """Why a user's forecast for one category and horizon is what it is (``evorec forecast explain``)."""

    user: str
    category: str
    horizon: str
    cutoff: int
    no_history: bool  # True: the user had no event before the cutoff; the population forecast is given
    p_engage: float  # probability of engaging with the category in the window
    rank: int | None  # 1-based position of the category in the user's `all` list
    new_category: bool  # the user never engaged with it before the cutoff (it can be in the `new` list)
    new_rank: int | None  # 1-based position in the `new` list
    contributions: dict[str, float] = field(default_factory=dict)  # signal group -> share of the score (sums to the score - base)
    base: float = 0.0  # the score every (user, category) starts from
    signals: dict[str, float] = field(default_factory=dict)  # the signal values
    past_events: list[dict[str, Any]] = field(default_factory=list)  # the user's latest events in the category

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _ranker(payload: ForecasterPayload, model: TrainedForecaster | None = None) -> RankerForecaster:
    """The payload's model (``model`` when already built), if it is a ranker."""
    model = payload.build_model() if model is None else model
    if not isinstance(model, RankerForecaster):
        raise InputError(f"explanations need a ranker forecaster (forecast.model.kind: ranker); this run's forecaster is {payload.model_kind}")
    return model


def explain_at(payload: ForecasterPayload, seq: SequenceData, user: str, category: str, cutoff: Any, horizon: Any | None = None) -> ForecastExplanation:
    """Explain the forecast of ``user`` for ``category`` at ``cutoff`` (a ranker forecaster): the
    signal groups' exact contributions to its score (TreeSHAP), the signals, and the user's past
    events in the category. A user without history gets the population's forecast, flagged."""
    from difflib import get_close_matches

    from evorec.forecasting.ranker import FEATURES, GROUPS

    model = _ranker(payload)
    cats = ["(unknown)"] + [str(x) for x in seq.categories.ids.to_pylist()]
    if str(category) not in cats[1:]:
        close = get_close_matches(str(category), cats[1:], n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise NotFoundError(f"unknown category {category!r} ({len(cats) - 1} categories){hint}")
    c = cats.index(str(category))
    unit = horizon_unit(seq.time_kind)
    want = _wanted_horizons(model, unit, [horizon] if horizon is not None else None)
    h = want[0]
    j = list(model.horizons).index(h)
    uf = forecast_at(payload, seq, cutoff, [h], users=[user])
    label = horizon_label(h, unit)
    if not uf.users:  # no event before the cutoff
        ctx = payload.context.over(seq)
        pop = ctx.population(int(uf.cutoff), int(h))
        order = [int(x) for x in np.argsort(-pop[1:], kind="stable") + 1]
        return ForecastExplanation(user, str(category), label, int(uf.cutoff), True, float(pop[c]), order.index(c) + 1, True,
                                   order.index(c) + 1, {"population trend": float(pop[c])}, 0.0, {"population_share": float(pop[c])})
    row = int(uf.user_rows[0])
    samples = build_samples(seq, [int(uf.cutoff)], list(model.horizons), min_history=1, visible_until=int(uf.cutoff), users=np.array([row]))
    ctx = payload.context.over(seq)
    (X, contrib, base), = model.contributions(samples, seq, ctx.baskets, [(0, j, c)])
    groups = {g: float(sum(contrib[FEATURES.index(f)] for f in fs)) for g, fs in GROUPS.items()}
    order_all = uf.ranked(0, 0)
    new = bool(uf.past[0, c] == 0)
    new_list = uf.new_list(0, 0, k=len(cats))
    off = np.asarray(seq.offsets)
    lo, hi = int(off[row]), int(samples.hist_end[0])
    sel = np.flatnonzero(np.asarray(seq.category[lo:hi]) == c)[-10:][::-1] + lo
    events = [{"time": format_time(int(seq.ts[p]), seq.time_kind), "item_id": seq.items.id_of(int(seq.item[p]))} for p in sel]
    return ForecastExplanation(
        user=user, category=str(category), horizon=label, cutoff=int(uf.cutoff), no_history=False,
        p_engage=float(uf.engage[0, 0, c]), rank=order_all.index(c) + 1, new_category=new,
        new_rank=new_list.index(c) + 1 if c in new_list else None,
        contributions=dict(sorted(groups.items(), key=lambda kv: -abs(kv[1]))), base=base,
        signals={f: float(v) for f, v in zip(FEATURES, X)}, past_events=events,
    )
