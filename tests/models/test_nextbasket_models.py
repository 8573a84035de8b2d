"""Item-level next-basket models on hand-made baskets: P-TopFreq, TIFU-KNN, the repeat hazard, the
TREx-style gate. Every expected number is worked out by hand in the comments."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from evorec.models.base import DataSizes
from evorec.models.nbr import basket_cells, batch_cells
from evorec.models.registry import build_model
from evorec.models.repeat import FEATURES, ItemStats, pair_features
from evorec.types import SequenceBatch, TimeKind

DAY = 86400
SIZES = DataSizes(n_items=7, n_categories=1)


def batch(rows: list[list[tuple[int, int, int]]], query_day: int = 10, with_baskets: bool = True) -> SequenceBatch:
    """rows: per user [(day, basket, item)] oldest first, left-padded to one width."""
    T = max(len(r) for r in rows)
    B = len(rows)
    items, ts, bk = (np.zeros((B, T), np.int64) for _ in range(3))
    mask = np.zeros((B, T), bool)
    for b, r in enumerate(rows):
        for j, (d, k, i) in enumerate(r):
            p = T - len(r) + j
            items[b, p], ts[b, p], bk[b, p], mask[b, p] = i, d * DAY, k, True
    t = torch.from_numpy
    return SequenceBatch(items=t(items), categories=t(np.zeros_like(items)), behaviors=t(np.zeros_like(items)), timestamps=t(ts),
                         mask=t(mask), query_ts=torch.full((B,), query_day * DAY), users=torch.arange(B),
                         baskets=t(bk) if with_baskets else None)


# user 0: baskets {1, 2} day 1, {1, 3} day 2, {1, 2} day 3; user 1: {4} day 1, {4, 5} day 5
USER0 = [(1, 0, 1), (1, 0, 2), (2, 1, 1), (2, 1, 3), (3, 2, 1), (3, 2, 2)]
USER1 = [(1, 0, 4), (5, 1, 4), (5, 1, 5)]


class View:
    """A TrainView stand-in: the same two users as training data."""

    def __init__(self):
        from types import SimpleNamespace

        rows = [USER0, USER1]
        item = np.array([i for r in rows for _, _, i in r])
        self.seq = SimpleNamespace(
            offsets=np.array([0, 6, 9]), item=item, ts=np.array([d * DAY for r in rows for d, _, _ in r]),
            basket=np.array([k for r in rows for _, k, _ in r]), behavior=np.full(9, 5), n_events=9, time_kind=TimeKind.UNIX,
        )
        self.end = np.array([6, 9])


def test_cells_of_a_batch_with_and_without_basket_ids():
    c = batch_cells(batch([USER0, USER1]))
    assert c.n_baskets.tolist() == [3, 2]
    assert sorted(zip(c.row.tolist(), c.basket.tolist(), c.item.tolist()))[:6] == [(0, 0, 1), (0, 0, 2), (0, 1, 1), (0, 1, 3), (0, 2, 1), (0, 2, 2)]
    # two baskets on one day: with ids two baskets, without ids one (the day)
    rows = [[(1, 0, 1), (1, 1, 2)]]
    assert batch_cells(batch(rows)).n_baskets.tolist() == [2]
    assert batch_cells(batch(rows, with_baskets=False)).n_baskets.tolist() == [1]
    empty = basket_cells(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), 3)
    assert empty.n_baskets.tolist() == [0, 0, 0]


def test_ptopfreq_counts_baskets_then_popularity():
    m = build_model("ptopfreq", {}, SIZES)
    m.fit(View())
    s = m.score(batch([USER0, USER1]))
    # user 0: item 1 in 3 baskets, 2 in 2, 3 in 1; the rest by training popularity (4: 2 lines, 5: 1)
    order0 = torch.argsort(s[0, 1:], descending=True) + 1
    assert order0.tolist()[:5] == [1, 2, 3, 4, 5]
    assert math.floor(float(s[0, 1])) == 3 and math.floor(float(s[0, 2])) == 2 and math.floor(float(s[1, 4])) == 2


def test_tifu_own_vector_by_hand_and_neighbours():
    m = build_model("tifuknn", {"r_b": 0.5, "r_g": 0.5, "m": 7, "alpha": 1.0}, SIZES)
    m.fit(View())
    s = m.score(batch([USER0]))[0].double()
    # 3 baskets < m = 7 groups: basket i weighs 0.5**(2-i) * 0.5**(6-i) / 3
    w = [0.5**2 * 0.5**6 / 3, 0.5 * 0.5**5 / 3, 0.5**4 / 3]
    assert float(s[1]) == pytest.approx(w[0] + w[1] + w[2], abs=1e-8)
    assert float(s[2]) == pytest.approx(w[0] + w[2], abs=1e-8) and float(s[3]) == pytest.approx(w[1], abs=1e-8)
    # alpha = 0: only the neighbours; user 0's own training row is never its neighbour, so the
    # single neighbour is user 1: items 4 and 5 score, user 0's own items only their prior
    nn = build_model("tifuknn", {"alpha": 0.0, "k": 5}, SIZES)
    nn.fit(View())
    s = nn.score(batch([USER0]))[0]
    assert float(s[4]) > 1e-6 and float(s[5]) > 1e-6 and float(s[1]) < 1e-8


def test_tifu_checkpoint_keeps_the_pool():
    m = build_model("tifuknn", {"alpha": 0.5, "k": 5}, SIZES)
    m.fit(View())
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    again = build_model("tifuknn", {"alpha": 0.5, "k": 5}, SIZES)
    again.load_state_dict(torch.load(buf, weights_only=True))
    b = batch([USER0, USER1])
    assert torch.equal(m.score(b), again.score(b))


def test_repeat_features_by_hand():
    c = batch_cells(batch([USER0]))
    stats = ItemStats(rate=np.full(7, 0.5), pop=np.arange(7, dtype=float), cycle=np.full(7, 2.0), category=np.array([0, 1, 1, 2, 2, 2, 2]))
    row, item, X = pair_features(c, np.array([10 * DAY]), stats)
    f = dict(zip(FEATURES, X[item.tolist().index(1)]))
    # item 1: baskets on days 1, 2, 3 (3 of 3); asked on day 10: 7 days since, mean gap 1 day
    assert f["log_count"] == pytest.approx(math.log1p(3)) and f["share"] == pytest.approx(1.0)
    assert f["log_days_since"] == pytest.approx(math.log1p(7)) and f["has_cycle"] == 1.0
    assert f["log_due"] == pytest.approx(math.log1p(7 / 1)) and f["off_cycle"] == pytest.approx(abs(math.log(8 / 2)))
    assert f["decayed"] == pytest.approx(1 + 0.9 + 0.81) and f["log_visit_gap"] == pytest.approx(math.log1p(7))
    # items 1 and 2 share category 1: baskets holding it: all 3; item 1 in all of them, item 2 in 2 of 3
    assert f["log_cat_baskets"] == pytest.approx(math.log1p(3)) and f["cat_loyalty"] == pytest.approx(1.0)
    assert f["log_item_due"] == pytest.approx(math.log1p(7 / 2)) and f["log_cat_since"] == pytest.approx(math.log1p(7))
    assert dict(zip(FEATURES, X[item.tolist().index(2)]))["cat_loyalty"] == pytest.approx(2 / 3)
    g = dict(zip(FEATURES, X[item.tolist().index(3)]))
    # item 3: once, day 2 (basket 1 of 3): no cycle, one basket since
    assert g["has_cycle"] == 0.0 and g["log_due"] == 0.0 and g["log_baskets_since"] == pytest.approx(math.log1p(1))


@pytest.mark.parametrize("learner", ["logistic", "gbdt", "rank"])
def test_repeat_ranks_history_first(learner):
    m = build_model("repeat", {"learner": learner, "trees": 5, "cuts": 2}, SIZES)
    m.fit(View())
    s = m.score(batch([USER0]))[0]
    hist, rest = s[[1, 2, 3]], s[[4, 5, 6]]
    assert bool((hist.min() >= 1.0) & (rest.max() <= 0.5))  # repeats first (1 + p), popularity after
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    again = build_model("repeat", {"learner": learner, "trees": 5, "cuts": 2}, SIZES)
    again.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(s, again.score(batch([USER0]))[0])


def test_trex_gate_falls_back_to_explore():
    cfg = {"explore": {"name": "pop"}, "repeat": {"name": "repeat", "config": {"cuts": 2}}}
    low = build_model("trex", {**cfg, "threshold": 0.0}, SIZES)
    low.fit(View())
    s = low.score(batch([USER0]))[0]
    assert set((torch.argsort(s[1:], descending=True)[:3] + 1).tolist()) == {1, 2, 3}  # every history item first
    high = build_model("trex", {**cfg, "threshold": 1.0}, SIZES)  # p < 1 always: nothing passes the gate
    high.fit(View())
    pop = build_model("pop", {}, SIZES)
    pop.fit(View())
    b = batch([USER0])
    assert torch.equal(torch.argsort(high.score(b)[0, 1:], descending=True, stable=True),
                       torch.argsort(pop.score(b)[0, 1:], descending=True, stable=True))
    high.set_threshold(0.0)
    assert torch.equal(high.score(b), low.score(b))
    with pytest.raises(ValueError, match="repeat_probabilities"):
        build_model("trex", {"repeat": {"name": "pop"}}, SIZES)


def test_no_repurchase_in_training_means_never_due():
    """A review log (every user-item once): p ~ 0, so the combination ranks like its explore member."""
    from types import SimpleNamespace

    view = View()
    view.seq = SimpleNamespace(**{**view.seq.__dict__, "item": np.array([1, 2, 3, 4, 5, 6, 4, 5, 6]), "offsets": np.array([0, 6, 9])})
    view.seq.basket = np.array([0, 0, 1, 1, 2, 2, 0, 1, 1])
    m = build_model("repeat", {"cuts": 2}, SIZES)
    m.fit(view)
    p, hist = m.repeat_probabilities(batch([USER0]))
    assert bool(hist[0, 1]) and float(p[hist].max()) < 1e-6
