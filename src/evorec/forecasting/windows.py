"""Future-window category targets and past-history features at cutoffs.

A *sample* is (user row, cutoff T). Its history is every event before T; its target for horizon
``h`` is the count of the user's events per category in the window [T, T + h). On order-only
(ordinal) data timestamps are per-user positions, so T is a position and ``h`` counts events
(the next ``h`` events); :func:`evorec.utils.timeutil.horizon_unit` says which, and every output
states it.

Features summarise the history per category at T (all vectorised over samples x categories):

- ``past``: all-history counts; ``decayed[k]``: counts weighted ``0.5 ** (age / half_life[k])``;
- ``last[h]``: counts in the window of the same length just before T (what persistence repeats);
- ``recency``: age of the last event of each category (``inf`` if none); ``last_cat``: the
  category of the latest event (0 if no history).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evorec.data.sequences import SequenceData
from evorec.data.splits import first_at_or_after
from evorec.utils.timeutil import DAY, SplitError, format_time, horizon_unit


@dataclass
class WindowSamples:
    users: np.ndarray  # (S,) int64 user rows
    cutoff: np.ndarray  # (S,) int64 T of each sample
    hist_start: np.ndarray  # (S,) int64 global position of the user's first event
    hist_end: np.ndarray  # (S,) int64 global position of the first event at/after T
    counts: np.ndarray  # (S, H, C) float32 events per category in [T, T + h)
    observed: np.ndarray  # (S, H) bool: the whole window lies in the visible period
    horizons: tuple[int, ...]  # seconds or events
    unit: str

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, idx: np.ndarray) -> WindowSamples:
        return WindowSamples(
            self.users[idx], self.cutoff[idx], self.hist_start[idx], self.hist_end[idx], self.counts[idx],
            self.observed[idx], self.horizons, self.unit,
        )

    def only_horizons(self, horizons: tuple[int, ...]) -> WindowSamples:
        """The same samples with the targets of ``horizons`` (a subset of this one's) only."""
        idx = [self.horizons.index(int(h)) for h in horizons]
        return WindowSamples(
            self.users, self.cutoff, self.hist_start, self.hist_end, self.counts[:, idx], self.observed[:, idx],
            tuple(int(h) for h in horizons), self.unit,
        )

    @staticmethod
    def concat(parts: list[WindowSamples]) -> WindowSamples:
        if not parts:
            raise ValueError("no samples to concatenate")
        p0 = parts[0]
        return WindowSamples(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("users", "cutoff", "hist_start", "hist_end", "counts", "observed")),
            horizons=p0.horizons, unit=p0.unit,
        )


def _window_counts(seq: SequenceData, hist_end: np.ndarray, span_end: np.ndarray, n_categories: int) -> np.ndarray:
    """(S, C) per-category counts of the events in [hist_end, span_end) of each sample."""
    S = len(hist_end)
    lengths = np.maximum(span_end - hist_end, 0)
    total = int(lengths.sum())
    out = np.zeros(S * n_categories, dtype=np.float32)
    if total:
        rows = np.repeat(np.arange(S, dtype=np.int64), lengths)
        pos = np.repeat(hist_end - np.cumsum(lengths) + lengths, lengths) + np.arange(total, dtype=np.int64)
        cat = np.asarray(seq.category)[pos].astype(np.int64)
        out += np.bincount(rows * n_categories + cat, minlength=S * n_categories).astype(np.float32)
    return out.reshape(S, n_categories)


def build_samples(
    seq: SequenceData,
    cutoffs: list[int],
    horizons: list[int],
    *,
    min_history: int = 1,
    visible_until: int | None = None,
    users: np.ndarray | None = None,
) -> WindowSamples:
    """Samples of every (eligible user, cutoff): users with ``>= min_history`` events before T.

    ``visible_until``: windows reaching at or beyond it are not observed (training samples must
    not see the validation period); None means the end of the data."""
    unit = horizon_unit(seq.time_kind)
    off = np.asarray(seq.offsets, dtype=np.int64)
    start, end = off[:-1], off[1:]
    n_cat = seq.categories.size
    ts = np.asarray(seq.ts)
    data_end = int(ts.max()) + 1 if len(ts) else 0
    limit = data_end if visible_until is None else min(int(visible_until), data_end)
    vis_end = end if visible_until is None else first_at_or_after(seq, int(visible_until))
    rows = np.arange(len(start)) if users is None else np.asarray(users, dtype=np.int64)
    parts = []
    for c in cutoffs:
        he_all = first_at_or_after(seq, int(c))
        keep = rows[(he_all[rows] - start[rows]) >= min_history]
        he = he_all[keep]
        counts = np.zeros((len(keep), len(horizons), n_cat), dtype=np.float32)
        observed = np.zeros((len(keep), len(horizons)), dtype=bool)
        for j, h in enumerate(horizons):
            if unit == "seconds":
                span_end = first_at_or_after(seq, int(c) + int(h))[keep]
                observed[:, j] = int(c) + int(h) <= limit
            else:
                span_end = np.minimum(he + int(h), end[keep])
                observed[:, j] = he + int(h) <= vis_end[keep]
            span_end = np.minimum(span_end, vis_end[keep])  # never count what is not visible
            counts[:, j] = _window_counts(seq, he, span_end, n_cat)
        parts.append(
            WindowSamples(keep, np.full(len(keep), int(c), np.int64), start[keep], he, counts, observed, tuple(int(h) for h in horizons), unit)
        )
    return WindowSamples.concat(parts)


