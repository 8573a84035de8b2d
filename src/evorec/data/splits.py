"""Train / validation / test splits over memory-mapped sequences, as small index arrays.

A :class:`Split` holds

- one or more *training sets*: ``train_ends[key]`` (int64, one per user row): user ``u``
  trains on events ``offsets[u]:train_ends[key][u]``;
- named *folds* (``valid``, ``test``, or one per backtest (cutoff, horizon)), each a list of
  users with, per user, a history end (``history = offsets[u]:hist_end``) and target
  positions (``tgt_pos[tgt_offsets[j]:tgt_offsets[j+1]]`` for the fold's j-th user).

Kinds:

- ``loo``       leave-one-out: per user the last target is test, the second-last validation, the
                rest training. History of a target is every event before it.
- ``time``      global time cut: train < valid_start <= valid < test_start <= test [< test_end].
                History of a target is everything strictly before its fold's cut.
- ``backtest``  rolling origin: for each cutoff and each horizon, history is everything before
                the cutoff and targets are the events in [cutoff, cutoff + horizon) (or the next
                ``horizon`` events when horizons count events, as on ordinal datasets).

``target_behaviors`` restricts which events can be targets (e.g. only ``buy``); histories always
keep every behaviour. :func:`check_no_leakage` proves a split never lets a training or history
row come after its user's target (or after the cut).

Time-respecting folds (time, backtest) never take as a target an item whose first event (over
all users) is at or after the fold's cut: it did not exist for anyone at the cut, so no model
could rank it. The number dropped is kept in each fold's info (``new_item_targets_dropped``)
and the guard refuses a fold that still has such a target.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evorec.data.sequences import SequenceData
from evorec.errors import EvorecError
from evorec.types import BEHAVIOR_INDEX, Behavior, TimeKind
from evorec.utils.io import atomic_directory
from evorec.utils.timeutil import Horizon, SplitError, TimePoint, format_time, horizon_unit, resolve_horizon, resolve_time

logger = logging.getLogger(__name__)

_EVENT_CHUNK = 1 << 22  # events processed at once by the vectorised helpers (bounds memory)


class LeakageError(EvorecError, AssertionError):
    """A split lets a training or history row come after its user's target or the cut."""


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


class _SplitBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_behaviors: list[Behavior] | None = Field(
        None, description="only these behaviours can be targets (None: any); histories keep all"
    )


class LOOSplitConfig(_SplitBase):
    kind: Literal["loo"] = "loo"
    short_users: Literal["train", "drop"] = Field(
        "train",
        description="users without two targets and a history row: all events in training, or dropped",
    )


class TimeSplitConfig(_SplitBase):
    kind: Literal["time"] = "time"
    valid_start: TimePoint
    test_start: TimePoint
    test_end: TimePoint | None = None
    min_history: int = Field(1, ge=0, description="fold users need this many history events")


class BacktestSplitConfig(_SplitBase):
    kind: Literal["backtest"] = "backtest"
    cutoffs: list[TimePoint] = Field(min_length=1)
    horizons: list[Horizon] = Field(min_length=1)
    horizon_unit: Literal["seconds", "events"] | None = Field(
        None, description="None: seconds on unix datasets, events on ordinal ones"
    )
    min_history: int = Field(1, ge=0)


SplitConfig = Annotated[
    LOOSplitConfig | TimeSplitConfig | BacktestSplitConfig, Field(discriminator="kind")
]


# --------------------------------------------------------------------------------------------
# Split containers
# --------------------------------------------------------------------------------------------

FOLD_ARRAYS = ("users", "hist_end", "tgt_offsets", "tgt_pos")


@dataclass
class Fold:
    """Evaluation targets of one fold. ``users`` are user rows (int32, ascending)."""

    name: str
    users: np.ndarray
    hist_end: np.ndarray
    tgt_offsets: np.ndarray
    tgt_pos: np.ndarray
    train: str
    cut: int | None = None  # history strictly before this time (time / backtest folds)
    end: int | None = None  # targets strictly before this time (when the fold has a time end)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_targets(self) -> int:
        return len(self.tgt_pos)

    def targets(self, j: int) -> np.ndarray:
        """Global event positions of the j-th fold user's targets."""
        return self.tgt_pos[self.tgt_offsets[j] : self.tgt_offsets[j + 1]]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "train": self.train,
            "cut": self.cut,
            "end": self.end,
            "n_users": self.n_users,
            "n_targets": self.n_targets,
            **self.info,
        }


