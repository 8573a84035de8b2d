"""The baselines every forecast is reported beside.

Each baseline maps (samples, history features) to a category distribution ``dist`` (S, H, C) and
an engagement score (S, H, C) that grows with the chance of engaging with a category in the
window; scores become probabilities through a per-horizon isotonic calibrator fitted on the
validation cutoff (the same treatment as the learned model gets).

- ``persistence``: the last window of the same length repeats (fallback: the whole history).
- ``decayed``: exponentially time-decayed history; the half-life is tuned per horizon on
  validation (category NDCG@10) from the feature grid.
- ``population``: global category shares of the windows before T, extrapolated one window
  ahead with a per-category linear trend; the same for every user.
- ``markov``: category transitions (counted before the training limit) walked from the user's
  latest category for as many steps as a window holds events on average.
- ``ptopfreq``: the number of the user's baskets holding each category (P-TopFreq of the
  next-basket reality check, TOIS 2023).
- ``tifu_knn``: TIFU-KNN (SIGIR 2020) over categories: time-decayed basket vectors blended with
  the k nearest users' (:mod:`evorec.forecasting.nbr`); r_b, r_g, m, k, alpha and the distance
  are tuned per horizon on validation by a grid.

Every baseline is tuned with exactly the ranking it is tested with (its score, ties broken by
the population trend), over every observed validation window. Each gives two rankings: ``all``
(every category) and ``new`` (only categories the user never engaged with, its own scores
restricted to them; TIFU-KNN tunes a separate neighbour setting for it on the new categories'
recall). Category index 0 ("no category") is never ranked: callers score columns ``1:``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from evorec.data.sequences import SequenceData
from evorec.errors import NotFoundError
from evorec.forecasting import nbr
from evorec.forecasting.calibration import IsotonicCalibrator
from evorec.forecasting.metrics import ranking_metrics
from evorec.forecasting.windows import HistoryFeatures, WindowSamples, build_samples, population_shares

logger = logging.getLogger(__name__)

BASELINES = ("persistence", "decayed", "population", "markov", "ptopfreq", "tifu_knn")
TIE = 1e-9  # weight of the population trend that breaks ties of a baseline's own score
MAX_MARKOV_CATEGORIES = 1000  # beyond this a multi-step (C, C) walk costs too much: one step only


def normalize(x: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``x`` (..., C) scaled to sum 1; all-zero rows take ``fallback`` (broadcast) or uniform."""
    x = np.asarray(x, dtype=np.float64)
    s = x.sum(-1, keepdims=True)
    out = np.divide(x, s, out=np.zeros_like(x), where=s > 0)
    empty = (s <= 0)[..., 0]
    if empty.any():
        fb = np.full(x.shape[-1], 1.0 / x.shape[-1]) if fallback is None else np.asarray(fallback, dtype=np.float64)
        out[empty] = np.broadcast_to(fb, out.shape)[empty]
    return out


@dataclass
class Context:
    """What baselines may know: the data up to ``train_limit`` and the population up to each T."""

    seq: SequenceData
    train_limit: int  # events at or after this time are not used to fit anything
    unit: str
    transitions: np.ndarray | None = None  # (C, C) row-stochastic
    steps: dict[int, int] = field(default_factory=dict)  # horizon -> Markov walk length
    _pop: dict[tuple, np.ndarray] = field(default_factory=dict)  # population shares and walks, cached
    _baskets: np.ndarray | None = None

    @property
    def baskets(self) -> np.ndarray:
        """(N,) basket number of every event of ``seq`` within its user (cached)."""
        if self._baskets is None:
            self._baskets = nbr.basket_ordinals(self.seq)
        return self._baskets

    def population_rows(self, samples: WindowSamples, h: int) -> np.ndarray:
        """(S, C) the population trend of each sample's cutoff for horizon ``h``."""
        pop = np.zeros((len(samples), self.seq.categories.size))
        for c in np.unique(samples.cutoff):
            pop[samples.cutoff == c] = self.population(int(c), int(h))
        return pop

    def walk(self, h: int) -> np.ndarray:
        """(C, C) mean of P, P^2, ..., P^steps (cached per horizon)."""
        key = ("walk", int(h))
        if key not in self._pop:
            P = self.transitions
            acc, Pk = np.zeros_like(P), np.eye(P.shape[0])
            for _ in range(self.steps.get(int(h), 1)):
                Pk = Pk @ P
                acc += Pk
            self._pop[key] = acc / max(self.steps.get(int(h), 1), 1)
        return self._pop[key]

    def population(self, cutoff: int, h: int, n_windows: int = 4) -> np.ndarray:
        """(C,) trend-extrapolated population shares for the window [cutoff, cutoff + h); a cutoff
        after the data (a live service) uses the population at the data's end."""
        ts = np.asarray(self.seq.ts)
        if len(ts) and cutoff > int(ts.max()) + 1:
            cutoff = int(ts.max()) + 1
        key = (int(cutoff), int(h))
        if key not in self._pop:
            w = population_shares(self.seq, int(cutoff), int(h), n_windows, self.unit)  # (n, C)
            seen = w.sum(1) > 0
            if seen.sum() >= 2:
                x = np.flatnonzero(seen).astype(np.float64)
                y = w[seen]
                xm = x.mean()
                slope = ((x - xm)[:, None] * (y - y.mean(0))).sum(0) / ((x - xm) ** 2).sum()
                nxt = y.mean(0) + slope * (n_windows - xm)
                self._pop[key] = normalize(np.clip(nxt, 0, None), y.mean(0))
            elif seen.any():
                self._pop[key] = w[seen][-1]
            else:
                self._pop[key] = normalize(np.zeros(w.shape[1]))
        return self._pop[key]


