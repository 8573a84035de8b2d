"""From memory-mapped sequences + a split to ``SequenceBatch``es: the one place collation happens.

Training uses every position of a window in one pass (inputs = events[:-1], targets = items[1:]),
so memory does not grow with the number of prefixes. Evaluation gives each fold user's history
(strictly before the target, per the split) and the target.

All gathering is vectorised numpy over the memory-mapped arrays; no text is parsed per batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from evorec.data.sequences import SequenceData
from evorec.data.splits import Split
from evorec.errors import InputError, NotFoundError
from evorec.types import BEHAVIOR_INDEX, SequenceBatch


@dataclass
class TrainView:
    """The training part of a sequence store: user row u owns events [offsets[u], end[u])."""

    seq: SequenceData
    end: np.ndarray  # (n_users,) int64 global end position (exclusive) of each user's training events
    target_behaviors: np.ndarray | None = None  # behaviour indices allowed as targets (None = any)

    @classmethod
    def from_split(cls, seq: SequenceData, split: Split, train: str = "train", target_behaviors=None) -> TrainView:
        if train not in split.train_ends:
            raise NotFoundError(f"split has no training part {train!r}; it has {sorted(split.train_ends)}")
        tb = None
        if target_behaviors:
            tb = np.array([BEHAVIOR_INDEX[b] for b in target_behaviors], dtype=np.int64)
        return cls(seq, np.asarray(split.train_ends[train], dtype=np.int64), tb)

    @property
    def start(self) -> np.ndarray:
        return np.asarray(self.seq.offsets[:-1], dtype=np.int64)

    @property
    def lengths(self) -> np.ndarray:
        return np.maximum(self.end - self.start, 0)

    @property
    def n_events(self) -> int:
        return int(self.lengths.sum())

    def user_arrays(self, u: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        a, b = int(self.seq.offsets[u]), int(self.end[u])
        s = self.seq
        return s.item[a:b], s.category[a:b], s.behavior[a:b], s.ts[a:b]


def gather(seq: SequenceData, starts: np.ndarray, ends: np.ndarray, T: int) -> dict[str, np.ndarray]:
    """Left-padded (B, T) arrays of the last <= T events in [start, end) of each row."""
    pos = ends[:, None] - T + np.arange(T)[None, :]  # (B, T) global positions
    valid = pos >= starts[:, None]
    safe = np.where(valid, pos, 0)
    if seq.n_events == 0:
        safe = np.zeros_like(safe)
        valid = np.zeros_like(valid)
    out = {
        "items": np.where(valid, np.asarray(seq.item)[safe] if seq.n_events else 0, 0).astype(np.int64),
        "categories": np.where(valid, np.asarray(seq.category)[safe] if seq.n_events else 0, 0).astype(np.int64),
        "behaviors": np.where(valid, np.asarray(seq.behavior)[safe] if seq.n_events else 0, 0).astype(np.int64),
        "timestamps": np.where(valid, np.asarray(seq.ts)[safe] if seq.n_events else 0, 0).astype(np.int64),
        "mask": valid,
    }
    basket = getattr(seq, "basket", None)  # per-user basket numbers (SequenceData.basket)
    if basket is not None:
        out["baskets"] = np.where(valid, np.asarray(basket)[safe] if seq.n_events else 0, 0).astype(np.int64)
    return out


def trim_padding(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop leading columns that are padding in every row (positions stay right-aligned)."""
    mask = arrays["mask"]
    if mask.shape[1] == 0:
        return arrays
    any_col = mask.any(axis=0)
    first = int(np.argmax(any_col)) if any_col.any() else mask.shape[1] - 1
    if first == 0:
        return arrays
    return {k: v[:, first:] for k, v in arrays.items()}


def to_batch(arrays: dict[str, np.ndarray], query_ts: np.ndarray, users: np.ndarray, device="cpu") -> SequenceBatch:
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    return SequenceBatch(
        items=t["items"],
        categories=t["categories"],
        behaviors=t["behaviors"],
        timestamps=t["timestamps"],
        mask=t["mask"],
        query_ts=torch.from_numpy(np.asarray(query_ts, dtype=np.int64)),
        users=torch.from_numpy(np.asarray(users, dtype=np.int64)),
        targets=t.get("targets"),
        target_behaviors=t.get("target_behaviors"),
        baskets=t.get("baskets"),
    ).to(device)


