"""The stacked interest forecaster: a gradient-boosted ranker over per-(user, category) signals.

For a sample (user, cutoff T), horizon h and category c it predicts whether the user engages
with c in [T, T + h) from signals that the simple methods hold one at a time and some they lack:

- the baselines' own scores: P-TopFreq basket counts and share, TIFU-KNN's own vector and its
  neighbours' mean (the tuned setting of that horizon, plus a narrower neighbourhood), decayed
  counts at three half-lives, counts in the last window of the same length;
- repurchase timing: days since the user last engaged with c, the user's typical interval for c,
  the population's median interval for c, and their ratios (how "due" c is);
- what similar users just did: the share of the user's neighbours that engaged with c in the
  last window of length h;
- the population: the share of active users that engaged with c in the last window, in the one
  before (trend) and over all history;
- the calendar a year ago (missing where the log does not reach back a year): the share of the
  active users that engaged with c in the same window one year earlier, how that share moved
  against the window before it (what c did at this time last year: seasons, holidays), and the
  user's own events in c in that window a year ago;
- the user's activity: baskets, baskets per day, days since the first and the last event, the
  number of distinct categories (the ranker learns how the other signals depend on them);
- with the own-history signals, the 60-day decayed share of c among the user's categories (a
  taste estimate that does not grow with the user's activity).

Training samples are every user at cutoffs every ``train_every`` whose whole window ends by the
fit origin (nothing after it is seen); every positive (user, category) pair is kept with a
seeded share of the negatives. One LightGBM model per horizon ranks `all` categories; a second
per horizon is trained only on categories new to the user and ranks the `new` list.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evorec.data.sequences import SequenceData
from evorec.errors import InputError
from evorec.forecasting import nbr
from evorec.forecasting.calibration import IsotonicCalibrator
from evorec.forecasting.windows import WindowSamples, build_samples, history_features, history_positions
from evorec.utils.timeutil import DAY

logger = logging.getLogger(__name__)

HALF_LIVES_DAYS = (14, 60, 180)
NEVER = 9999.0  # "days since" of a category never engaged with
YEAR = 365 * DAY
FEATURES = (
    "ptop", "ptop_share", "tifu_own", "tifu_nn", "tifu_nn_narrow", "decayed_14d", "decayed_60d", "decayed_180d",
    "last_window", "days_since", "user_interval", "due_user", "pop_interval", "due_pop", "neighbours_recent",
    "reach_last", "reach_prev", "reach_all", "baskets", "baskets_per_day", "days_since_first", "days_since_last",
    "n_categories", "share_60d", "year_ago_reach", "year_ago_trend", "year_ago_user",
)

# What each signal is about, for explanations (every feature in exactly one group).
GROUPS = {
    "own history": ("ptop", "ptop_share", "tifu_own", "decayed_14d", "decayed_60d", "decayed_180d", "last_window", "share_60d"),
    "repurchase timing": ("days_since", "user_interval", "due_user", "pop_interval", "due_pop"),
    "similar users": ("tifu_nn", "tifu_nn_narrow", "neighbours_recent"),
    "population trend": ("reach_last", "reach_prev", "reach_all"),
    "calendar": ("year_ago_reach", "year_ago_trend", "year_ago_user"),
    "user activity": ("baskets", "baskets_per_day", "days_since_first", "days_since_last", "n_categories"),
}


class RankerConfig(BaseModel):
    """Settings of the stacked ranker (``forecast.model.kind: ranker``)."""

    model_config = ConfigDict(extra="forbid")

    objective: Literal["binary", "lambdarank"] = Field(
        "lambdarank", description="binary: engagement of each (user, category) pair; lambdarank: NDCG of each user's ranking"
    )
    rounds: int = Field(150, ge=1, description="boosting rounds per model")
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_data_in_leaf: int = Field(200, ge=1)
    negative_rate: float = Field(0.2, gt=0, le=1, description="share of the negative (user, category) pairs kept for training")
    max_rows: int | None = Field(
        1_000_000, ge=1000, description="training rows per horizon at most (about): past it, negatives are kept at the lower "
        "rate that fits (every positive kept, at least one negative per positive); None: no bound"
    )
    narrow_k: int = Field(50, ge=1, description="the second, narrower neighbourhood of the TIFU neighbour signal")
    new_list: bool = Field(True, description="train a second ranker per horizon on new categories only (the `new` list)")
    threads: int | None = Field(None, ge=1, description="LightGBM threads (None: the machine's cores)")
    seed: int = 0


@dataclass
class SignalContext:
    """What the signals of one horizon need beyond the samples."""

    seq: SequenceData  # the sequences whose users are the neighbour pool and the population
    baskets: np.ndarray  # (N,) basket numbers of ``seq``'s events
    tifu: nbr.TifuParams  # the horizon's tuned TIFU-KNN setting


def _population(seq: SequenceData, T: int, h: int, user_of: np.ndarray) -> np.ndarray:
    """(5, C): share of the active users that engaged with each category in [T - h, T), in
    [T - 2h, T - h), over everything before T, and a year earlier: in [T - Y, T - Y + h) and in
    [T - Y - h, T - Y) (NaN where the log does not reach back to the window's start)."""
    ts = np.asarray(seq.ts)
    cat = np.asarray(seq.category).astype(np.int64)
    C = seq.categories.size
    start = int(ts.min()) if len(ts) else T
    out = []
    windows = ((T - h, T, False), (T - 2 * h, T - h, False), (None, T, False),
               (T - YEAR, min(T - YEAR + h, T), True), (T - YEAR - h, T - YEAR, True))
    for lo, hi, year_ago in windows:
        if year_ago and lo < start:  # the log does not reach back that far: unknown, not zero
            out.append(np.full(C, np.nan))
            continue
        sel = ts < hi if lo is None else (ts >= lo) & (ts < hi)
        u = user_of[sel]
        pairs = np.unique(u * C + cat[sel])
        n_users = len(np.unique(u))
        out.append(np.bincount(pairs % C, minlength=C) / max(n_users, 1))
    return np.stack(out)


def _year_ago_counts(data: SequenceData, samples: WindowSamples, h: int) -> np.ndarray:
    """(S, C) the user's events per category in [T - Y, T - Y + h); NaN for users whose history
    starts after T - Y (nothing is known of them a year ago)."""
    S, C = len(samples), data.categories.size
    rows, pos = history_positions(samples)
    ts = np.asarray(data.ts)[pos].astype(np.int64)
    T = samples.cutoff[rows]
    win = (ts >= T - YEAR) & (ts < np.minimum(T - YEAR + h, T))
    cat = np.asarray(data.category)[pos].astype(np.int64)
    out = np.bincount(rows[win] * C + cat[win], minlength=S * C).reshape(S, C).astype(np.float64)
    has = samples.hist_end > samples.hist_start
    first = np.where(has, np.asarray(data.ts)[np.where(has, samples.hist_start, 0)], np.iinfo(np.int64).max)
    out[first > samples.cutoff - YEAR] = np.nan
    return out


def _interval_median(hist: nbr.BasketHistory) -> np.ndarray:
    """(C,) median days between consecutive baskets holding a category (NaN: never repeated)."""
    C = hist.n_categories
    key = hist.row * C + hist.category
    order = np.lexsort((hist.ts, key))
    k, t = key[order], hist.ts[order]
    same = k[1:] == k[:-1]
    gaps = (t[1:] - t[:-1])[same] / DAY
    cats = (k[1:] % C)[same]
    out = np.full(C, np.nan)
    if len(gaps):
        s = np.lexsort((gaps, cats))
        cats, gaps = cats[s], gaps[s]
        bounds = np.searchsorted(cats, np.arange(C + 1))
        n = np.diff(bounds)
        has = n > 0
        out[has] = (gaps[bounds[:-1][has] + (n[has] - 1) // 2] + gaps[bounds[:-1][has] + n[has] // 2]) / 2
    return out


def signals(samples: WindowSamples, data: SequenceData, j: int, sc: SignalContext, narrow_k: int) -> np.ndarray:
    """(S, C, F) float32 signals of horizon ``j`` (F = len(FEATURES), in that order).

    ``data`` holds the samples' histories (the pool itself, or one user's live events); the
    neighbours and the population come from the pool ``sc.seq`` at each sample's cutoff."""
    seq = sc.seq
    h = int(samples.horizons[j])
    S, C = len(samples), seq.categories.size
    same = data is seq
    hist = nbr.basket_history(data, samples, sc.baskets if same else None)
    p = sc.tifu
    kmax = max(p.k, narrow_k)
    own = nbr.tifu_vectors(hist, p.r_b, p.r_g, p.m)
    pt = nbr.ptopfreq(hist)
    nb = hist.n_baskets.astype(np.float64)[:, None]  # (S, 1)
    hf = history_features(data, samples, [d * DAY for d in HALF_LIVES_DAYS])
    last = hf.last[j].astype(np.float64)
    nn, nn_narrow, recent = np.zeros((S, C)), np.zeros((S, C)), np.zeros((S, C))
    reach = np.zeros((5, S, C))
    pop_interval = np.full((S, C), -1.0)
    off = np.asarray(seq.offsets, dtype=np.int64)
    user_of = np.repeat(np.arange(len(off) - 1, dtype=np.int64), np.diff(off))
    end = int(np.asarray(seq.ts).max()) + 1 if seq.n_events else 0
    for T in np.unique(samples.cutoff):
        rows = np.flatnonzero(samples.cutoff == T)
        Tp = min(int(T), end)  # a live cutoff after the data: the pool and population as of the data's end
        ps = build_samples(seq, [Tp], [h], min_history=1, visible_until=Tp)  # the pool at T
        phist = nbr.basket_history(seq, ps, sc.baskets)
        pvec = nbr.tifu_vectors(phist, p.r_b, p.r_g, p.m)
        plast = (history_features(seq, ps, []).last[0] > 0).astype(np.float64)
        exclude = None
        if same:  # a user is never its own neighbour
            pos = np.searchsorted(ps.users, samples.users[rows])
            exclude = np.where((pos < len(ps)) & (ps.users[np.minimum(pos, len(ps) - 1)] == samples.users[rows]), pos, -1)
        idx, ok = nbr.nearest(own[rows], pvec, kmax, p.metric, exclude)
        nn[rows] = nbr.neighbour_mean(pvec, idx, ok, p.k)
        nn_narrow[rows] = nbr.neighbour_mean(pvec, idx, ok, narrow_k)
        recent[rows] = nbr.neighbour_mean(plast, idx, ok, p.k)
        reach[:, rows] = _population(seq, Tp, h, user_of)[:, None, :]
        pop_interval[rows] = np.nan_to_num(_interval_median(phist), nan=-1.0)[None, :]
    days_since = np.where(np.isfinite(hf.recency), hf.recency / DAY, NEVER)
    first = np.full(S * C, np.inf)
    lastb = np.full(S * C, -np.inf)
    key = hist.row * C + hist.category
    np.minimum.at(first, key, hist.ts)
    np.maximum.at(lastb, key, hist.ts)
    span = (lastb - first).reshape(S, C) / DAY
    user_interval = np.where(pt >= 2, span / np.maximum(pt - 1, 1), -1.0)
    due_user = np.where(user_interval > 0, days_since / np.maximum(user_interval, 1.0), -1.0)
    due_pop = np.where(pop_interval > 0, np.minimum(days_since, NEVER) / np.maximum(pop_interval, 1.0), -1.0)
    ts = np.asarray(data.ts)
    has = samples.hist_end > samples.hist_start
    since_first = np.where(has, (samples.cutoff - ts[np.where(has, samples.hist_start, 0)]) / DAY, 0.0)
    since_last = np.where(has, (samples.cutoff - ts[np.maximum(samples.hist_end - 1, 0)]) / DAY, NEVER)
    user = {
        "baskets": nb[:, 0], "baskets_per_day": nb[:, 0] / np.maximum(since_first, 1.0),
        "days_since_first": since_first, "days_since_last": since_last, "n_categories": (pt > 0).sum(1).astype(np.float64),
    }
    d60 = hf.decayed[1].astype(np.float64)
    cols = {
        "share_60d": d60 / np.maximum(d60.sum(1, keepdims=True), 1e-12), "year_ago_reach": reach[3],
        "year_ago_trend": reach[3] - reach[4], "year_ago_user": _year_ago_counts(data, samples, h),
        "ptop": pt, "ptop_share": pt / np.maximum(nb, 1.0), "tifu_own": own, "tifu_nn": nn, "tifu_nn_narrow": nn_narrow,
        "decayed_14d": hf.decayed[0], "decayed_60d": hf.decayed[1], "decayed_180d": hf.decayed[2], "last_window": last,
        "days_since": days_since, "user_interval": user_interval, "due_user": due_user, "pop_interval": pop_interval,
        "due_pop": due_pop, "neighbours_recent": recent, "reach_last": reach[0], "reach_prev": reach[1], "reach_all": reach[2],
    }
    out = np.empty((S, C, len(FEATURES)), np.float32)
    for f, name in enumerate(FEATURES):
        out[:, :, f] = cols[name] if name in cols else user[name][:, None]
    return out


def _columns(booster) -> list[int]:  # untyped: lightgbm.Booster
    """The columns of :data:`FEATURES` that a trained model reads, in its order (a model saved
    before a signal was added reads the signals it was trained on)."""
    names = booster.feature_name()
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise InputError(f"the saved ranker reads signals this version does not compute: {', '.join(unknown)}")
    return [FEATURES.index(n) for n in names]


@dataclass
class RankerModels:
    """The boosted models of one horizon, as LightGBM model strings (picklable, portable)."""

    all: str
    new: str | None
    calibration: dict | None = None  # IsotonicCalibrator of the `all` score -> P(engage), fitted on every user of the latest training cutoff


class RankerForecaster:
    """Fits and applies one :class:`RankerModels` per horizon at a fit origin."""

    def __init__(self, cfg: RankerConfig, horizons: tuple[int, ...], tifu: dict[int, nbr.TifuParams]):
        self.cfg, self.horizons, self.tifu = cfg, tuple(int(h) for h in horizons), dict(tifu)
        self.models: dict[int, RankerModels] = {}
        self.origin: int | None = None
        self.history: list[dict[str, float]] = []

    def _params(self) -> dict:
        import os

        return {
            "objective": "binary", "learning_rate": self.cfg.learning_rate, "num_leaves": self.cfg.num_leaves,
            "min_data_in_leaf": self.cfg.min_data_in_leaf, "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
            "lambda_l2": 1.0, "verbose": -1, "num_threads": self.cfg.threads or len(os.sched_getaffinity(0)),
            "seed": self.cfg.seed, "deterministic": True, "force_row_wise": True,
        }

    def _train(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray):  # untyped: lightgbm.Booster
        import lightgbm as lgb

        params = self._params()
        ds = lgb.Dataset(X, y.astype(np.float32), feature_name=list(FEATURES))
        if self.cfg.objective == "lambdarank":
            params.update(objective="lambdarank", lambdarank_truncation_level=20, eval_at=[10])
            ds.set_group(groups[groups > 0])
        return lgb.train(params, ds, num_boost_round=self.cfg.rounds)

    def _negative_rate(self, positives: int, negatives: int, h: int) -> float:
        """The share of negatives kept: ``negative_rate``, lowered so that the rows stay within
        ``max_rows`` (a log with thousands of categories has millions of negative pairs per
        cutoff), never below one negative per positive."""
        rate = self.cfg.negative_rate
        if self.cfg.max_rows is not None and negatives and positives + rate * negatives > self.cfg.max_rows:
            rate = min(rate, max(self.cfg.max_rows - positives, positives) / negatives)
            logger.info("ranker %gd: %d positive and %d negative pairs; negatives kept at %.4f (max_rows %d)",
                        h / DAY, positives, negatives, rate, self.cfg.max_rows)
        return rate

    def fit(
        self, seq: SequenceData, baskets: np.ndarray, origin: int, cutoffs: list[int], users: np.ndarray | None = None, min_history: int = 1,
    ) -> RankerForecaster:
        """Train on the samples at ``cutoffs`` whose window ends by ``origin``."""
        t0 = time.perf_counter()
        self.origin = int(origin)
        rng = np.random.default_rng(self.cfg.seed)
        for h in self.horizons:
            cuts = [c for c in cutoffs if c + h <= origin]
            if not cuts:
                raise InputError(f"no training window of {h / DAY:g} days ends by the fit origin: add earlier cutoffs or move the origin later")
            sc = SignalContext(seq, baskets, self.tifu[h])
            xs_all, ys_all, xs_new, ys_new, gs_all, gs_new = [], [], [], [], [], []
            windows = []
            for c in cuts:
                s = build_samples(seq, [c], [h], min_history=min_history, visible_until=origin, users=users)
                s = s.subset(np.flatnonzero(s.observed[:, 0] & (s.counts[:, 0, 1:].sum(-1) > 0)))
                if len(s):
                    windows.append((c, s))
            positives = sum(int((s.counts[:, 0, 1:] > 0).sum()) for _, s in windows)
            rate = self._negative_rate(positives, sum(s.counts[:, 0, 1:].size for _, s in windows) - positives, h)
            for c, s in windows:
                X = signals(s, seq, 0, sc, self.cfg.narrow_k)[:, 1:]  # (S, C - 1, F): never category 0
                y = s.counts[:, 0, 1:] > 0
                last_cut = c
                keep = y | (rng.random(y.shape) < rate)
                xs_all.append(X[keep])
                ys_all.append(y[keep])
                gs_all.append(keep.sum(1))
                if self.cfg.new_list:
                    new = X[:, :, FEATURES.index("ptop")] == 0
                    xs_new.append(X[new & keep])
                    ys_new.append(y[new & keep])
                    gs_new.append((new & keep).sum(1))
            if not xs_all:
                raise InputError(f"no training sample of horizon {h / DAY:g} days has an event in its window")
            y_all = np.concatenate(ys_all)
            m_all = self._train(np.concatenate(xs_all), y_all, np.concatenate(gs_all))
            m_new = None
            if self.cfg.new_list and sum(y.sum() for y in ys_new) > 0:
                m_new = self._train(np.concatenate(xs_new), np.concatenate(ys_new), np.concatenate(gs_new))
            # The engagement map: every (user, category) pair of the latest training cutoff, users
            # with no event in the window included (the ranker trains on active users only, but a
            # forecast's probability is not conditioned on the user being active).
            sl = build_samples(seq, [last_cut], [h], min_history=min_history, visible_until=origin, users=users)
            sl = sl.subset(np.flatnonzero(sl.observed[:, 0]))
            Xl = signals(sl, seq, 0, sc, self.cfg.narrow_k)[:, 1:]
            yl = sl.counts[:, 0, 1:] > 0
            raw = m_all.predict(Xl.reshape(-1, Xl.shape[-1]))
            cal = IsotonicCalibrator().fit(raw, yl.reshape(-1))
            self.models[h] = RankerModels(m_all.model_to_string(), None if m_new is None else m_new.model_to_string(), cal.to_dict())
            self.history.append({"horizon": h, "origin": int(origin), "cutoffs": len(cuts), "rows": int(len(y_all)),
                                 "positives": int(y_all.sum()), "negative_rate": rate, "seconds": time.perf_counter() - t0})
            logger.info("ranker %gd: %d cutoffs, %d rows (%d positive), %.0fs", h / DAY, len(cuts), len(y_all), y_all.sum(), time.perf_counter() - t0)
        return self

    def predict(self, samples: WindowSamples, seq: SequenceData, baskets: np.ndarray, data: SequenceData | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(all, new) scores, each (S, H, C): the probability-like score of engaging with each
        category (category 0 gets -inf); ``new`` is -inf for categories the user had.
        ``seq``: the pool (neighbours, population); ``data``: the samples' histories (default
        the pool)."""
        import lightgbm as lgb

        S, H, C = samples.counts.shape
        out_all = np.full((S, H, C), -np.inf)
        out_new = np.full((S, H, C), -np.inf)
        for j, h in enumerate(samples.horizons):
            m = self.models[int(h)]
            X = signals(samples, seq if data is None else data, j, SignalContext(seq, baskets, self.tifu[int(h)]), self.cfg.narrow_k)[:, 1:]
            flat = X.reshape(-1, X.shape[-1])
            b_all = lgb.Booster(model_str=m.all)
            p_all = b_all.predict(flat[:, _columns(b_all)]).reshape(S, C - 1)
            out_all[:, j, 1:] = p_all
            if m.new is not None:
                b_new = lgb.Booster(model_str=m.new)
                p_new = b_new.predict(flat[:, _columns(b_new)]).reshape(S, C - 1)
            else:
                p_new = p_all
            out_new[:, j, 1:] = np.where(X[:, :, FEATURES.index("ptop")] == 0, p_new, -np.inf)
        return out_all, out_new

    def contributions(self, samples: WindowSamples, seq: SequenceData, baskets: np.ndarray, pairs: list[tuple[int, int, int]],
                      data: SequenceData | None = None) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """For each (sample, horizon index, category) of ``pairs``: (signal values (F,), their
        additive contributions to the `all` ranker's score (F,), the base score) -- LightGBM's
        exact TreeSHAP attributions of the model's raw score."""
        import lightgbm as lgb

        out: list[tuple[np.ndarray, np.ndarray, float] | None] = [None] * len(pairs)
        for j in sorted({j for _, j, _ in pairs}):  # the signals of a horizon once for every sample it needs
            h = int(samples.horizons[j])
            idx = [n for n, (_, jj, _) in enumerate(pairs) if jj == j]
            rows = np.unique([pairs[n][0] for n in idx])
            X = signals(samples.subset(rows), seq if data is None else data, j, SignalContext(seq, baskets, self.tifu[h]), self.cfg.narrow_k)
            b = lgb.Booster(model_str=self.models[h].all)
            cols = _columns(b)
            at = [(int(np.searchsorted(rows, pairs[n][0])), pairs[n][2]) for n in idx]
            vals = np.stack([X[r, c] for r, c in at])  # (n, F)
            contrib = b.predict(vals[:, cols], pred_contrib=True)  # (n, len(cols) + 1)
            for k, n in enumerate(idx):
                full = np.zeros(len(FEATURES))
                full[cols] = contrib[k, :-1]
                out[n] = (vals[k], full, float(contrib[k, -1]))
        return out  # type: ignore[return-value]

    def engagement(self, score: np.ndarray, horizons: tuple[int, ...] | None = None) -> np.ndarray:
        """(S, H, C) probabilities of engaging from the `all` scores: each horizon's isotonic map
        (fitted on every (user, category) pair of the latest training cutoff, users without an
        event in the window included, in-sample) applied
        to the score; -inf scores (never ranked) give 0."""
        hs = tuple(self.horizons if horizons is None else horizons)
        out = np.zeros(score.shape, np.float64)
        for j, h in enumerate(hs):
            cal = self.models[int(h)].calibration
            x = score[:, j]
            fin = np.isfinite(x)
            if cal is None:  # a state from before calibration: a logistic squash, uncalibrated
                out[:, j][fin] = 1 / (1 + np.exp(-x[fin]))
            else:
                out[:, j][fin] = IsotonicCalibrator.from_dict(cal).transform(x[fin])
        return out

    def state(self) -> dict:
        return {
            "kind": "ranker", "config": self.cfg.model_dump(mode="json"), "horizons": list(self.horizons), "origin": self.origin,
            "tifu": {str(h): vars(p) for h, p in self.tifu.items()},
            "models": {str(h): {"all": m.all, "new": m.new, "calibration": m.calibration} for h, m in self.models.items()},
            "history": self.history,
        }

    @classmethod
    def from_state(cls, st: dict) -> RankerForecaster:
        f = cls(RankerConfig.model_validate(st["config"]), tuple(st["horizons"]),
                {int(h): nbr.TifuParams(**p) for h, p in st["tifu"].items()})
        f.models = {int(h): RankerModels(m["all"], m["new"], m.get("calibration")) for h, m in st["models"].items()}
        f.origin = st.get("origin")
        f.history = list(st.get("history", []))
        return f
