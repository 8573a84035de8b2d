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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from evorec.data.sequences import SequenceData
from evorec.forecasting.calibration import IsotonicCalibrator
from evorec.forecasting.metrics import per_user_forecast_metrics
from evorec.forecasting.windows import HistoryFeatures, WindowSamples, population_shares

logger = logging.getLogger(__name__)

BASELINES = ("persistence", "decayed", "population", "markov")
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


def predict_baseline(name: str, samples: WindowSamples, feats: HistoryFeatures, ctx: Context, half_life_index: dict[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(dist, score), each (S, H, C)."""
    S, H, C = samples.counts.shape
    dist = np.zeros((S, H, C), dtype=np.float64)
    score = np.zeros((S, H, C), dtype=np.float64)
    cutoffs = np.unique(samples.cutoff)
    for j, h in enumerate(samples.horizons):
        pop = np.zeros((S, C))
        for c in cutoffs:
            pop[samples.cutoff == c] = ctx.population(int(c), int(h))
        if name == "persistence":
            d = normalize(feats.last[j], None)
            none = feats.last[j].sum(1) == 0
            d[none] = normalize(feats.past[none], None) if none.any() else d[none]
            empty = feats.past.sum(1) == 0
            d[empty] = pop[empty]
            dist[:, j] = d
            score[:, j] = feats.last[j] + 1e-3 * feats.past + 1e-6 * pop
        elif name == "decayed":
            k = (half_life_index or {}).get(int(h), len(feats.half_lives) // 2)
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
            score[:, j] = d
        else:
            raise KeyError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return dist, score


@dataclass
class FittedBaseline:
    name: str
    half_life_index: dict[int, int]
    calibrators: dict[int, IsotonicCalibrator]

    def predict(self, samples: WindowSamples, feats: HistoryFeatures, ctx: Context) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dist, engage probabilities, rank score), each (S, H, C); categories rank by the score."""
        dist, score = predict_baseline(self.name, samples, feats, ctx, self.half_life_index)
        engage = np.zeros_like(score)
        for j, h in enumerate(samples.horizons):
            engage[:, j] = self.calibrators[int(h)].transform(score[:, j])
        return dist, engage, score


def fit_baseline(name: str, valid: WindowSamples, feats: HistoryFeatures, ctx: Context) -> FittedBaseline:
    """Tune (decayed: the half-life per horizon) and calibrate on the validation samples."""
    hl_index: dict[int, int] = {}
    if name == "decayed":
        for j, h in enumerate(valid.horizons):
            obs = valid.observed[:, j]
            best, best_k = -1.0, 0
            for k in range(len(feats.half_lives)):
                d, _ = predict_baseline(name, valid.subset(np.flatnonzero(obs)), _sub(feats, obs), ctx, {int(hh): k for hh in valid.horizons})
                m = per_user_forecast_metrics(
                    d[:, j], d[:, j], valid.counts[obs, j], feats.past[obs], feats.last[j][obs] > 0, ks=(10,)
                )["NDCG@10"]
                v = float(np.nanmean(m)) if np.isfinite(m).any() else -1.0
                if v > best:
                    best, best_k = v, k
            hl_index[int(h)] = best_k
            logger.info("decayed baseline, horizon %s: half-life %s (valid NDCG@10 %.4f)", h, feats.half_lives[best_k], best)
    _, score = predict_baseline(name, valid, feats, ctx, hl_index)
    cals = {}
    for j, h in enumerate(valid.horizons):
        obs = valid.observed[:, j]
        cals[int(h)] = IsotonicCalibrator().fit(score[obs, j], valid.counts[obs, j] > 0)
    return FittedBaseline(name, hl_index, cals)


def _sub(f: HistoryFeatures, mask: np.ndarray) -> HistoryFeatures:
    return HistoryFeatures(f.past[mask], f.decayed[:, mask], f.last[:, mask], f.recency[mask], f.last_cat[mask], f.half_lives)