WindowMode = Literal["last", "all", "prefixes"]


def training_windows(view: TrainView, max_len: int, mode: WindowMode = "last") -> tuple[np.ndarray, np.ndarray]:
    """(users, window ends) of the training samples.

    - ``last``: one window per user, its latest max_len+1 events (targets at every position);
    - ``all``: consecutive windows covering the whole training history (long histories fully used);
    - ``prefixes``: one sample per training target: the max_len events before it and the target,
      whose loss is taken at the last position only (RecBole's and the S3-Rec code's sampling). Each
      batch then mixes as many users as it has rows, and an epoch takes ~(targets / windows) times
      more optimizer steps. With ``view.target_behaviors`` only prefixes ending in such a target.
    """
    lengths = view.lengths
    users = np.flatnonzero(lengths >= 2)
    ends = view.end[users]
    if mode == "last":
        return users.astype(np.int64), ends.astype(np.int64)
    if mode == "prefixes":
        # The window of target j ends just after it: ends start+2 .. end (targets are events 2..n).
        which, rep_ends = expand_ranges(view.start[users] + 2, lengths[users] - 1)
        rep_users = users[which]
        if view.target_behaviors is not None and len(rep_ends):
            keep = np.isin(np.asarray(view.seq.behavior)[rep_ends - 1], view.target_behaviors)
            rep_users, rep_ends = rep_users[keep], rep_ends[keep]
        return rep_users.astype(np.int64), rep_ends.astype(np.int64)
    # Windows of max_len targets each, stepping back from the end; they overlap by one event.
    n_win = np.ceil((lengths[users] - 1) / max_len).astype(np.int64)
    which, k = expand_ranges(np.zeros(len(users), np.int64), n_win)  # k: window number from the end
    rep_users = users[which]
    rep_ends = ends[which] - k * max_len
    return rep_users.astype(np.int64), rep_ends.astype(np.int64)


def count_training_batches(n_windows: int, batch_size: int, bucket: int = 50) -> int:
    """How many batches ``training_batches`` yields for ``n_windows`` windows."""
    if bucket <= 1:
        return math.ceil(n_windows / batch_size)
    group = batch_size * bucket
    full, rest = divmod(n_windows, group)
    return full * bucket + math.ceil(rest / batch_size)


def training_batches(
    view: TrainView,
    max_len: int,
    batch_size: int,
    rng: np.random.Generator,
    *,
    mode: WindowMode = "last",
    device="cpu",
    bucket: int = 50,
) -> Iterator[SequenceBatch]:
    """Shuffled training batches of (B, <= max_len) inputs with next-item targets at every position
    (with ``mode="prefixes"`` at the last position only).

    With ``bucket`` > 1, windows are shuffled, then sorted by length within groups of ``bucket``
    batches, and the batches are shuffled again: each batch holds windows of similar length,
    so trimming the all-padding columns skips most of the padding of short histories.
    """
    users, ends = training_windows(view, max_len, mode)
    starts_all = view.start
    order = rng.permutation(len(users))
    if bucket > 1 and len(order):
        win_len = np.minimum(ends[order] - starts_all[users[order]], max_len + 1)
        group = batch_size * bucket
        chunks = []
        for g in range(0, len(order), group):
            part = order[g : g + group]
            part = part[np.argsort(win_len[g : g + group], kind="stable")]
            chunks.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
        batch_list = [chunks[i] for i in rng.permutation(len(chunks))]
    else:
        batch_list = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for idx in batch_list:
        u, e = users[idx], ends[idx]
        s = starts_all[u]
        full = gather(view.seq, s, e, max_len + 1)  # (B, T+1)
        arrays = {k: v[:, :-1] for k, v in full.items()}
        targets = np.where(full["mask"][:, 1:] & full["mask"][:, :-1], full["items"][:, 1:], 0)
        if mode == "prefixes":
            targets[:, :-1] = 0  # one target per sample: the event that ends its window
        tb = full["behaviors"][:, 1:]
        if view.target_behaviors is not None:
            targets = np.where(np.isin(tb, view.target_behaviors), targets, 0)
        arrays["targets"] = targets
        arrays["target_behaviors"] = np.where(targets > 0, tb, 0)
        arrays = trim_padding(arrays)
        last = np.asarray(view.seq.ts)[np.maximum(e - 1, 0)] if view.seq.n_events else np.zeros(len(u), np.int64)
        yield to_batch(arrays, last, u, device)