def check_cutoffs(seq: SequenceData, cutoffs: list[int], horizons: list[int], *, what: str = "cutoff") -> None:
    """Backtest cutoffs must lie inside the data, with the longest horizon still inside it."""
    ts = np.asarray(seq.ts)
    if not len(ts):
        raise SplitError("the dataset has no events")
    lo, hi = int(ts.min()), int(ts.max())
    tk = seq.time_kind
    unit = horizon_unit(tk)
    for c in cutoffs:
        if not lo < c <= hi:
            raise SplitError(f"{what} {format_time(c, tk)} is outside the data's time span ({format_time(lo, tk)} .. {format_time(hi, tk)})")
        if unit == "seconds" and c + max(horizons) > hi + 1:
            raise SplitError(
                f"{what} {format_time(c, tk)} + horizon {max(horizons) / DAY:g} days ends at {format_time(c + max(horizons), tk)}, "
                f"after the data ends ({format_time(hi, tk)}): the window would be cut short"
            )


@dataclass
class HistoryFeatures:
    past: np.ndarray  # (S, C) all-history counts
    decayed: np.ndarray  # (K, S, C) decayed counts, one per half-life
    last: np.ndarray  # (H, S, C) counts in [T - h, T)
    recency: np.ndarray  # (S, C) age of the category's latest event (inf: never)
    last_cat: np.ndarray  # (S,) category of the latest event (0: no history)
    half_lives: tuple[float, ...]


def history_positions(samples: WindowSamples) -> tuple[np.ndarray, np.ndarray]:
    """(sample index, global event position) of every event of every sample's history, each (E,)."""
    lengths = np.maximum(samples.hist_end - samples.hist_start, 0)
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(samples), dtype=np.int64), lengths)
    pos = np.repeat(samples.hist_start - np.cumsum(lengths) + lengths, lengths) + np.arange(total, dtype=np.int64)
    return rows, pos


def history_features(seq: SequenceData, samples: WindowSamples, half_lives: list[float]) -> HistoryFeatures:
    """Per-category summaries of each sample's history (see the module docstring)."""
    S, n_cat = len(samples), seq.categories.size
    lengths = np.maximum(samples.hist_end - samples.hist_start, 0)
    total = int(lengths.sum())
    rows, pos = history_positions(samples)
    cat = np.asarray(seq.category)[pos].astype(np.int64)
    ts = np.asarray(seq.ts)[pos].astype(np.int64)
    idx = rows * n_cat + cat
    T = samples.cutoff[rows]
    if samples.unit == "events":  # ages in events: how many of the user's events came after this one
        age = (samples.hist_end[rows] - 1 - pos).astype(np.float64)
    else:
        age = (T - ts).astype(np.float64)
    past = np.bincount(idx, minlength=S * n_cat).astype(np.float32).reshape(S, n_cat)
    decayed = np.stack(
        [np.bincount(idx, weights=0.5 ** (age / hl), minlength=S * n_cat).astype(np.float32).reshape(S, n_cat) for hl in half_lives]
    ) if half_lives else np.zeros((0, S, n_cat), np.float32)
    last = np.stack(
        [np.bincount(idx, weights=(age < h).astype(np.float64), minlength=S * n_cat).astype(np.float32).reshape(S, n_cat)
         for h in samples.horizons]
    )
    recency = np.full(S * n_cat, np.inf)
    if total:
        np.minimum.at(recency, idx, age)
    last_cat = np.zeros(S, dtype=np.int64)
    has = lengths > 0
    if has.any():
        last_cat[has] = np.asarray(seq.category)[samples.hist_end[has] - 1]
    return HistoryFeatures(past, decayed, last, recency.reshape(S, n_cat).astype(np.float32), last_cat, tuple(half_lives))


def population_shares(seq: SequenceData, cutoff: int, length: int, n_windows: int, unit: str) -> np.ndarray:
    """(n_windows, C) global category shares in the ``n_windows`` consecutive windows of
    ``length`` before ``cutoff`` (oldest first); on order-only data, by per-user positions."""
    ts = np.asarray(seq.ts)
    cat = np.asarray(seq.category).astype(np.int64)
    n_cat = seq.categories.size
    out = np.zeros((n_windows, n_cat), dtype=np.float64)
    for i in range(n_windows):
        lo = cutoff - (n_windows - i) * length
        hi = lo + length
        sel = (ts >= lo) & (ts < hi)
        c = np.bincount(cat[sel], minlength=n_cat).astype(np.float64)
        out[i] = c / c.sum() if c.sum() else 0.0
    return out