@dataclass
class Split:
    kind: str
    config: dict[str, Any]
    time_kind: str
    seq_fingerprint: str
    train_ends: dict[str, np.ndarray]
    train_cuts: dict[str, int | None]
    folds: dict[str, Fold]
    report: dict[str, Any] = field(default_factory=dict)

    def history(self, seq: SequenceData, fold: str, j: int) -> tuple[int, int]:
        """(start, end) global positions of the j-th fold user's history."""
        f = self.folds[fold]
        u = int(f.users[j])
        return int(seq.offsets[u]), int(f.hist_end[j])

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "time_kind": self.time_kind,
            "trains": {k: {"cut": self.train_cuts[k]} for k in self.train_ends},
            "folds": [f.summary() for f in self.folds.values()],
            "report": self.report,
        }

    # -- persistence ----------------------------------------------------------------------

    def save_into(self, directory: str | Path) -> None:
        """Write into an existing directory (see :func:`save_split` for the atomic version)."""
        directory = Path(directory)
        for key, arr in self.train_ends.items():
            np.save(directory / f"{key}.npy", np.asarray(arr, dtype="<i8"))
        for f in self.folds.values():
            d = directory / f.name
            d.mkdir()
            np.save(d / "users.npy", np.asarray(f.users, dtype="<i4"))
            for name in FOLD_ARRAYS[1:]:
                np.save(d / f"{name}.npy", np.asarray(getattr(f, name), dtype="<i8"))
        doc = {**self.summary(), "config": self.config, "seq_fingerprint": self.seq_fingerprint}
        (directory / "split.json").write_text(json.dumps(doc, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> Split:
        directory = Path(directory)
        doc = json.loads((directory / "split.json").read_text())
        train_ends = {k: np.load(directory / f"{k}.npy", mmap_mode="r") for k in doc["trains"]}
        folds = {}
        for fs in doc["folds"]:
            d = directory / fs["name"]
            arrays = {n: np.load(d / f"{n}.npy", mmap_mode="r") for n in FOLD_ARRAYS}
            info = {k: v for k, v in fs.items() if k not in {"name", "train", "cut", "end", "n_users", "n_targets"}}
            folds[fs["name"]] = Fold(
                name=fs["name"], train=fs["train"], cut=fs["cut"], end=fs["end"], info=info, **arrays
            )
        return cls(
            kind=doc["kind"],
            config=doc["config"],
            time_kind=doc["time_kind"],
            seq_fingerprint=doc["seq_fingerprint"],
            train_ends=train_ends,
            train_cuts={k: v["cut"] for k, v in doc["trains"].items()},
            folds=folds,
            report=doc["report"],
        )


def save_split(split: Split, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write a split directory atomically."""
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        split.save_into(tmp)
    return Path(directory)


def load_split(directory: str | Path) -> Split:
    return Split.load(directory)


# --------------------------------------------------------------------------------------------
# Vectorised helpers over the memory-mapped arrays
# --------------------------------------------------------------------------------------------


def _user_chunks(offsets: np.ndarray, max_events: int = _EVENT_CHUNK) -> Iterator[tuple[int, int]]:
    """User-row ranges [u0, u1) covering at most ``max_events`` events (at least one user)."""
    n = len(offsets) - 1
    u0 = 0
    while u0 < n:
        u1 = int(np.searchsorted(offsets, offsets[u0] + max_events, side="right")) - 1
        u1 = min(max(u1, u0 + 1), n)
        yield u0, u1
        u0 = u1


def _first_at_or_after(seq: SequenceData, t: int) -> np.ndarray:
    """Per user row: global position of the first event with ts >= t (user end if none).
    Relies on ts ascending within each user (the sequence order)."""
    offsets = np.asarray(seq.offsets)
    out = np.empty(len(offsets) - 1, dtype=np.int64)
    for u0, u1 in _user_chunks(offsets):
        a, b = int(offsets[u0]), int(offsets[u1])
        cs = np.zeros(b - a + 1, dtype=np.int64)
        np.cumsum(np.asarray(seq.ts[a:b]) < t, out=cs[1:])
        rel = offsets[u0 : u1 + 1] - a
        out[u0:u1] = offsets[u0:u1] + (cs[rel[1:]] - cs[rel[:-1]])
    return out


first_at_or_after = _first_at_or_after  # public name (forecasting windows use it)


def _targets_in_spans(
    seq: SequenceData, span_start: np.ndarray, span_end: np.ndarray, target_idx: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per user row, the positions in [span_start[u], span_end[u]) whose behaviour is a target.

    Returns (counts per user, positions grouped by user ascending)."""
    offsets = np.asarray(seq.offsets)
    n = len(offsets) - 1
    counts = np.zeros(n, dtype=np.int64)
    found: list[np.ndarray] = []
    if target_idx is None:
        # Every event in the span is a target: no need to scan the events.
        s, e = np.asarray(span_start), np.maximum(np.asarray(span_end), span_start)
        counts = (e - s).astype(np.int64)
        total = int(counts.sum())
        if total == 0:
            return counts, np.zeros(0, dtype=np.int64)
        # positions = concat(arange(s[u], e[u])) without a Python loop
        starts_rep = np.repeat(s - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return counts, starts_rep + np.arange(total, dtype=np.int64)
    lengths = np.diff(offsets)
    for u0, u1 in _user_chunks(offsets):
        a, b = int(offsets[u0]), int(offsets[u1])
        owner = np.repeat(np.arange(u0, u1, dtype=np.int64), lengths[u0:u1])
        pos = np.arange(a, b, dtype=np.int64)
        inside = (pos >= span_start[owner]) & (pos < span_end[owner])
        inside &= np.isin(np.asarray(seq.behavior[a:b]), target_idx)
        sel = np.flatnonzero(inside)
        counts[u0:u1] = np.bincount(owner[sel] - u0, minlength=u1 - u0)
        found.append(sel + a)
    return counts, (np.concatenate(found) if found else np.zeros(0, dtype=np.int64))


def item_first_ts(seq: SequenceData) -> np.ndarray:
    """(n_items,) earliest timestamp of each item over all users (int64 max for unseen items).

    An item whose first event is at or after a cut did not exist for anyone before it: the
    time-respecting folds never take it as a target (see :func:`_drop_new_items`)."""
    n_items = seq.items.size
    first = np.full(n_items, np.iinfo(np.int64).max, dtype=np.int64)
    offsets = np.asarray(seq.offsets)
    for u0, u1 in _user_chunks(offsets):
        a, b = int(offsets[u0]), int(offsets[u1])
        np.minimum.at(first, np.asarray(seq.item[a:b], dtype=np.int64), np.asarray(seq.ts[a:b], dtype=np.int64))
    return first


def _drop_new_items(
    seq: SequenceData, counts: np.ndarray, pos: np.ndarray, cut: int, first_ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Remove targets whose item first appears at or after ``cut`` (nobody could know it before).

    Returns (counts per user, positions, number dropped)."""
    if len(pos) == 0:
        return counts, pos, 0
    keep = first_ts[np.asarray(seq.item)[pos].astype(np.int64)] < cut
    if keep.all():
        return counts, pos, 0
    owner = np.repeat(np.arange(len(counts)), counts)
    new_counts = np.bincount(owner[keep], minlength=len(counts)).astype(np.int64)
    return new_counts, pos[keep], int((~keep).sum())


def _make_fold(
    name: str,
    train: str,
    hist_end: np.ndarray,
    counts: np.ndarray,
    positions: np.ndarray,
    eligible: np.ndarray,
    *,
    cut: int | None = None,
    end: int | None = None,
    info: dict[str, Any] | None = None,
) -> Fold:
    """Keep the ``eligible`` users that have at least one target."""
    keep = eligible & (counts > 0)
    users = np.flatnonzero(keep).astype(np.int32)
    pos = positions[np.repeat(keep, counts)]
    kept_counts = counts[keep]
    tgt_offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(kept_counts, out=tgt_offsets[1:])
    return Fold(
        name=name,
        users=users,
        hist_end=hist_end[keep].astype(np.int64),
        tgt_offsets=tgt_offsets,
        tgt_pos=pos.astype(np.int64),
        train=train,
        cut=cut,
        end=end,
        info=info or {},
    )


def _target_indices(cfg: _SplitBase) -> np.ndarray | None:
    if cfg.target_behaviors is None:
        return None
    return np.array(sorted(BEHAVIOR_INDEX[Behavior(b).value] for b in cfg.target_behaviors), dtype=np.int8)


# --------------------------------------------------------------------------------------------
# The three split kinds
# --------------------------------------------------------------------------------------------


def leave_one_out(seq: SequenceData, cfg: LOOSplitConfig | None = None) -> Split:
    """Per user: last target -> test, second-last -> valid, events before it -> train.

    A user needs two targets and at least one event before the validation target; others
    ("short" users) go wholly into training or are dropped (``cfg.short_users``)."""
    cfg = cfg or LOOSplitConfig()
    offsets = np.asarray(seq.offsets)
    start, end = offsets[:-1], offsets[1:]
    target_idx = _target_indices(cfg)
    if target_idx is None:
        counts = end - start
        test_pos, valid_pos = end - 1, end - 2
        has_two = counts >= 2
    else:
        counts, pos = _targets_in_spans(seq, start, end, target_idx)
        last = np.cumsum(counts) - 1
        has_two = counts >= 2
        test_pos = np.full(len(start), -1, dtype=np.int64)
        valid_pos = np.full(len(start), -1, dtype=np.int64)
        test_pos[has_two] = pos[last[has_two]]
        valid_pos[has_two] = pos[last[has_two] - 1]
    eligible = has_two & (valid_pos > start)
    short_fill = end if cfg.short_users == "train" else start
    train_end = np.where(eligible, valid_pos, short_fill).astype(np.int64)
    one = np.ones(len(start), dtype=np.int64)
    folds = {
        "valid": _make_fold("valid", "train", valid_pos, one, valid_pos, eligible),
        "test": _make_fold("test", "train", test_pos, one, test_pos, eligible),
    }
    n_short = int((~eligible).sum())
    report = {
        "n_users": len(start),
        "n_eligible_users": int(eligible.sum()),
        "n_short_users": n_short,
        "short_users": cfg.short_users,
        "n_train_events": int((train_end - start).sum()),
        "n_unused_tail_events": int(np.where(eligible, end - 1 - test_pos, 0).sum()),
    }
    if n_short:
        logger.info(
            "leave-one-out: %d of %d users lack two targets and a history row (policy: %s)",
            n_short,
            len(start),
            cfg.short_users,
        )
    return Split(
        kind="loo",
        config=cfg.model_dump(mode="json"),
        time_kind=seq.time_kind.value,
        seq_fingerprint=seq.fingerprint,
        train_ends={"train": train_end},
        train_cuts={"train": None},
        folds=folds,
        report=report,
    )


def time_split(seq: SequenceData, cfg: TimeSplitConfig) -> Split:
    """Global time cut: train < valid_start <= valid < test_start <= test [< test_end]."""
    tk = seq.time_kind
    t1 = resolve_time(cfg.valid_start, tk, what="valid_start")
    t2 = resolve_time(cfg.test_start, tk, what="test_start")
    t3 = None if cfg.test_end is None else resolve_time(cfg.test_end, tk, what="test_end")
    if not t1 < t2 or (t3 is not None and not t2 < t3):
        raise SplitError(f"time split needs valid_start < test_start [< test_end]; got {t1}, {t2}, {t3}")
    if tk is TimeKind.ORDINAL:
        logger.info("time split on an ordinal dataset: cuts %d/%d are per-user event positions", t1, t2)
    offsets = np.asarray(seq.offsets)
    start, end = offsets[:-1], offsets[1:]
    target_idx = _target_indices(cfg)
    c1 = _first_at_or_after(seq, t1)
    c2 = _first_at_or_after(seq, t2)
    c3 = end if t3 is None else _first_at_or_after(seq, t3)
    first_ts = item_first_ts(seq)
    folds = {}
    for name, hist_end, span_end, cut, stop in (("valid", c1, c2, t1, t2), ("test", c2, c3, t2, t3)):
        counts, pos = _targets_in_spans(seq, hist_end, span_end, target_idx)
        counts, pos, dropped = _drop_new_items(seq, counts, pos, cut, first_ts)
        eligible = (hist_end - start) >= cfg.min_history
        folds[name] = _make_fold(
            name, "train", hist_end, counts, pos, eligible, cut=cut, end=stop, info={"new_item_targets_dropped": dropped}
        )
    report = {
        "n_users": len(start),
        "n_train_events": int((c1 - start).sum()),
        "n_train_users": int((c1 > start).sum()),
        "valid_start": t1,
        "test_start": t2,
        "test_end": t3,
        **{f"n_{k}_users": f.n_users for k, f in folds.items()},
        **{f"n_{k}_targets": f.n_targets for k, f in folds.items()},
        **{f"n_{k}_new_item_targets_dropped": f.info["new_item_targets_dropped"] for k, f in folds.items()},
    }
    return Split(
        kind="time",
        config=cfg.model_dump(mode="json"),
        time_kind=tk.value,
        seq_fingerprint=seq.fingerprint,
        train_ends={"train": c1},
        train_cuts={"train": t1},
        folds=folds,
        report=report,
    )


def backtest_split(seq: SequenceData, cfg: BacktestSplitConfig) -> Split:
    """Rolling origin: one fold per (cutoff, horizon), one training set per cutoff."""
    tk = seq.time_kind
    unit = cfg.horizon_unit or horizon_unit(tk)
    if tk is TimeKind.ORDINAL and unit == "seconds":
        raise SplitError("backtest horizons on an ordinal dataset count events: set horizon_unit: events")
    cutoffs = [resolve_time(c, tk, what="backtest cutoff") for c in cfg.cutoffs]
    if len(set(cutoffs)) != len(cutoffs):
        raise SplitError(f"backtest cutoffs must be distinct; got {cutoffs}")
    horizons = [resolve_horizon(h, unit) for h in cfg.horizons]
    offsets = np.asarray(seq.offsets)
    start, end = offsets[:-1], offsets[1:]
    target_idx = _target_indices(cfg)
    train_ends: dict[str, np.ndarray] = {}
    train_cuts: dict[str, int | None] = {}
    folds: dict[str, Fold] = {}
    first_ts = item_first_ts(seq)
    for ci, c in enumerate(cutoffs):
        key = f"train_c{ci}"
        hist_end = _first_at_or_after(seq, c)
        train_ends[key], train_cuts[key] = hist_end, c
        eligible = (hist_end - start) >= cfg.min_history
        for hi, h in enumerate(horizons):
            if unit == "seconds":
                span_end, stop = _first_at_or_after(seq, c + h), c + h
            else:
                span_end, stop = np.minimum(hist_end + h, end), None
            counts, pos = _targets_in_spans(seq, hist_end, span_end, target_idx)
            counts, pos, dropped = _drop_new_items(seq, counts, pos, c, first_ts)
            name = f"c{ci}_h{hi}"
            folds[name] = _make_fold(
                name,
                key,
                hist_end,
                counts,
                pos,
                eligible,
                cut=c,
                end=stop,
                info={"cutoff": c, "horizon": h, "horizon_unit": unit, "new_item_targets_dropped": dropped},
            )
    report = {
        "n_users": len(start),
        "cutoffs": cutoffs,
        "horizons": horizons,
        "horizon_unit": unit,
        "folds": {
            k: {"n_users": f.n_users, "n_targets": f.n_targets, "new_item_targets_dropped": f.info["new_item_targets_dropped"]}
            for k, f in folds.items()
        },
    }
    return Split(
        kind="backtest",
        config=cfg.model_dump(mode="json"),
        time_kind=tk.value,
        seq_fingerprint=seq.fingerprint,
        train_ends=train_ends,
        train_cuts=train_cuts,
        folds=folds,
        report=report,
    )


def make_split(seq: SequenceData, cfg: LOOSplitConfig | TimeSplitConfig | BacktestSplitConfig) -> Split:
    """Build the split ``cfg`` describes."""
    if isinstance(cfg, LOOSplitConfig):
        return leave_one_out(seq, cfg)
    if isinstance(cfg, TimeSplitConfig):
        return time_split(seq, cfg)
    if isinstance(cfg, BacktestSplitConfig):
        return backtest_split(seq, cfg)
    raise TypeError(f"unknown split config {type(cfg).__name__}")


# --------------------------------------------------------------------------------------------
# Leakage guard
# --------------------------------------------------------------------------------------------


_NO_TS = np.iinfo(np.int64).min


class _Problems:
    """Collects leakage findings, one line per check that fails, naming a first example."""

    def __init__(self, seq: SequenceData, time_kind: TimeKind) -> None:
        self.seq, self.tk, self.lines = seq, time_kind, []

    def user(self, row: int) -> str:
        try:
            return repr(self.seq.users.id_of(int(row) + 1))
        except Exception:  # noqa: BLE001 - only for the message
            return "?"

    def t(self, value: int) -> str:
        return format_time(int(value), self.tk)

    def first(self, bad: np.ndarray) -> int | None:
        idx = np.flatnonzero(bad)
        self._count = len(idx)
        return int(idx[0]) if len(idx) else None

    def add(self, where: str, row: int, what: str) -> None:
        self.lines.append(f"{where}: {self._count} user(s) leak, e.g. user {self.user(row)} (row {int(row)}): {what}")


def _ts_before(ts: np.ndarray, pos_end: np.ndarray, has: np.ndarray) -> np.ndarray:
    """ts of the row just before ``pos_end`` where ``has`` (else int64 min), index-safe."""
    if len(ts) == 0:
        return np.full(len(pos_end), _NO_TS)
    return np.where(has, ts[np.clip(pos_end - 1, 0, len(ts) - 1)], _NO_TS)


def check_no_leakage(split: Split, seq: SequenceData) -> None:
    """Raise :class:`LeakageError` if any training or history row is later than the first
    target of its own user, or (time and backtest splits) not strictly before the cut; also if
    a target lies outside its user, before the cut or at/after the fold's end, or (folds with a
    cut) a target item was only seen at or after the cut.

    Checks positions *and* timestamps, so it also catches sequences that are not time-ordered.
    """
    tk = TimeKind(split.time_kind)
    off = np.asarray(seq.offsets)
    ts = np.asarray(seq.ts)
    n = len(off) - 1
    start, end = off[:-1], off[1:]
    p = _Problems(seq, tk)
    if split.seq_fingerprint != seq.fingerprint:
        p.lines.append(f"split was built for sequences {split.seq_fingerprint}, these are {seq.fingerprint}")
    first_seen: np.ndarray | None = None  # item -> earliest ts, computed when a fold has a cut

    # The sequences themselves must be time-ordered within each user.
    for u0, u1 in _user_chunks(off):
        a, b = int(off[u0]), int(off[u1])
        back = np.flatnonzero(np.diff(ts[a:b]) < 0) + a + 1  # positions earlier than their predecessor
        back = back[~np.isin(back, off)]  # a new user may start earlier in time
        if len(back):
            p.lines.append(f"sequences are not time-ordered: position {back[0]} is earlier than position {back[0] - 1}")
            break

    for key, te in split.train_ends.items():
        te = np.asarray(te, dtype=np.int64)
        if len(te) != n:
            p.lines.append(f"training set {key!r}: {len(te)} entries for {n} users")
            continue
        if (j := p.first((te < start) | (te > end))) is not None:
            p.add(f"training set {key!r}", j, f"end {te[j]} outside the user's events")
        cut = split.train_cuts.get(key)
        last = _ts_before(ts, te, (te > start) & (te <= end))
        if cut is not None and (j := p.first(last >= cut)) is not None:
            p.add(f"training set {key!r}", j, f"training row at {p.t(last[j])} is not before the cut {p.t(cut)}")

    for f in split.folds.values():
        where = f"fold {f.name!r}"
        users = np.asarray(f.users, dtype=np.int64)
        hist_end, tgt_off, tgt_pos = (np.asarray(a, dtype=np.int64) for a in (f.hist_end, f.tgt_offsets, f.tgt_pos))
        if len(users) == 0:
            continue
        counts = np.diff(tgt_off)
        if (
            users.min() < 0
            or users.max() >= n
            or len(hist_end) != len(users)
            or len(tgt_off) != len(users) + 1
            or tgt_off[0] != 0
            or tgt_off[-1] != len(tgt_pos)
            or (counts < 1).any()
        ):
            p.lines.append(f"{where}: malformed (user rows out of range, array lengths differ, or a user without targets)")
            continue
        us, ue = start[users], end[users]
        owner = np.repeat(users, counts)
        if (j := p.first((tgt_pos < start[owner]) | (tgt_pos >= end[owner]))) is not None:
            p.lines.append(f"{where}: target position {tgt_pos[j]} does not belong to user {p.user(owner[j])}")
            continue
        if (j := p.first((hist_end < us) | (hist_end > ue))) is not None:
            p.add(where, users[j], f"history end {hist_end[j]} outside the user's events")
        first = np.minimum.reduceat(tgt_pos, tgt_off[:-1])
        first_ts = ts[first]
        has_hist = (hist_end > us) & (hist_end <= ue)
        last_hist = _ts_before(ts, hist_end, has_hist)
        if (j := p.first(hist_end > first)) is not None:
            p.add(where, users[j], f"history ends at position {hist_end[j]} but the first target is position {first[j]}")
        if (j := p.first(last_hist > first_ts)) is not None:
            p.add(where, users[j], f"history row at {p.t(last_hist[j])} is after the first target at {p.t(first_ts[j])}")
        if f.train not in split.train_ends:
            p.lines.append(f"{where}: unknown training set {f.train!r}")
        else:
            te = np.asarray(split.train_ends[f.train], dtype=np.int64)[users]
            last_train = _ts_before(ts, te, (te > us) & (te <= ue))
            if (j := p.first(te > first)) is not None:
                p.add(where, users[j], f"training ({f.train}) runs to position {te[j]}, the first target is {first[j]}")
            if (j := p.first(last_train > first_ts)) is not None:
                p.add(where, users[j], f"training row at {p.t(last_train[j])} is after the first target at {p.t(first_ts[j])}")
        if f.cut is None:
            continue
        if (j := p.first(last_hist >= f.cut)) is not None:
            p.add(where, users[j], f"history row at {p.t(last_hist[j])} is not before the cut {p.t(f.cut)}")
        tgt_ts = ts[tgt_pos]
        fold_row = np.repeat(np.arange(len(users)), counts)
        early = np.zeros(len(users), dtype=bool)
        np.logical_or.at(early, fold_row, tgt_ts < f.cut)
        if (j := p.first(early)) is not None:
            p.add(where, users[j], f"a target is before the cut {p.t(f.cut)}")
        if first_seen is None:
            first_seen = item_first_ts(seq)
        tgt_items = np.asarray(seq.item)[tgt_pos].astype(np.int64)
        new = np.zeros(len(users), dtype=bool)
        np.logical_or.at(new, fold_row, first_seen[tgt_items] >= f.cut)
        if (j := p.first(new)) is not None:
            k = int(np.flatnonzero((fold_row == j) & (first_seen[tgt_items] >= f.cut))[0])
            p.add(
                where, users[j],
                f"target item {seq.items.id_of(int(tgt_items[k]))!r} was only seen after the cut {p.t(f.cut)} "
                f"(first at {p.t(first_seen[tgt_items[k]])}): no model could know it",
            )
        if f.end is not None:
            late = np.zeros(len(users), dtype=bool)
            np.logical_or.at(late, fold_row, tgt_ts >= f.end)
            if (j := p.first(late)) is not None:
                p.add(where, users[j], f"a target is at or after the fold end {p.t(f.end)}")

    if p.lines:
        raise LeakageError(f"{split.kind} split leaks the future:\n  " + "\n  ".join(p.lines))