@dataclass
class EvalSet:
    """Histories and targets of one fold, ready to score in batches."""

    users: np.ndarray  # (N,) user rows
    hist_start: np.ndarray  # (N,) global positions
    hist_end: np.ndarray  # (N,) exclusive
    target_item: np.ndarray  # (N,) item index of the first target
    target_ts: np.ndarray  # (N,)
    target_pos: np.ndarray  # (N,) global position of the first target

    def take(self, idx: np.ndarray) -> EvalSet:
        """The rows ``idx`` of this set."""
        return EvalSet(*(getattr(self, f)[idx] for f in ("users", "hist_start", "hist_end", "target_item", "target_ts", "target_pos")))


def eval_set(seq: SequenceData, split: Split, fold: str) -> EvalSet:
    """The first target of every fold user (next-item evaluation)."""
    if fold not in split.folds:
        raise NotFoundError(f"split has no fold {fold!r}; it has {sorted(split.folds)}")
    if split.seq_fingerprint != seq.fingerprint:
        raise InputError(
            f"split was made for sequences {split.seq_fingerprint[:12]} but these are {seq.fingerprint[:12]}"
        )
    f = split.folds[fold]
    users = np.asarray(f.users, dtype=np.int64)
    has = np.diff(np.asarray(f.tgt_offsets)) > 0
    first = np.asarray(f.tgt_pos)[np.asarray(f.tgt_offsets)[:-1][has]]
    users = users[has]
    hist_end = np.asarray(f.hist_end, dtype=np.int64)[has]
    starts = np.asarray(seq.offsets, dtype=np.int64)[users]
    return EvalSet(
        users=users,
        hist_start=starts,
        hist_end=hist_end,
        target_item=np.asarray(seq.item)[first].astype(np.int64),
        target_ts=np.asarray(seq.ts)[first].astype(np.int64),
        target_pos=first.astype(np.int64),
    )


def eval_batches(seq: SequenceData, es: EvalSet, max_len: int, batch_size: int, device="cpu") -> Iterator[tuple[slice, SequenceBatch]]:
    """(rows of the EvalSet, batch) pairs; histories are the last max_len events before the target."""
    for i in range(0, len(es.users), batch_size):
        sl = slice(i, min(i + batch_size, len(es.users)))
        arrays = trim_padding(gather(seq, es.hist_start[sl], es.hist_end[sl], max_len))
        yield sl, to_batch(arrays, es.target_ts[sl], es.users[sl], device)


def eval_batches_by_length(
    seq: SequenceData, es: EvalSet, max_len: int, batch_size: int, device="cpu"
) -> Iterator[tuple[np.ndarray, SequenceBatch]]:
    """Like :func:`eval_batches`, but each batch holds histories of similar length: ``(rows, batch)``
    with ``rows`` the EvalSet rows (int64, ascending history length, stable).

    A batch is padded to its longest history, so in EvalSet order nearly every batch of a dataset
    with a few long histories runs at full ``max_len``; sorted, most batches are a few events wide.
    Scores per row are the same either way (padding is masked); only the order of work differs."""
    lengths = np.minimum(np.maximum(es.hist_end - es.hist_start, 0), max_len)
    order = np.argsort(lengths, kind="stable").astype(np.int64)
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        arrays = trim_padding(gather(seq, es.hist_start[rows], es.hist_end[rows], max_len))
        yield rows, to_batch(arrays, es.target_ts[rows], es.users[rows], device)


def expand_ranges(lo: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ranges ``lo[i] .. lo[i] + n[i] - 1``: ``(which, value)`` int64 arrays of total length
    ``n.sum()``, ``which`` the range each value comes from, in order."""
    lo, n = np.asarray(lo, dtype=np.int64), np.asarray(n, dtype=np.int64)
    which = np.repeat(np.arange(len(n), dtype=np.int64), n)
    return which, np.repeat(lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()), dtype=np.int64)


def history_items(seq: SequenceData, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs of every item in each row's whole history (for excluding seen items)."""
    rows, pos = expand_ranges(starts, np.maximum(ends - starts, 0))
    items = np.asarray(seq.item)[pos] if len(pos) else np.zeros(0, np.int64)
    return rows.astype(np.int64), items.astype(np.int64)
