"""Training samples: every window mode covers each training target exactly once, inside its user's
training part; ``prefixes`` puts one target per row, in the last column (here because the real
``tiny`` fold lives in this suite's conftest)."""

from __future__ import annotations

import numpy as np
import pytest

from evorec.data.batches import TrainView, count_training_batches, training_batches, training_windows
from evorec.types import BEHAVIOR_INDEX


def _targets_seen(view: TrainView, mode: str, max_len: int, batch_size: int = 16) -> tuple[np.ndarray, int]:
    """(user, target item, target position from the user's end) of every non-zero target, and the batch count."""
    rows, n = [], 0
    for b in training_batches(view, max_len, batch_size, np.random.default_rng(0), mode=mode):
        n += 1
        t = b.targets.numpy()
        assert t.shape == b.items.shape
        if mode == "prefixes":
            assert (t[:, :-1] == 0).all(), "prefixes: only the last column holds a target"
        r, c = np.nonzero(t)
        rows.append(np.stack([b.users.numpy()[r], t[r, c]], 1))
    return (np.concatenate(rows) if rows else np.zeros((0, 2), np.int64)), n


@pytest.mark.parametrize("max_len", [5, 50])
def test_modes_cover_every_training_target(tiny, max_len):
    seq, split = tiny
    view = TrainView.from_split(seq, split)
    items = np.asarray(seq.item)
    # Expected: every training event but each user's first, as (user, item) pairs.
    exp = np.concatenate([
        np.stack([np.full(e - s - 1, u), items[s + 1: e]], 1)
        for u, (s, e) in enumerate(zip(view.start, view.end)) if e - s >= 2
    ])
    key = lambda a: np.sort(a[:, 0] * 100_000 + a[:, 1])  # noqa: E731 - a one-line key beside its use
    for mode in ("all", "prefixes"):
        got, n_batches = _targets_seen(view, mode, max_len)
        np.testing.assert_array_equal(key(got), key(exp), err_msg=mode)  # each target exactly once
        assert n_batches == count_training_batches(len(training_windows(view, max_len, mode)[0]), 16)
    last, _ = _targets_seen(view, "last", max_len)
    long_users = (view.end - view.start) > max_len + 1
    assert len(last) == len(exp) - int(((view.end - view.start - 1 - max_len)[long_users]).sum())  # the latest max_len each


def test_prefix_windows_end_at_their_target(tiny):
    seq, split = tiny
    view = TrainView.from_split(seq, split)
    users, ends = training_windows(view, 20, "prefixes")
    assert len(users) == int(np.maximum(view.end - view.start - 1, 0).sum())
    assert ((ends - view.start[users]) >= 2).all() and (ends <= view.end[users]).all()  # inside the training part
    b = next(training_batches(view, 20, 8, np.random.default_rng(1), mode="prefixes"))
    items = np.asarray(seq.item)
    # Each row: its history is the (up to) 20 events before the target, right-aligned.
    for r in range(b.size):
        u = int(b.users[r])
        tgt = int(b.targets[r, -1])
        hist = b.items[r][b.mask[r]].numpy()
        cand = [e for e in range(view.start[u] + 2, view.end[u] + 1) if items[e - 1] == tgt
                and np.array_equal(items[max(view.start[u], e - 21): e - 1], hist)]
        assert cand, f"row {r}: no prefix of user {u} ends in target {tgt} after that history"


def test_prefixes_keep_only_target_behaviours(tiny):
    seq, split = tiny
    beh = np.asarray(seq.behavior)
    view = TrainView.from_split(seq, split)
    n_all = len(training_windows(view, 20, "prefixes")[0])
    present = sorted({int(x) for x in np.unique(beh[beh > 0])})
    absent = [i for i in BEHAVIOR_INDEX.values() if i not in present]
    assert present and absent
    # A behaviour that never occurs: no sample at all; the ones that do: every sample, ending in them.
    none = TrainView(seq, view.end, np.array(absent[:1], dtype=np.int64))
    assert len(training_windows(none, 20, "prefixes")[0]) == 0
    some = TrainView(seq, view.end, np.array(present, dtype=np.int64))
    users, ends = training_windows(some, 20, "prefixes")
    assert len(users) == n_all and np.isin(beh[ends - 1], present).all()
