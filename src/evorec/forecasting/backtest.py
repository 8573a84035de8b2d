"""Rolling-origin backtest of the interest forecaster against every baseline, per horizon.

Time line (all cutoffs resolved to unix seconds, or positions on order-only data):

    [ training cutoffs every `train_every` ... ] < valid_cutoff <= test cutoffs c1 < c2 < ...

- The forecaster trains on samples at the training cutoffs, with only the windows that end
  before ``valid_cutoff`` (so nothing of the validation or test periods is seen).
- The validation cutoff tunes the baselines (decayed half-life), early-stops the model, and fits
  every calibrator; its windows must end before the first test cutoff.
- Each test cutoff is scored with histories up to it (the model is not refit per origin);
  results are pooled over the test cutoffs per horizon, with bootstrap CIs over samples.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evorec.data.sequences import SequenceData
from evorec.data.splits import Horizon, SplitError, TimePoint, resolve_horizon, resolve_time
from evorec.evaluation.stats import summarize
from evorec.forecasting.baselines import BASELINES, Context, FittedBaseline, fit_baseline, fit_context
from evorec.forecasting.forecaster import Featurizer, Forecaster, ForecasterConfig
from evorec.forecasting.metrics import aggregate_ece, per_user_forecast_metrics
from evorec.forecasting.windows import WindowSamples, build_samples, check_cutoffs, history_features, horizon_unit
from evorec.models.base import DataSizes

logger = logging.getLogger(__name__)

DAY = 86_400
HALF_LIVES_S = [1 * DAY, 7 * DAY, 30 * DAY, 90 * DAY, 365 * DAY, 1825 * DAY]
HALF_LIVES_EVENTS = [1, 3, 10, 30, 100, 300]
METRICS = ("NDCG@5", "NDCG@10", "Recall@5", "JSD", "Brier", "EmergingRecall@10", "FadingPrecision")
LOWER_IS_BETTER = {"JSD", "Brier", "ECE"}


class BacktestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    horizons: list[Horizon] = Field(default_factory=lambda: ["1d", "7d", "30d", "90d"])
    train_every: Horizon = Field("30d", description="spacing of the training cutoffs")
    train_start: TimePoint | None = Field(None, description="first training cutoff (default: the first event + train_every)")
    valid_cutoff: TimePoint
    test_cutoffs: list[TimePoint] = Field(min_length=1)
    min_history: int = Field(1, ge=1, description="samples need this many events before the cutoff")
    max_users: int | None = Field(None, ge=1, description="a seeded random subset of users (quick runs on big logs); None = all")
    baselines: list[str] = Field(default_factory=lambda: list(BASELINES))
    model: ForecasterConfig = Field(default_factory=ForecasterConfig)
    bootstrap: int = Field(1000, ge=0)
    rank_by: Literal["share", "engagement"] = Field(
        "engagement", description="rank categories (NDCG, Recall, emerging recall) by the engagement score or by the share forecast"
    )
    seed: int = 0


def horizon_label(h: int, unit: str) -> str:
    if unit == "events":
        return f"{h}ev"
    for size, suffix in ((DAY, "d"), (3600, "h"), (60, "m")):
        if h % size == 0:
            return f"{h // size}{suffix}"
    return f"{h}s"


def _resolve(seq: SequenceData, cfg: BacktestConfig) -> dict[str, Any]:
    unit = horizon_unit(seq)
    tk = seq.time_kind
    horizons = sorted({resolve_horizon(h, unit) for h in cfg.horizons})
    valid = resolve_time(cfg.valid_cutoff, tk, what="valid_cutoff")
    tests = sorted(resolve_time(c, tk, what="test cutoff") for c in cfg.test_cutoffs)
    every = resolve_horizon(cfg.train_every, unit)
    ts = np.asarray(seq.ts)
    if not len(ts):
        raise SplitError("the dataset has no events")
    first = int(ts.min())
    start = resolve_time(cfg.train_start, tk, what="train_start") if cfg.train_start is not None else first + every
    check_cutoffs(seq, [valid], [min(horizons)], what="valid_cutoff")
    check_cutoffs(seq, tests, horizons, what="test cutoff")
    if valid + max(horizons) > tests[0]:
        raise SplitError(
            f"the validation windows (valid_cutoff + the longest horizon) must end by the first test cutoff; "
            f"move valid_cutoff earlier or the test cutoffs later"
        )
    train_cutoffs = list(range(start, valid - (min(horizons) if unit == "seconds" else 0) + 1, every))
    if not train_cutoffs:
        raise SplitError(f"no training cutoff between train_start and valid_cutoff (every {cfg.train_every})")
    return {"unit": unit, "horizons": horizons, "valid": valid, "tests": tests, "train": train_cutoffs}


def run_backtest(seq: SequenceData, cfg: BacktestConfig) -> tuple[dict[str, Any], Forecaster, Context]:
    """Train, calibrate and score (see the module docstring). Returns (results, model, context)."""
    r = _resolve(seq, cfg)
    unit, horizons = r["unit"], r["horizons"]
    unknown = [b for b in cfg.baselines if b not in BASELINES]
    if unknown:
        raise KeyError(f"unknown baseline {unknown[0]!r}; known: {', '.join(BASELINES)}")
    half_lives = HALF_LIVES_S if unit == "seconds" else HALF_LIVES_EVENTS
    users = None
    if cfg.max_users is not None and cfg.max_users < len(seq):
        users = np.sort(np.random.default_rng(cfg.seed).choice(len(seq), cfg.max_users, replace=False))
    kw = {"min_history": cfg.min_history, "users": users}
    train = build_samples(seq, r["train"], horizons, visible_until=r["valid"], **kw)
    valid = build_samples(seq, [r["valid"]], horizons, visible_until=r["tests"][0], **kw)
    test = build_samples(seq, r["tests"], horizons, **kw)
    logger.info("forecast samples: train %d (%d cutoffs), valid %d, test %d", len(train), len(r["train"]), len(valid), len(test))
    ctx = fit_context(seq, r["valid"], train, unit)
    f_valid = history_features(seq, valid, half_lives)
    f_test = history_features(seq, test, half_lives)
    x_train, x_valid, x_test = (Featurizer(seq, s, ctx, half_lives) for s in (train, valid, test))
    sizes = _sizes(seq)
    model = Forecaster(cfg.model, sizes, tuple(horizons), x_train.n_features).fit(seq, train, x_train, valid, x_valid)
    preds: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {"model": model.predict_ranked(seq, test, x_test)}
    fitted: dict[str, FittedBaseline] = {}
    for b in cfg.baselines:
        fitted[b] = fit_baseline(b, valid, f_valid, ctx)
        preds[b] = fitted[b].predict(test, f_test, ctx)
    out: dict[str, Any] = {
        "unit": unit,
        "note": None if unit == "seconds" else "order-only data: cutoffs are positions and horizons count events",
        "protocol": {
            "users": "all" if users is None else f"{len(users)} of {len(seq)} (seed {cfg.seed})",
            "train_cutoffs": len(r["train"]), "first_train_cutoff": r["train"][0], "valid_cutoff": r["valid"],
            "test_cutoffs": r["tests"], "samples": {"train": len(train), "valid": len(valid), "test": len(test)},
            "confidence_intervals": f"95% percentile bootstrap over (user, cutoff) samples, {cfg.bootstrap} resamples",
            "fading_alert": "a category engaged in the previous window of the same length whose engagement probability is < 0.5",
            "emerging": "a category the user never engaged with before the cutoff",
        },
        "horizons": {},
        "model_training": model.history,
        "tuned": {b: {horizon_label(h, unit): f.half_lives[k] for h, k in fb.half_life_index.items()} for b, fb in fitted.items()
                  if fb.half_life_index for f in [f_valid]},
    }
    for j, h in enumerate(horizons):
        label = horizon_label(h, unit)
        ok = test.observed[:, j]  # whole windows only (order-only data: users with enough later events)
        entry: dict[str, Any] = {"samples": int(ok.sum()), "active_samples": int((test.counts[ok, j].sum(-1) > 0).sum())}
        for name, (dist, engage, rank) in preds.items():
            args = (test.counts[ok, j], f_test.past[ok], f_test.last[j][ok] > 0)
            vec = per_user_forecast_metrics(dist[ok, j], engage[ok, j], *args, ks=(5, 10), recall_ks=(5,))
            if cfg.rank_by == "engagement":  # rank categories by each forecaster's own engagement score
                ranked = per_user_forecast_metrics(_rows(rank[ok, j]), engage[ok, j], *args, ks=(5, 10), recall_ks=(5,))
                vec.update({m: ranked[m] for m in ("NDCG@5", "NDCG@10", "Recall@5", "EmergingRecall@10")})
            means, cis = _summarize({m: vec[m] for m in METRICS}, cfg)
            means["ECE"] = float(aggregate_ece(engage[ok, j], test.counts[ok, j]))
            if name == "model":
                entry["model"], entry["model_ci"] = means, cis
            else:
                entry.setdefault("baselines", {})[name] = means
                entry.setdefault("baselines_ci", {})[name] = cis
        if entry.get("baselines"):
            best = max(entry["baselines"], key=lambda b: entry["baselines"][b]["NDCG@10"])
            m, b = entry["model"]["NDCG@10"], entry["baselines"][best]["NDCG@10"]
            lo_m = entry["model_ci"]["NDCG@10"]
            hi_b = entry["baselines_ci"][best]["NDCG@10"]
            entry["vs_best_baseline"] = {
                "baseline": best,
                "NDCG@10_lift": (m / b - 1) if b > 0 else None,
                "cis_overlap": None if lo_m is None or hi_b is None else bool(lo_m[0] <= hi_b[1]),
            }
        entry["calibration"] = {"temperature": model.temperature[h].temperature if h in model.temperature else None}
        out["horizons"][label] = entry
    return out, model, ctx


def _summarize(cols: dict[str, np.ndarray], cfg: BacktestConfig) -> tuple[dict[str, float], dict[str, list[float] | None]]:
    means, cis = {}, {}
    for k, v in cols.items():
        v = np.asarray(v, dtype=np.float64)
        v = v[~np.isnan(v)]
        means[k] = float(v.mean()) if len(v) else float("nan")
        if cfg.bootstrap and len(v) >= 2:
            s = summarize({k: v}, n_boot=cfg.bootstrap, seed=cfg.seed)[k]
            cis[k] = [s["lo"], s["hi"]]
        else:
            cis[k] = None
    return means, cis


def _rows(x: np.ndarray) -> np.ndarray:
    """Scores as rows summing to 1 (order kept) for the metric function's distribution argument."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0, None) + 1e-12
    return x / x.sum(-1, keepdims=True)


def _sizes(seq: SequenceData) -> DataSizes:
    cat = np.zeros(seq.items.size, dtype=np.int64)
    if seq.n_events:
        cat[np.asarray(seq.item)] = np.asarray(seq.category)
    return DataSizes(n_items=seq.items.size, n_categories=seq.categories.size, item_category=tuple(int(c) for c in cat))
