"""Next-basket methods on hand-made baskets: basket numbering, P-TopFreq, TIFU-KNN's decay rules
(hand-computed and against a plain loop written after the reference code's structure) and the
neighbour search (never the user itself)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from evorec.forecasting import nbr
from evorec.forecasting.windows import WindowSamples
from evorec.types import TimeKind

DAY = 86_400


def _seq(users: list[list[tuple[int, int]]], n_categories: int, basket: list[int] | None = None):
    """A minimal sequence object: per user a list of (day, category) events in time order."""
    ts, cat, off = [], [], [0]
    for evs in users:
        for d, c in evs:
            ts.append(d * DAY + 3600)
            cat.append(c)
        off.append(len(ts))
    return SimpleNamespace(
        offsets=np.array(off, np.int64), ts=np.array(ts, np.int64), category=np.array(cat, np.int64),
        categories=SimpleNamespace(size=n_categories), time_kind=TimeKind.UNIX,
        basket=None if basket is None else np.array(basket, np.int64),
    )


def _samples(seq, cutoff_day: int) -> WindowSamples:
    off = seq.offsets
    T = cutoff_day * DAY
    ends = np.array([off[u] + int((seq.ts[off[u]:off[u + 1]] < T).sum()) for u in range(len(off) - 1)], np.int64)
    n = len(off) - 1
    return WindowSamples(np.arange(n), np.full(n, T), off[:-1].copy(), ends, np.zeros((n, 1, seq.categories.size), np.float32),
                         np.ones((n, 1), bool), (DAY,), "seconds")


def test_baskets_are_days_without_basket_ids_and_ids_where_given():
    seq = _seq([[(1, 1), (1, 2), (3, 1), (3, 3), (9, 2)], [(2, 1), (5, 1)]], 4)
    assert nbr.basket_ordinals(seq).tolist() == [0, 0, 1, 1, 2, 0, 1]
    assert nbr.basket_source(seq) == "day"
    seq.basket = np.array([0, 1, 2, 2, 3, 0, 1])  # two baskets on day 1
    assert nbr.basket_ordinals(seq).tolist() == [0, 1, 2, 2, 3, 0, 1]


def test_ptopfreq_counts_baskets_not_lines():
    seq = _seq([[(1, 1), (1, 1), (1, 2), (3, 1), (9, 2)]], 4)
    h = nbr.basket_history(seq, _samples(seq, 5))  # the day-9 basket is after the cutoff
    assert nbr.ptopfreq(h).tolist() == [[0, 2, 1, 0]]
    assert h.n_baskets.tolist() == [2]


def test_tifu_vector_by_hand_fewer_baskets_than_groups():
    # baskets: day 1 {1}, day 2 {1, 2}, day 3 {3}; m = 7 > 3 baskets: every basket is its own group
    seq = _seq([[(1, 1), (2, 1), (2, 2), (3, 3)]], 4)
    h = nbr.basket_history(seq, _samples(seq, 10))
    v = nbr.tifu_vectors(h, r_b=0.5, r_g=0.5, m=7)[0]
    w = [0.5 ** (2 - i) * 0.5 ** (6 - i) / 3 for i in range(3)]  # r_b^(n-1-i) r_g^(m-1-g) / n_groups
    assert v == pytest.approx([0, w[0] + w[1], w[1], w[2]])


def _reference_tifu(baskets: list[set[int]], C: int, r_b: float, r_g: float, m: int) -> np.ndarray:
    """A plain loop with the reference code's structure: decayed multi-hot baskets, split into m
    groups (the larger groups last), each group averaged, groups decayed and averaged."""
    n = len(baskets)
    vecs = []
    for i, b in enumerate(baskets):
        v = np.zeros(C)
        v[list(b)] = r_b ** (n - 1 - i)
        vecs.append(v)
    if n < m:
        groups = [[v] for v in vecs]
    else:
        base = n // m
        extra = n - base * m
        groups, at = [], 0
        for g in range(m):
            size = base if g < m - extra else base + 1
            groups.append(vecs[at:at + size])
            at += size
        assert at == n
    out = np.zeros(C)
    for g, grp in enumerate(groups):
        out += r_g ** (m - 1 - g) * np.mean(grp, axis=0)
    return out / len(groups)


@pytest.mark.parametrize("m", [1, 3, 7, 20])
def test_tifu_vectors_match_the_plain_loop(m):
    rng = np.random.default_rng(m)
    C = 6
    users, truth = [], []
    for _ in range(12):
        days = np.sort(rng.choice(60, rng.integers(1, 25), replace=False))
        evs, baskets = [], []
        for d in days:
            cats = set(rng.choice(np.arange(1, C), rng.integers(1, 4)).tolist())
            baskets.append(cats)
            evs += [(int(d), int(c)) for c in sorted(cats)]
        users.append(evs)
        truth.append(_reference_tifu(baskets, C, 0.9, 0.7, m))
    seq = _seq(users, C)
    got = nbr.tifu_vectors(nbr.basket_history(seq, _samples(seq, 100)), 0.9, 0.7, m)
    assert got == pytest.approx(np.array(truth))


def test_neighbours_never_the_user_and_within_the_cutoff():
    V = np.array([[1, 0, 0], [1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]], float)
    groups = np.array([0, 0, 0, 0, 1])
    idx, ok = nbr.neighbour_index(V, groups, 2, "cosine")
    assert idx[0].tolist() == [1, 2] and idx[1].tolist() == [0, 2]
    assert not ok[4].any()  # alone at its cutoff: no neighbour
    assert all(i not in idx[i][ok[i]] for i in range(5))
    idx_e, _ = nbr.neighbour_index(V, groups, 1, "euclidean")
    assert idx_e[3].tolist() == [2]
    mean = nbr.neighbour_mean(V, idx, ok, 2)
    assert mean[0] == pytest.approx((V[1] + V[2]) / 2)
    assert mean[4] == pytest.approx([0, 0, 0])
    with pytest.raises(ValueError, match="unknown metric"):
        nbr.neighbour_index(V, groups, 2, "manhattan")