def fit_context(seq: SequenceData, train_limit: int, train_samples: WindowSamples, unit: str) -> Context:
    """Transition matrix and walk lengths from data before ``train_limit``."""
    ctx = Context(seq, int(train_limit), unit)
    n_cat = seq.categories.size
    off = np.asarray(seq.offsets, dtype=np.int64)
    ts = np.asarray(seq.ts)
    cat = np.asarray(seq.category).astype(np.int64)
    if len(ts) > 1:
        same_user = np.ones(len(ts) - 1, dtype=bool)
        same_user[off[1:-1] - 1] = False  # a pair across two users is no transition
        ok = same_user & (ts[1:] < train_limit)
        C = min(n_cat, MAX_MARKOV_CATEGORIES)
        a, b = cat[:-1][ok], cat[1:][ok]
        keep = (a < C) & (b < C)
        counts = np.bincount(a[keep] * C + b[keep], minlength=C * C).reshape(C, C).astype(np.float64)
        counts += 0.01  # add-alpha smoothing: unseen transitions keep a little mass
        ctx.transitions = counts / counts.sum(1, keepdims=True)
    for j, h in enumerate(train_samples.horizons):
        obs = train_samples.observed[:, j]
        n = train_samples.counts[obs, j].sum(-1)
        n = n[n > 0]
        steps = int(np.clip(np.round(n.mean()), 1, 30)) if len(n) else 1
        ctx.steps[int(h)] = steps if n_cat <= MAX_MARKOV_CATEGORIES else 1
    return ctx


@dataclass
class BaselineParams:
    """What tuning chose for one baseline, per horizon."""

    half_life_index: dict[int, int] = field(default_factory=dict)  # decayed
    tifu: dict[int, nbr.TifuParams] = field(default_factory=dict)  # tifu_knn, the `all` list
    tifu_new: dict[int, nbr.TifuParams] = field(default_factory=dict)  # tifu_knn, the `new` list


@dataclass(frozen=True)
class TifuGrid:
    """The grid TIFU-KNN is tuned over on validation (per horizon)."""

    r_b: tuple[float, ...] = (0.9, 1.0)
    r_g: tuple[float, ...] = (0.6, 0.8, 0.9, 1.0)
    m: tuple[int, ...] = (3, 7, 15)
    k: tuple[int, ...] = (50, 100, 300)
    alpha: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9)
    metric: tuple[Literal["cosine", "euclidean"], ...] = ("cosine", "euclidean")


