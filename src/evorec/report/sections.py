"""What a report shows, computed from runs: each function turns loaded runs into a
:class:`Section` (figures as specs, tables, notes) and never draws anything itself.

- :func:`dataset_overview`: events per period by behaviour, sequence lengths, the long tails.
- :func:`model_comparison`: test metrics with confidence intervals beside published numbers,
  validation NDCG vs wall-clock seconds, and the next-category confusion matrix.
- :func:`interest_evolution`: population category shares with the forecast and its band after
  the cutoff, a Sankey of each user's dominant interest between periods, metrics per horizon.
- :func:`segments_section`: the users' forecast trajectories in 2-D, coloured by segment.
- :func:`user_page`: one user's interest stream graph with the forecast, recommendations and
  what drove them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from evorec.data.sequences import SequenceData
from evorec.forecasting.payload import ForecasterPayload
from evorec.models.checkpoint import ModelCheckpoint
from evorec.report.figures import PALETTE, Areas, BarGroup, Bars, Figure, Flows, Grid, Lines, Points, Series
from evorec.types import BEHAVIORS, TimeKind
from evorec.utils.timeutil import DAY, resolve_time, utc_iso

logger = logging.getLogger(__name__)

TOP_CATEGORIES = 8


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ModelRun:
    """A training run loaded for a report: its checkpoint, data, metrics and training history."""

    path: Path
    name: str  # label shown in figures (directory name)
    model: str
    dataset: str
    checkpoint: ModelCheckpoint
    seq: SequenceData
    metrics: dict[str, Any]
    history: dict[str, Any] | None
    per_user: Any  # pyarrow.Table | None

    @cached_property
    def recommender(self):  # -> a Recommender
        """The trained model (built once, on first use)."""
        return self.checkpoint.build_model()


@dataclass
class ForecastRun:
    """A forecast run loaded for a report: its trained forecaster, data and backtest."""

    path: Path
    name: str
    dataset: str
    forecaster: ForecasterPayload
    seq: SequenceData
    backtest: dict[str, Any]


# -- time helpers -------------------------------------------------------------------------------


def _period(span_s: float) -> tuple[str, str]:
    """(numpy unit, label) of a bucket giving ~30-150 buckets over ``span_s`` seconds."""
    days = span_s / DAY
    for unit, label, size in (("D", "day", 1), ("W", "week", 7), ("M", "month", 30.4), ("Y", "year", 365.25)):
        if days / size <= 150:
            return unit, label
    return "Y", "year"


def _floor(ts: np.ndarray, unit: str) -> np.ndarray:
    return np.asarray(ts, dtype="datetime64[s]").astype(f"datetime64[{unit}]")


def _top_categories(seq: SequenceData, codes: np.ndarray, n: int = TOP_CATEGORIES) -> tuple[list[int], list[str]]:
    """(category indices of the ``n`` most frequent in ``codes``, their names + 'other')."""
    counts = np.bincount(codes, minlength=len(seq.vocabs.categories) + 1)
    counts[0] = 0  # unknown category
    top = [int(c) for c in np.argsort(-counts, kind="stable")[:n] if counts[c] > 0]
    return top, [category_name(seq, c) for c in top]


def category_name(seq: SequenceData, c: int) -> str:
    return "(unknown)" if c <= 0 else str(seq.vocabs.categories.ids[c - 1].as_py())


def _collapse(codes: np.ndarray, top: list[int]) -> np.ndarray:
    """Map category codes to 0..len(top)-1 for the top ones and len(top) for every other."""
    lut = np.full(int(codes.max(initial=0)) + 1 if len(codes) else 1, len(top), dtype=np.int64)
    for i, c in enumerate(top):
        if c < len(lut):
            lut[c] = i
    return lut[codes] if len(codes) else codes.astype(np.int64)


@dataclass
class _Clock:
    """Time on the x axes: dates on dated data; event positions on order-only data (where ``ts``
    is each user's position and horizons count events)."""

    unix: bool

    def label(self, t: int) -> str | int:
        return utc_iso(t, "date") if self.unix else int(t)

    def span(self, n: int) -> str:
        return (f"{n // DAY} days" if n % DAY == 0 else f"{n / DAY:.1f} days") if self.unix else f"{n} events"

    def buckets(self, ts: np.ndarray, start: int, end: int) -> tuple[list[Any], np.ndarray, str]:
        """(x of every bucket in [start, end), bucket of each of ``ts``, bucket name); empty
        buckets are kept so that inactivity shows."""
        if self.unix:
            unit, name = _period(float(max(end - start, DAY)))
            first = _floor(np.int64(start), unit)
            keys = np.arange(first, _floor(np.int64(max(end - 1, start)), unit) + 1)
            return [str(k) for k in keys.astype("datetime64[D]")], (_floor(ts, unit) - first).astype(np.int64), name
        size = max(1, math.ceil((end - start) / 60))
        first = start // size
        keys = np.arange(first, (max(end - 1, start)) // size + 1)
        return (keys * size).tolist(), (np.asarray(ts) // size - first).astype(np.int64), f"{size} events" if size > 1 else "event"


# -- dataset overview ---------------------------------------------------------------------------


def dataset_overview(seq: SequenceData, dataset: str, fid: str) -> Section:
    n_users, n_events = len(seq), seq.n_events
    ts = np.asarray(seq.ts)
    beh = np.asarray(seq.behavior)
    cat = np.asarray(seq.category)
    item = np.asarray(seq.item)
    lengths = np.diff(np.asarray(seq.offsets))
    unix = seq.time_kind == TimeKind.UNIX
    sec = Section(id=f"{fid}-data", title=f"Dataset: {dataset}")
    summary = [
        ["users", f"{n_users:,}"], ["items", f"{len(seq.vocabs.items):,}"], ["categories", f"{len(seq.vocabs.categories):,}"],
        ["events", f"{n_events:,}"], ["events per user (median)", f"{float(np.median(lengths)) if len(lengths) else 0:g}"],
        ["time", f"{utc_iso(ts.min())} .. {utc_iso(ts.max())}" if unix and n_events else "order only (no calendar time)"],
    ]
    present = np.bincount(beh, minlength=len(BEHAVIORS) + 1)
    summary.append(["behaviours", ", ".join(f"{BEHAVIORS[b - 1]} {present[b]:,}" for b in range(1, len(present)) if present[b])])
    sec.tables.append(Table("Summary", ["", "value"], summary))
    if n_events == 0:
        sec.notes.append("The dataset has no events.")
        return sec

    if unix:
        unit, label = _period(float(ts.max() - ts.min()))
        buckets = _floor(ts, unit)
        keys, inv = np.unique(buckets, return_inverse=True)
        series = []
        for b in range(1, len(BEHAVIORS) + 1):
            if present[b] == 0:
                continue
            y = np.bincount(inv[beh == b], minlength=len(keys))
            series.append(Series(BEHAVIORS[b - 1], [str(k) for k in keys.astype("datetime64[D]")], y.tolist()))
        sec.figures.append(Figure(f"{fid}-events", f"Events per {label} by behaviour", Lines(series, label, "events", x_dates=True),
                                  f"All {n_events:,} events of the prepared sequences, bucketed by {label} (UTC)."))
    else:
        sec.notes.append("Order-only data (no timestamps): events per day cannot be shown; horizons count events, not days.")

    # sequence lengths, log2 bins
    edges = [1]
    while edges[-1] <= max(int(lengths.max()), 1):
        edges.append(edges[-1] * 2)
    hist = np.histogram(lengths, bins=edges)[0]
    labels = [f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
    sec.figures.append(Figure(f"{fid}-lengths", "Sequence length distribution", Bars(labels, [BarGroup("users", hist.tolist())],
                                                                                     x_title="events per user", y_title="users"),
                              f"Users by number of events (log2 bins); median {float(np.median(lengths)):g}, max {int(lengths.max()):,}."))

    # long tails: share of events by rank, categories and items
    tails = []
    for name, codes, _i in (("categories", cat, 0), ("items", item, 1)):
        cnt = np.bincount(codes)[1:]
        cnt = np.sort(cnt[cnt > 0])[::-1]
        if len(cnt) == 0:
            continue
        rank = np.unique(np.geomspace(1, len(cnt), num=min(len(cnt), 200)).astype(int))
        tails.append(Series(name, rank.tolist(), (cnt[rank - 1] / n_events).tolist(), markers=len(rank) < 30))
    sec.figures.append(Figure(f"{fid}-tail", "Long tail: share of events by popularity rank", Lines(tails, "rank", "share of events",
                                                                                                   log_x=True, log_y=True),
                              "How concentrated the log is: rank 1 is the most frequent category / item."))
    top, names = _top_categories(seq, cat, 15)
    if top:
        counts = np.bincount(cat, minlength=max(top) + 1)
        sec.tables.append(Table("Largest categories", ["category", "events", "share"],
                                [[n, f"{int(counts[c]):,}", f"{counts[c] / n_events:.1%}"] for c, n in zip(top, names)]))
    return sec


# -- model comparison ---------------------------------------------------------------------------


def published_numbers(dataset: str) -> tuple[dict[str, dict[str, float]], str | None]:
    """({registry model name: {metric: value}}, source) from the reproduction tables whose data is
    ``dataset`` (e.g. the S3-Rec authors' Beauty table)."""
    from evorec.experiments.tables import tables

    for t in tables().values():
        if t.data.get("dataset") == dataset:
            return {r.model: dict(r.published) for r in t.rows}, f"{t.title} ({t.source}); protocol: {t.protocol}"
    return {}, None


def model_comparison(runs: list[ModelRun], fid: str, metrics: Sequence[str] = ("HR@10", "NDCG@10")) -> Section:
    dataset = runs[0].dataset
    sec = Section(id=f"{fid}-models", title=f"Models on {dataset}")
    pub, source = published_numbers(dataset)
    protos = {json_protocol(r.metrics) for r in runs}
    sec.intro = "Test metrics with 95% bootstrap confidence intervals over users. Protocol: " + "; ".join(sorted(protos))
    labels = [f"{r.name} ({r.model})" if r.name != r.model else r.name for r in runs]
    groups = []
    for i, m in enumerate(metrics):
        vals = [float(r.metrics.get("metrics", {}).get(m, math.nan)) for r in runs]
        lo = [float((r.metrics.get("ci", {}).get(m) or [math.nan, math.nan])[0]) for r in runs]
        hi = [float((r.metrics.get("ci", {}).get(m) or [math.nan, math.nan])[1]) for r in runs]
        groups.append(BarGroup(m, vals, lo, hi, colour=PALETTE[i]))
        published = [pub.get(r.model, {}).get(m, math.nan) for r in runs]
        if any(not math.isnan(v) for v in published):
            groups.append(BarGroup(f"published {m}", published, colour=PALETTE[i], hatched=True))
    sec.figures.append(Figure(f"{fid}-metrics", "Test metrics with 95% confidence intervals", Bars(labels, groups, y_title="value"),
                              "Solid bars: evorec on this data, with 95% intervals; hatched: the published number for the same model"
                              + (f" ({source})." if source else " (none known for this dataset)."), height=440))
    if source:
        sec.notes.append(f"Published numbers: {source}.")

    # time to quality from each run's training history
    series = []
    for r, label in zip(runs, labels):
        hist = (r.history or {}).get("history") or []
        pts = [(h.get("wall_seconds"), h.get("valid/NDCG@10")) for h in hist if h.get("valid/NDCG@10") is not None]
        if pts:
            series.append(Series(label, [p[0] for p in pts], [p[1] for p in pts], markers=True))
    if series:
        hl = []
        for name, vals in pub.items():
            if "NDCG@10" in vals and any(r.model == name for r in runs):
                hl.append((vals["NDCG@10"], f"published {name} test NDCG@10 {vals['NDCG@10']:.4f}"))
        sec.figures.append(Figure(f"{fid}-ttq", "Time to quality: validation NDCG@10 vs wall-clock seconds",
                                  Lines(series, "seconds since start", "validation NDCG@10", hlines=hl),
                                  "One point per validation (full ranking) during training; wall-clock includes validation time."))
    rows = []
    for r, label in zip(runs, labels):
        ms, ci = r.metrics.get("metrics", {}), r.metrics.get("ci", {})
        ts = r.metrics.get("train_state") or {}
        rows.append([label, *(f"{ms[m]:.4f} [{ci[m][0]:.4f}, {ci[m][1]:.4f}]" if m in ms and m in ci else ("-" if m not in ms else f"{ms[m]:.4f}")
                              for m in metrics),
                     ts.get("epoch", "-"), f"{ts['train_seconds']:.0f}" if ts.get("train_seconds") is not None else "-", ts.get("stopped") or "-"])
    sec.tables.append(Table("Test metrics", ["run", *metrics, "epochs", "train s", "stopped"], rows))

    best = max(runs, key=lambda r: r.metrics.get("metrics", {}).get("NDCG@10", -1.0))
    cm = confusion_figure(best, f"{fid}-confusion")
    if cm is not None:
        sec.figures.append(cm)
    return sec


def json_protocol(metrics: dict[str, Any]) -> str:
    p = metrics.get("protocol") or {}
    if not p:
        return "unknown"
    parts = [str(p.get("split", "?")), f"{p.get('ranking', '?')} ranking", "seen items excluded" if p.get("exclude_seen") else "seen items kept"]
    if p.get("max_len"):
        parts.append(f"max length {p['max_len']}")
    return ", ".join(parts)


def confusion_figure(run: ModelRun, fig_id: str, n: int = 12) -> Figure | None:
    """Row-normalised confusion of the next category (true vs predicted), top ``n`` categories."""
    t = run.per_user
    if t is None or "category_true" not in t.schema.names:
        return None
    true = np.asarray(t.column("category_true").to_pylist(), dtype=object)
    pred = np.asarray(t.column("category_pred").to_pylist(), dtype=object)
    ok = np.array([a is not None and b is not None for a, b in zip(true, pred)], dtype=bool)
    true, pred = true[ok], pred[ok]
    if len(true) == 0 or len(set(true.tolist())) < 2:
        return None
    names, counts = np.unique(true, return_counts=True)
    top = [str(x) for x in names[np.argsort(-counts, kind="stable")][:n]]
    keep = set(top)
    tt = np.array([x if x in keep else "other" for x in true], dtype=object)
    pp = np.array([x if x in keep else "other" for x in pred], dtype=object)
    labels = top + (["other"] if ("other" in set(tt.tolist()) | set(pp.tolist())) else [])
    idx = {c: i for i, c in enumerate(labels)}
    z = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(z, ([idx[x] for x in tt], [idx[x] for x in pp]), 1)
    share = z / np.maximum(z.sum(1, keepdims=True), 1)
    acc = float((tt == pp).mean())
    return Figure(fig_id, f"Next-category prediction ({run.name}): true vs predicted", Grid(labels, labels, share, "predicted", "true", text=z),
                  f"Rows: the category of each test user's next item; columns: the category with the highest summed item "
                  f"probability. Cells: share of the row (counts shown). Accuracy {acc:.3f} over {len(tt):,} users.", height=520)


# -- interest evolution -------------------------------------------------------------------------


def forecast_cutoff(run: ForecastRun, cutoff: Any | None) -> int:
    """The report's forecast cutoff: ``cutoff`` when given, else the run's last test cutoff (so
    what happened after it can be shown beside the forecast), else the end of the data."""
    if cutoff is not None:
        return int(resolve_time(cutoff, run.seq.time_kind) if not isinstance(cutoff, (int, np.integer)) else cutoff)
    tc = (run.backtest.get("protocol") or {}).get("test_cutoffs") or []
    if tc:
        return int(resolve_time(tc[-1], run.seq.time_kind))
    return int(np.asarray(run.seq.ts).max()) + 1


def forecast_users(run: ForecastRun, cutoff: int, users: list[str] | None = None):  # untyped: UserForecasts
    from evorec.forecasting.predict import forecast_at

    return forecast_at(run.forecaster, run.seq, cutoff, users=users)


def _bootstrap_shares(dist: np.ndarray, w: np.ndarray, n_boot: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, lower, upper) of the ``w``-weighted mean of ``dist`` (U, K) rows; 95% percentile
    interval over users resampled with replacement."""
    w = np.asarray(w, dtype=np.float64)
    if w.sum() <= 0:
        w = np.ones_like(w)
    mean = (dist * w[:, None]).sum(0) / w.sum()
    rng = np.random.default_rng(seed)
    U = len(w)
    boots = np.empty((n_boot, dist.shape[1]))
    for b in range(n_boot):
        i = rng.integers(0, U, U)
        ww = w[i]
        boots[b] = (dist[i] * ww[:, None]).sum(0) / max(ww.sum(), 1e-12)
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    return mean, lo, hi


def interest_evolution(run: ForecastRun, fid: str, cutoff: Any | None = None, uf: Any = None) -> tuple[Section, Any]:
    """The population section of a forecast run; also returns the forecasts it made (for the
    segment and user sections)."""
    seq = run.seq
    T = forecast_cutoff(run, cutoff)
    uf = uf if uf is not None else forecast_users(run, T)
    sec = Section(id=f"{fid}-evolution", title=f"Interest evolution: {run.dataset}")
    clock = _Clock(seq.time_kind == TimeKind.UNIX and uf.unit == "seconds")
    sec.intro = (f"Forecast run {run.name}: {len(uf.users):,} users with history before the cutoff "
                 f"{utc_iso(T) if clock.unix else f'(event position {T})'}; horizons {', '.join(uf.labels)}.")
    if not clock.unix:
        sec.notes.append("Order-only data: time is each user's event position and horizons count events.")
    ts, cat = np.asarray(seq.ts), np.asarray(seq.category)
    before = ts < T
    top, names = _top_categories(seq, cat[before])
    names = [*names, "other"]
    K = len(names)
    # user-level forecast shares collapsed onto top + other: (U, H, K)
    C = uf.dist.shape[2]
    lut = np.full(C, K - 1)
    for i, c in enumerate(top):
        if c < C:
            lut[c] = i
    collapse = np.zeros((C, K))
    collapse[np.arange(C), lut] = 1.0
    collapse[0] = 0.0  # unknown category: not a share of any shown layer
    dist = uf.dist @ collapse  # (U, H, K)
    dist = dist / np.maximum(dist.sum(2, keepdims=True), 1e-12)

    x, inv, label = clock.buckets(ts[before], int(ts[before].min()) if before.any() else T, T)
    counts = np.zeros((K, len(x)))
    np.add.at(counts, (_collapse(cat[before], top), inv), 1.0)
    shares = counts / np.maximum(counts.sum(0, keepdims=True), 1.0)
    # forecast: users weighted by their events in the window of the same length before the cutoff
    fx, fm, flo, fhi, rx, real = [], [], [], [], [], []
    starts = np.asarray(seq.offsets)[:-1][uf.user_rows]
    ends = np.asarray(seq.offsets)[1:][uf.user_rows]
    for j, h in enumerate(int(h) for h in uf.horizons):
        w = np.array([int(((ts[s:e] >= T - h) & (ts[s:e] < T)).sum()) for s, e in zip(starts, ends)], dtype=np.float64)
        m, lo, hi = _bootstrap_shares(dist[:, j], w, seed=j)
        fx.append(clock.label(T + h))
        fm.append(m)
        flo.append(lo)
        fhi.append(hi)
        win = (ts >= T) & (ts < T + h)
        if win.any() and int(ts.max()) >= T + h - 1:
            rc = np.bincount(_collapse(cat[win], top), minlength=K).astype(float)
            rx.append(clock.label(T + h))
            real.append(rc / max(rc.sum(), 1.0))
    fx, fm, flo, fhi = [clock.label(T), *fx], [fm[0], *fm], [flo[0], *flo], [fhi[0], *fhi]  # the first window's mix from T on
    area = Areas(x, names, shares, x_title=label, y_title="share of events", x_dates=clock.unix, cutoff=clock.label(T),
                 forecast_x=fx, forecast=np.array(fm).T, forecast_lower=np.array(flo).T, forecast_upper=np.array(fhi).T,
                 realised_x=rx or None, realised=np.array(real).T if real else None)
    sec.figures.append(Figure(f"{fid}-shares", "Population category shares over time, with the forecast after the cutoff", area,
                              f"Left of the cutoff: each {label}'s share of events per category (top {K - 1} + other). Right: the "
                              "forecast share of each horizon's window [T, T+h), users weighted by their events in the window of the "
                              "same length before T; the band is a 95% interval over users (bootstrap)"
                              + ("; dotted: what happened." if rx else "."), height=480))
    sec.figures.append(_sankey(run, uf, T, top, names, dist, fid, clock))
    for metric in ("NDCG@10", "JSD"):
        f = _metric_by_horizon(run.backtest, metric, f"{fid}-h-{metric.lower().replace('@', '')}")
        if f is not None:
            sec.figures.append(f)
    return sec, uf


def _sankey(run: ForecastRun, uf: Any, T: int, top: list[int], names: list[str], dist: np.ndarray, fid: str, clock: _Clock) -> Figure:
    seq = run.seq
    ts, cat = np.asarray(seq.ts), np.asarray(seq.category)
    H = int(max(uf.horizons))
    span = T - int(ts.min())
    L = H if 3 * H <= span else max(span // 3, 1)
    K = len(names)
    starts = np.asarray(seq.offsets)[:-1][uf.user_rows]
    ends = np.asarray(seq.offsets)[1:][uf.user_rows]
    stage_names = []
    dom = []
    for k in (3, 2, 1):
        a, b = T - k * L, T - (k - 1) * L
        stage_names.append(f"{clock.label(a)}..{clock.label(b)}")
        d = []
        for s, e in zip(starts, ends):
            m = (ts[s:e] >= a) & (ts[s:e] < b)
            if not m.any():
                d.append("inactive")
                continue
            cc = np.bincount(_collapse(cat[s:e][m], top), minlength=K)
            d.append(names[int(np.argmax(cc))])
        dom.append(d)
    j = int(np.argmin(np.abs(np.asarray(uf.horizons) - L)))
    stage_names.append(f"forecast {uf.labels[j]}")
    dom.append([names[int(np.argmax(row))] for row in dist[:, j]])
    links: dict[tuple[int, str, str], int] = {}
    for s in range(len(dom) - 1):
        for a, b in zip(dom[s], dom[s + 1]):
            links[(s, a, b)] = links.get((s, a, b), 0) + 1
    # accuracy of the forecast dominant category against what happened, for users active after T
    hit = n = 0
    h = int(uf.horizons[j])
    if int(ts.max()) >= T + h - 1:
        for (s, e), p in zip(zip(starts, ends), dom[-1]):
            m = (ts[s:e] >= T) & (ts[s:e] < T + h)
            if m.any():
                n += 1
                hit += names[int(np.argmax(np.bincount(_collapse(cat[s:e][m], top), minlength=K)))] == p
    acc = f" The forecast dominant interest matched the realised one for {hit / n:.1%} of the {n:,} users active in the window." if n else ""
    return Figure(f"{fid}-sankey", "How users' dominant interest moves between periods", Flows(stage_names, [*names, "inactive"],
                  [(s, a, b, v) for (s, a, b), v in sorted(links.items())]),
                  f"Each user's most frequent category per period of {clock.span(L)} before the cutoff, then the forecast's most likely "
                  f"category for {uf.labels[j]}.{acc}", height=480)


def _metric_by_horizon(backtest: dict[str, Any], metric: str, fig_id: str) -> Figure | None:
    hz = backtest.get("horizons") or {}
    labels = [h for h in hz if metric in (hz[h].get("model") or {})]
    if not labels:
        return None
    series = []
    m = [hz[h]["model"][metric] for h in labels]
    ci = [(hz[h].get("model_ci") or {}).get(metric) for h in labels]
    has_ci = all(c is not None for c in ci)
    series.append(Series("model", labels, m, [c[0] for c in ci] if has_ci else None, [c[1] for c in ci] if has_ci else None, markers=True))
    names = list(dict.fromkeys(b for h in labels for b in (hz[h].get("baselines") or {})))
    for b in names:
        vals = [(hz[h].get("baselines") or {}).get(b, {}).get(metric, math.nan) for h in labels]
        series.append(Series(b, labels, vals, dashed=True, markers=True))
    better = "lower is better" if metric in ("JSD", "Brier", "ECE") else "higher is better"
    return Figure(fig_id, f"{metric} by forecast horizon: model vs baselines ({better})", Lines(series, "horizon", metric),
                  "Rolling-origin backtest over the run's test cutoffs; the band is the model's 95% bootstrap interval over users.")


# -- segments -----------------------------------------------------------------------------------


def segments_section(uf: Any, fid: str, dataset: str, horizon: str | None = None) -> Section:
    from evorec.forecasting.segments import SegmentConfig, segments

    h = horizon or uf.labels[-1]
    res = segments(uf, SegmentConfig(horizon=h))
    out = res.export(users=True)
    sec = Section(id=f"{fid}-segments", title=f"Segments: {dataset}")
    if out["withheld"]:
        sec.notes.append(f"Segments withheld: {out['reason']}")
        return sec
    t = out["users"]
    name = {p["segment"]: f"{p['name']} ({p['size']:,})" for p in out["segments"]}
    seg = t.column("segment").to_pylist()
    sec.intro = (f"{out['n_users']:,} users clustered on their current interests and the {h} forecast "
                 f"({out['method']}); segments smaller than {out['min_size']} users are not shown (k-anonymity).")
    sec.figures.append(Figure(f"{fid}-segmap", f"Users' interest trajectories in 2-D (PCA), coloured by segment ({h})",
                              Points(t.column("x").to_pylist(), t.column("y").to_pylist(), [name[s] for s in seg],
                                     hover=[name[s] for s in seg], x_title="PC 1", y_title="PC 2"),
                              "Each point is a user: current interest shares, the forecast shares and their change, standardised.", height=480))

    def fmt(xs: list[dict[str, Any]]) -> str:
        return ", ".join(f"{x['category']} {x['value']:.2f}" for x in xs[:3])

    sec.tables.append(Table("Segment profiles", ["segment", "users", "share", "top now", f"top in {h}", "gains", "losses"],
                            [[p["name"], f"{p['size']:,}", f"{p['share']:.1%}", fmt(p["top_now"]), fmt(p["top_forecast"]),
                              ", ".join(f"{g['category']} +{g['value']:.3f}" for g in p["gains"][:3]),
                              ", ".join(f"{g['category']} {g['value']:.3f}" for g in p["losses"][:3])] for p in out["segments"]]))
    return sec


# -- users --------------------------------------------------------------------------------------


@dataclass
class UserPage:
    user_id: str
    dataset: str
    facts: list[list[Any]]
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def user_row(seq: SequenceData, user_id: str) -> int | None:
    i = seq.vocabs.users.index_of(user_id)
    return i - 1 if i > 0 else None


def sample_users(seq: SequenceData, n: int, min_events: int = 5, seed: int = 0, before: int | None = None) -> list[str]:
    """``n`` user ids drawn at random (seeded) among users with at least ``min_events`` events
    (before ``before`` if given)."""
    off = np.asarray(seq.offsets)
    if before is None:
        counts = np.diff(off)
    else:
        ts = np.asarray(seq.ts)
        counts = np.array([int((ts[a:b] < before).sum()) for a, b in zip(off[:-1], off[1:])])
    ok = np.flatnonzero(counts >= min_events)
    if len(ok) == 0:
        ok = np.flatnonzero(counts > 0)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(ok, size=min(n, len(ok)), replace=False)) if len(ok) else np.array([], dtype=np.int64)
    ids = seq.vocabs.users.ids
    return [str(ids[int(r)].as_py()) for r in pick]


def user_page(
    user_id: str, *, forecast: tuple[ForecastRun, Any, int] | None = None, model: ModelRun | None = None, k: int = 10, fid: str = "u",
) -> UserPage | None:
    """One user's page: the interest stream graph (with the forecast when a forecast run knows the
    user), and the model's recommendations with an explanation of each of the top three."""
    seq = forecast[0].seq if forecast is not None else (model.seq if model is not None else None)
    if seq is None:
        return None
    row = user_row(seq, user_id)
    mrow = user_row(model.seq, user_id) if model is not None else None
    if row is None and mrow is None:
        return None
    if row is None:
        seq, row, forecast = model.seq, mrow, None
    off = np.asarray(seq.offsets)
    a, b = int(off[row]), int(off[row + 1])
    ts, cat = np.asarray(seq.ts)[a:b], np.asarray(seq.category)[a:b]
    unix = seq.time_kind == TimeKind.UNIX
    page = UserPage(user_id, forecast[0].dataset if forecast else model.dataset, [["events", f"{b - a:,}"]])
    if unix and b > a:
        page.facts.append(["first / last event", f"{utc_iso(ts.min())} / {utc_iso(ts.max())}"])
    top, names = _top_categories(seq, cat, 6)
    if top:
        page.facts.append(["top categories", ", ".join(names[:5])])
    page.figures.append(_stream(seq, ts, cat, top, [*names, "other"], forecast, user_id, unix, f"{fid}-stream"))
    if model is not None and mrow is not None:
        _recommendations(page, model, mrow, k, fid)
    elif model is not None:
        page.notes.append(f"The model run {model.name} does not know this user.")
    return page


def _stream(seq, ts, cat, top, names, forecast, user_id, unix, fig_id) -> Figure:
    K = len(names)
    codes = _collapse(cat, top)
    T = forecast[2] if forecast is not None else None
    hist = ts < T if T is not None else np.ones(len(ts), dtype=bool)
    uf_i = None
    if forecast is not None:
        try:
            uf_i = forecast[1].users.index(user_id)
        except ValueError:
            uf_i = None
    clock = _Clock(unix)
    start = int(ts[hist].min()) if hist.any() else (T or 0)
    end = T if T is not None else (int(ts.max()) + 1 if len(ts) else 1)
    x, inv, label = clock.buckets(ts[hist], start, end)
    keys = x
    vals = np.zeros((K, len(keys)))
    np.add.at(vals, (codes[hist], inv), 1.0)
    area = Areas(x, names, vals, x_title=label if unix else "event position", y_title="events", x_dates=unix, centered=True)
    caption = f"The user's events per {label} by category (top {K - 1} + other), as a stream graph."
    if uf_i is not None:
        run, uf, T = forecast
        C = uf.dist.shape[2]
        lut = np.full(C, K - 1)
        for j, c in enumerate(top):
            if c < C:
                lut[c] = j
        f = np.zeros((K, len(uf.horizons)))
        for j in range(len(uf.horizons)):
            np.add.at(f[:, j], lut[1:], uf.dist[uf_i, j, 1:])
        tot = vals.sum(0)
        volume = float(tot[tot > 0].mean()) if (tot > 0).any() else 1.0  # mean events per active bucket
        area.forecast_x = [clock.label(T), *[clock.label(T + int(h)) for h in uf.horizons]]
        area.forecast = np.concatenate([f[:, :1], f], axis=1) * volume
        area.cutoff = clock.label(T)
        p_active = float(uf.engage[uf_i, -1, 1:].max()) if uf.engage.shape[2] > 1 else float("nan")
        caption += (f" After the cutoff: the forecast category mix of each window [T, T+h) ({', '.join(uf.labels)}), drawn at the "
                    f"user's mean volume per active {label} ({volume:.1f} events); the forecaster gives the user's likeliest "
                    f"category a {p_active:.0%} chance of engagement within {uf.labels[-1]}.")
    return Figure(fig_id, "Interest timeline", area, caption, height=380)


def _recommendations(page: UserPage, run: ModelRun, row: int, k: int, fid: str) -> None:
    import torch

    from evorec.data.batches import gather, to_batch
    from evorec.explain.attribution import explain, group

    seq = run.seq
    model = run.recommender
    off = np.asarray(seq.offsets)
    a, b = int(off[row]), int(off[row + 1])
    max_len = run.checkpoint.max_len
    arrays = gather(seq, np.array([a]), np.array([b]), max_len)
    batch = to_batch(arrays, np.array([int(np.asarray(seq.ts)[b - 1]) + 1 if b > a else 0]), np.array([row + 1]))
    with torch.no_grad():
        scores = model.score(batch)[0].float().clone()  # (n_items,)
    scores[0] = -math.inf
    seen = np.unique(np.asarray(seq.item)[a:b])
    scores[torch.from_numpy(seen.astype(np.int64))] = -math.inf
    kk = min(k, int(torch.isfinite(scores).sum()))
    top = torch.topk(scores, kk)
    items = seq.vocabs.items.ids
    item_cat = np.asarray(run.checkpoint.sizes.item_category or [], dtype=np.int64)
    cats = seq.vocabs.categories.ids

    def cat_of(i: int) -> str:
        c = int(item_cat[i]) if i < len(item_cat) else 0
        return str(cats[c - 1].as_py()) if c > 0 else "(unknown)"

    rows = []
    ids = []
    for rank, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
        iid = str(items[i - 1].as_py())
        ids.append((i, iid))
        rows.append([rank, iid, cat_of(i), f"{s:.3f}"])
    page.tables.append(Table(f"Top {kk} recommendations of {run.name} (items already seen excluded)", ["rank", "item", "category", "score"], rows))
    ev_cat = [category_name(seq, int(c)) for c in np.asarray(seq.category)[a:b]]
    now = int(np.asarray(seq.ts)[b - 1]) if b > a else 0
    for n, (i, iid) in enumerate(ids[:3]):
        try:
            att = explain(model, batch, int(i), steps=16)
        except Exception as exc:  # noqa: BLE001 - a model without an explanation path: say so
            page.notes.append(f"No explanation for {iid}: {exc}")
            continue
        pos = np.asarray(att.positions)
        n_real = int(arrays["mask"][0].sum())
        first = a + (b - a) - n_real
        idx = first + (pos - (arrays["mask"].shape[1] - n_real))
        g = group(att, [ev_cat[j - a] for j in idx], now - np.asarray(seq.ts)[idx])
        bc = g["by_category"][:8]
        ba = g["by_age"]
        page.figures.append(Figure(
            f"{fid}-why{n}", f"Why {iid}? Attribution by category and by age of the events ({att.method})",
            Bars([x["category_id"] for x in bc] + [f"[{x['age']}]" for x in ba],
                 [BarGroup("weight", [x["weight"] for x in bc] + [x["weight"] for x in ba])], horizontal=True, x_title="attribution"),
            f"Rank {n + 1} ({cat_of(i)}, score {att.score:.3f}): each past event's contribution to the item's score, summed by "
            "category (top) and by how long ago it happened (bracketed).", height=300))