def predict_baseline(
    name: str, samples: WindowSamples, feats: HistoryFeatures, ctx: Context, params: BaselineParams | None = None,
    *, new: bool = False, data: SequenceData | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(dist, score), each (S, H, C). ``new``: the score of the `new` list (TIFU-KNN's setting
    tuned for new categories; other baselines' own score -- the caller restricts it to new
    categories). ``data``: the samples' sequences when they are not ``ctx.seq`` (one user's live
    events); TIFU-KNN then finds the neighbours among ``ctx.seq``'s users at the same cutoff."""
    params = params or BaselineParams()
    S, H, C = samples.counts.shape
    dist = np.zeros((S, H, C), dtype=np.float64)
    score = np.zeros((S, H, C), dtype=np.float64)
    same = data is None or data is ctx.seq
    hist = None
    if name in ("ptopfreq", "tifu_knn"):
        hist = nbr.basket_history(ctx.seq, samples, ctx.baskets) if same else nbr.basket_history(data, samples)
    for j, h in enumerate(samples.horizons):
        pop = ctx.population_rows(samples, int(h))
        if name == "persistence":
            d = normalize(feats.last[j], None)
            none = feats.last[j].sum(1) == 0
            d[none] = normalize(feats.past[none], None) if none.any() else d[none]
            empty = feats.past.sum(1) == 0
            d[empty] = pop[empty]
            dist[:, j] = d
            score[:, j] = feats.last[j] + 1e-3 * feats.past + 1e-6 * pop
        elif name == "decayed":
            k = params.half_life_index.get(int(h), len(feats.half_lives) // 2)
            dec = feats.decayed[k].astype(np.float64)
            d = normalize(dec, None)
            empty = dec.sum(1) == 0
            d[empty] = pop[empty]
            dist[:, j] = d
            score[:, j] = dec + 1e-6 * pop
        elif name == "population":
            dist[:, j] = pop
            score[:, j] = pop
        elif name == "markov":
            P = ctx.transitions
            Cm = P.shape[0]
            v = np.zeros((S, Cm))
            has = feats.last_cat > 0
            v[has, np.minimum(feats.last_cat[has], Cm - 1)] = 1.0
            v[~has] = pop[~has, :Cm]
            acc = v @ ctx.walk(int(h))  # (S, Cm) mean distribution over the walk's steps
            d = np.zeros((S, C))
            d[:, :Cm] = acc
            d = normalize(d, None)
            dist[:, j] = d
            score[:, j] = d + TIE * pop
        elif name == "ptopfreq":
            f = nbr.ptopfreq(hist)
            dist[:, j] = normalize(f, None)
            dist[f.sum(1) == 0, j] = pop[f.sum(1) == 0]
            score[:, j] = f + 1e-6 * pop
        elif name == "tifu_knn":
            p = (params.tifu_new if new else params.tifu).get(int(h), nbr.TifuParams())
            if same:
                own, nn = nbr.tifu_scores(hist, samples.cutoff, p)
            else:
                own, nn = _tifu_against_pool(hist, samples, ctx, p)
            sc = p.alpha * own + (1 - p.alpha) * nn
            dist[:, j] = normalize(sc, pop)
            score[:, j] = sc + TIE * pop
        else:
            raise NotFoundError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return dist, score


def _tifu_against_pool(hist: nbr.BasketHistory, samples: WindowSamples, ctx: Context, p: nbr.TifuParams) -> tuple[np.ndarray, np.ndarray]:
    """TIFU vectors of ``hist`` and the mean of their nearest ``ctx.seq`` users at each cutoff."""
    own = nbr.tifu_vectors(hist, p.r_b, p.r_g, p.m)
    nn = np.zeros_like(own)
    for T in np.unique(samples.cutoff):
        rows = np.flatnonzero(samples.cutoff == T)
        ps = build_samples(ctx.seq, [int(T)], [int(samples.horizons[0])], min_history=1, visible_until=int(T))
        pvec = nbr.tifu_vectors(nbr.basket_history(ctx.seq, ps, ctx.baskets), p.r_b, p.r_g, p.m)
        idx, ok = nbr.nearest(own[rows], pvec, p.k, p.metric)
        nn[rows] = nbr.neighbour_mean(pvec, idx, ok, p.k)
    return own, nn


def new_mask(past: np.ndarray) -> np.ndarray:
    """(S, C) bool: categories the user never engaged with (never category 0)."""
    m = past == 0
    m[:, 0] = False
    return m


def restrict_new(score: np.ndarray, past: np.ndarray) -> np.ndarray:
    """(S, C) ``score`` with every category that is not new to the user pushed below all others."""
    return np.where(new_mask(past), score, -1e300)


def ranking_ndcg(score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(S,) NDCG@10 of ranking categories ``1:`` by ``score`` against ``counts > 0`` (NaN: none)."""
    return ranking_metrics(score[:, 1:], counts[:, 1:] > 0, 10)["NDCG@10"]


def new_list_metrics(score: np.ndarray, counts: np.ndarray, past: np.ndarray) -> dict[str, np.ndarray]:
    """``EmergingRecall@10`` and ``EmergingNDCG@10`` (S,) of the `new` list: categories new to the
    user ranked by ``score``, against the new categories engaged in the window (NaN: none)."""
    m = new_mask(past)
    out = ranking_metrics(restrict_new(score, past)[:, 1:], (m & (counts > 0))[:, 1:], 10)
    return {"EmergingRecall@10": out["Recall@10"], "EmergingNDCG@10": out["NDCG@10"]}


def mean_score(v: np.ndarray) -> float:
    """Mean over the defined values of a per-sample metric (-1 when none is defined)."""
    return float(np.nanmean(v)) if np.isfinite(v).any() else -1.0


@dataclass
class FittedBaseline:
    name: str
    params: BaselineParams
    calibrators: dict[int, IsotonicCalibrator]

    @property
    def half_life_index(self) -> dict[int, int]:
        return self.params.half_life_index

    def predict(
        self, samples: WindowSamples, feats: HistoryFeatures, ctx: Context, data: SequenceData | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dist, engage probabilities, rank score), each (S, H, C); categories rank by the score."""
        dist, score = predict_baseline(self.name, samples, feats, ctx, self.params, data=data)
        engage = np.zeros_like(score)
        for j, h in enumerate(samples.horizons):
            engage[:, j] = self.calibrators[int(h)].transform(score[:, j])
        return dist, engage, score

    def predict_new(self, samples: WindowSamples, feats: HistoryFeatures, ctx: Context, score: np.ndarray | None = None,
                    data: SequenceData | None = None) -> np.ndarray:
        """(S, H, C) the `new` list's score (rank only the categories with ``past == 0``);
        ``score``: the `all` score already computed, reused where the setting is the same."""
        if self.name == "tifu_knn" or score is None:
            _, score = predict_baseline(self.name, samples, feats, ctx, self.params, new=True, data=data)
        return score

    def state(self) -> dict:
        return {
            "kind": "baseline", "name": self.name, "half_life_index": {str(h): k for h, k in self.params.half_life_index.items()},
            "tifu": {str(h): vars(p) for h, p in self.params.tifu.items()},
            "tifu_new": {str(h): vars(p) for h, p in self.params.tifu_new.items()},
            "calibrators": {str(h): c.to_dict() for h, c in self.calibrators.items()},
        }

    @classmethod
    def from_state(cls, st: dict) -> FittedBaseline:
        params = BaselineParams(
            {int(h): int(k) for h, k in st["half_life_index"].items()},
            {int(h): nbr.TifuParams(**p) for h, p in st["tifu"].items()},
            {int(h): nbr.TifuParams(**p) for h, p in st["tifu_new"].items()},
        )
        return cls(st["name"], params, {int(h): IsotonicCalibrator.from_dict(c) for h, c in st["calibrators"].items()})

    @property
    def horizons(self) -> tuple[int, ...]:
        return tuple(sorted(self.calibrators))

    def described(self, half_lives: tuple[float, ...]) -> dict[int, object]:
        """What was tuned, per horizon (for the run's JSON)."""
        if self.name == "decayed":
            return {h: {"half_life": half_lives[k]} for h, k in self.params.half_life_index.items()}
        if self.name == "tifu_knn":
            return {h: {"all": vars(p), "new": vars(self.params.tifu_new[h])} for h, p in self.params.tifu.items()}
        return {}


def tune_tifu(valid: WindowSamples, ctx: Context, js: list[int], grid: TifuGrid) -> dict[int, tuple[nbr.TifuParams, nbr.TifuParams, float, float]]:
    """Per horizon index of ``js``: (best `all` setting by NDCG@10, best `new` setting by
    EmergingRecall@10, their scores) over the observed validation windows of that horizon.

    Horizons whose observed windows are the same samples (a validation cutoff early enough for
    every horizon) share the TIFU vectors and the neighbour search of each grid point: the search
    is the cost, and its result depends on the samples and the setting, not on the horizon."""
    out: dict[int, tuple[nbr.TifuParams, nbr.TifuParams, float, float]] = {}
    groups: dict[bytes, list[int]] = {}
    for j in js:
        groups.setdefault(np.packbits(valid.observed[:, j]).tobytes(), []).append(j)
    for members in groups.values():
        sub = valid.subset(np.flatnonzero(valid.observed[:, members[0]]))
        hist = nbr.basket_history(ctx.seq, sub, ctx.baskets)
        past = nbr.ptopfreq(hist)
        counts = {j: sub.counts[:, j] for j in members}
        pop = {j: ctx.population_rows(sub, int(valid.horizons[j])) for j in members}
        best_all: dict[int, tuple[float, nbr.TifuParams | None]] = {j: (-2.0, None) for j in members}
        best_new: dict[int, tuple[float, float, nbr.TifuParams | None]] = {j: (-2.0, -2.0, None) for j in members}
        kmax = max(grid.k)
        for rb in grid.r_b:
            for rg in grid.r_g:
                for m in grid.m:
                    own = nbr.tifu_vectors(hist, rb, rg, m)
                    for metric in grid.metric:
                        idx, ok = nbr.neighbour_index(own, sub.cutoff, kmax, metric)
                        for k in grid.k:
                            nn = nbr.neighbour_mean(own, idx, ok, k)
                            for j in members:
                                for a in grid.alpha:
                                    v = mean_score(ranking_ndcg(a * own + (1 - a) * nn + TIE * pop[j], counts[j]))
                                    if v > best_all[j][0]:
                                        best_all[j] = (v, nbr.TifuParams(rb, rg, m, k, a, metric))
                                nm = new_list_metrics(nn + TIE * pop[j], counts[j], past)  # own vector is 0 on new categories
                                key = (mean_score(nm["EmergingRecall@10"]), mean_score(nm["EmergingNDCG@10"]))
                                if key > best_new[j][:2]:
                                    best_new[j] = (*key, nbr.TifuParams(rb, rg, m, k, 0.0, metric))
        for j in members:
            pa, pn = best_all[j][1], best_new[j][2]
            assert pa is not None and pn is not None
            out[j] = (pa, pn, best_all[j][0], best_new[j][0])
    return out


def fit_baseline(name: str, valid: WindowSamples, feats: HistoryFeatures, ctx: Context, tifu_grid: TifuGrid | None = None) -> FittedBaseline:
    """Tune (decayed: the half-life; tifu_knn: its grid; per horizon) and calibrate on the
    validation samples, ranking exactly as on test."""
    params = BaselineParams()
    if name == "decayed":
        for j, h in enumerate(valid.horizons):
            obs = valid.observed[:, j]
            sub, fs = valid.subset(np.flatnonzero(obs)), subset_features(feats, obs)
            best, best_k = -2.0, 0
            for k in range(len(feats.half_lives)):
                _, sc = predict_baseline(name, sub, fs, ctx, BaselineParams(half_life_index={int(hh): k for hh in valid.horizons}))
                v = mean_score(ranking_ndcg(sc[:, j], sub.counts[:, j]))
                if v > best:
                    best, best_k = v, k
            params.half_life_index[int(h)] = best_k
            logger.info("decayed baseline, horizon %s: half-life %s (valid NDCG@10 %.4f)", h, feats.half_lives[best_k], best)
    elif name == "tifu_knn":
        tuned = tune_tifu(valid, ctx, list(range(len(valid.horizons))), tifu_grid or TifuGrid())
        for j, h in enumerate(valid.horizons):
            pa, pn, va, vn = tuned[j]
            params.tifu[int(h)], params.tifu_new[int(h)] = pa, pn
            logger.info("tifu_knn, horizon %s: all %s (valid NDCG@10 %.4f); new %s (valid EmergingRecall@10 %.4f)", h, pa, va, pn, vn)
    _, score = predict_baseline(name, valid, feats, ctx, params)
    cals = {}
    for j, h in enumerate(valid.horizons):
        obs = valid.observed[:, j]
        cals[int(h)] = IsotonicCalibrator().fit(score[obs, j], valid.counts[obs, j] > 0)
    return FittedBaseline(name, params, cals)


def subset_features(f: HistoryFeatures, mask: np.ndarray) -> HistoryFeatures:
    """The history features of the samples where ``mask`` is True."""
    return HistoryFeatures(f.past[mask], f.decayed[:, mask], f.last[:, mask], f.recency[mask], f.last_cat[mask], f.half_lives)
