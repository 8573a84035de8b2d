"""FAISS top-k (evorec.serving.retrieval) against brute force.

- ``ModelState.recommend`` through the index (``faiss_min_items=0`` forces it on the 1,682-item
  ML-100K SASRec) returns the same items and scores as the brute-force ``torch.topk`` path, for real
  users' histories, with ``exclude_seen`` on and off and with category filters (wide and restrictive).
- ``ItemIndex`` flat search on 200k random vectors with a bias equals numpy's exact top-k.

Ties: FAISS and ``torch.topk`` order equal scores arbitrarily, and float rounding differs slightly
between FAISS's inner products and torch's matmul (with the bias folded in as one more dimension).
So lists must be identical position by position, except inside a run of scores equal within
``TOL``, which is compared as a set; the last run may hold different members only when those
members' true scores tie with the k-th score too.
"""

from __future__ import annotations

import csv
import dataclasses
from collections import defaultdict

import numpy as np
import pytest
import torch

from evorec.experiments.runs import TrainingRun
from evorec.serving.eventlog import StoredEvent
from evorec.serving.retrieval import ItemIndex
from evorec.serving.state import ModelState

TOL = 1e-4


def assert_same_topk(got_items, got_scores, ref_items, ref_scores, true_score) -> None:
    """``true_score(items) -> scores``: the reference score of any item (to judge boundary ties)."""
    got_items, ref_items = list(got_items), list(ref_items)
    got_scores, ref_scores = np.asarray(got_scores, np.float64), np.asarray(ref_scores, np.float64)
    assert len(got_items) == len(ref_items)
    assert len(set(got_items)) == len(got_items)
    np.testing.assert_allclose(got_scores, ref_scores, atol=TOL, rtol=0)
    np.testing.assert_allclose(true_score(got_items), got_scores, atol=TOL, rtol=0)  # each item really scores that
    n, i = len(ref_items), 0
    while i < n:
        j = i + 1
        while j < n and ref_scores[j - 1] - ref_scores[j] <= TOL:  # a run of (near-)tied scores
            j += 1
        a, b = set(got_items[i:j]), set(ref_items[i:j])
        if j < n or a == b:
            assert a == b, f"positions {i}..{j - 1} differ: {got_items[i:j]} vs {ref_items[i:j]}"
        else:  # the last run: an item just outside the top k may tie with the k-th
            assert np.all(np.abs(true_score(sorted(a ^ b)) - ref_scores[-1]) <= TOL), (got_items[i:], ref_items[i:])
        i = j


# --------------------------------------------------------------------------- ModelState on ML-100K


@pytest.fixture(scope="module")
def states(trained_run):
    """(brute-force state, FAISS state, real user histories), both with synthetic item categories:
    ML-100K has none, so items get a big (~60 %), a mid (~25 %) and 15 small categories."""
    brute = ModelState.from_run(trained_run)
    assert brute.index is None  # 1,682 items < faiss_min_items: brute force by default
    fast = ModelState.from_run(trained_run, faiss_min_items=0)
    assert fast.index is not None and fast.index.exact
    n = len(brute.items)
    rng = np.random.default_rng(0)
    cats = ["(unknown)", "big", "mid"] + [f"small{j}" for j in range(15)]
    u = rng.random(n)
    ic = np.where(u < 0.6, 1, np.where(u < 0.85, 2, rng.integers(3, len(cats), n))).astype(np.int64)
    ic[0] = 0
    extra = {"categories": cats, "category_index": {c: i for i, c in enumerate(cats)}, "item_category": ic}
    brute, fast = dataclasses.replace(brute, **extra), dataclasses.replace(fast, **extra)

    path = TrainingRun(trained_run).checkpoint.experiment["data"]["path"]
    by_user: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            by_user[row["user_id:token"]].append((int(float(row["timestamp:float"])), row["item_id:token"]))
    users = sorted(by_user)
    picked = rng.choice(len(users), 60, replace=False)
    histories = []
    for p in picked:
        ev = sorted(by_user[users[p]])
        cut = int(rng.integers(1, len(ev) + 1))  # a history ending at a random point of the user's log
        histories.append([StoredEvent(it, None, "rate", ts) for ts, it in ev[:cut]])
    return brute, fast, histories


def _true_scores(state: ModelState, history, now: int):
    batch, _ = state.batch(history, now)
    with torch.no_grad():
        full = state.model.score(batch)[0].double().numpy()  # (n_items,)
    return lambda ids: full[[state.item_index[i] for i in ids]]


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("category", [None, "big", "mid", "small3"])
@pytest.mark.parametrize("k", [10, 200])
def test_recommend_through_faiss_equals_brute_force(states, exclude_seen, category, k):
    brute, fast, histories = states
    now = 1_000_000_000
    for history in histories:
        ref = brute.recommend(history, k, exclude_seen=exclude_seen, category=category, now=now)
        got = fast.recommend(history, k, exclude_seen=exclude_seen, category=category, now=now)
        assert got["fallback"] is None and ref["fallback"] is None
        assert {x: got[x] for x in ("history_used", "unknown_items_skipped")} == {x: ref[x] for x in ("history_used", "unknown_items_skipped")}
        gi, gs = [x["item_id"] for x in got["items"]], [x["score"] for x in got["items"]]
        ri, rs = [x["item_id"] for x in ref["items"]], [x["score"] for x in ref["items"]]
        assert_same_topk(gi, gs, ri, rs, _true_scores(brute, history, now))
        seen = {e.item_id for e in history}
        if exclude_seen:
            assert not seen & set(gi)
        if category is not None:
            assert all(x["category_id"] == category for x in got["items"])
        assert "" not in gi  # padding


def test_recommend_without_history_still_falls_back_to_popularity(states):
    brute, fast, _ = states
    got = fast.recommend([StoredEvent("no-such-item", None, "view", 1)], 5, now=2)
    ref = brute.recommend([StoredEvent("no-such-item", None, "view", 1)], 5, now=2)
    assert got["fallback"] == "popularity" and got["items"] == ref["items"]


# --------------------------------------------------------------------------- ItemIndex, synthetic


def _numpy_topk(full: np.ndarray, k: int, blocked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.where(blocked, -np.inf, full)
    top = np.argsort(-s, kind="stable")[:k]
    top = top[np.isfinite(s[top])]
    return top, s[top]


@pytest.fixture(scope="module")
def large():
    rng = np.random.default_rng(1)
    n, d = 200_000, 64
    v = rng.standard_normal((n, d)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    v[0] = 100.0  # padding would win every query if it were not always dropped
    return v, b, ItemIndex.build(v, b)


def test_flat_search_equals_numpy_top_k_on_200k_items(large):
    v, b, index = large
    assert index.exact and index.n_items == len(v)
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((50, v.shape[1])).astype(np.float32)
    full = queries.astype(np.float64) @ v.T.astype(np.float64) + b  # (50, n) exact reference
    n = len(v)
    cat = rng.integers(0, 40, n)  # 40 categories of ~2.5 % each (restrictive) ...
    for qi, q in enumerate(queries):
        k = [1, 10, 100][qi % 3]
        exclude = np.argsort(-full[qi])[: 5 * qi]  # ... and up to 245 of the query's own best items excluded
        cases = [(None, None), (exclude, None), (exclude, cat % 2 == 0), (None, cat == qi % 40)]  # wide, then restrictive mask
        for ex, allowed in cases:
            blocked = np.zeros(n, bool)
            blocked[0] = True
            if ex is not None:
                blocked[ex] = True
            if allowed is not None:
                blocked |= ~allowed
            ri, rs = _numpy_topk(full[qi], k, blocked)
            gi, gs = index.search(q, k, exclude=ex, allowed=allowed)
            assert 0 not in gi
            assert_same_topk(gi.tolist(), gs, ri.tolist(), rs, lambda ids, qi=qi: full[qi][ids])


def test_search_widens_until_k_items_pass_the_filters():
    rng = np.random.default_rng(3)
    n, d, k = 5_000, 16, 50
    v = rng.standard_normal((n, d)).astype(np.float32)
    index = dataclasses.replace(ItemIndex.build(v), margin=0, exact_fraction=0.0)  # no subset shortcut, no slack
    q = rng.standard_normal(d).astype(np.float32)
    full = v.astype(np.float64) @ q
    order = np.argsort(-full)
    allowed = np.zeros(n, bool)
    allowed[order[3000:]] = True  # only items far down the ranking pass: many doublings needed
    blocked = ~allowed
    blocked[0] = True
    gi, gs = index.search(q, k, allowed=allowed)
    ri, rs = _numpy_topk(full, k, blocked)
    assert_same_topk(gi.tolist(), gs, ri.tolist(), rs, lambda ids: full[ids])
    # fewer allowed items than k: all of them come back, best first
    few = np.zeros(n, bool)
    few[order[[10, 20, 30]]] = True
    gi, _ = index.search(q, k, allowed=few)
    assert gi.tolist() == order[[10, 20, 30]].tolist()
    assert index.search(q, k, exclude=np.arange(n)).__getitem__(0).size == 0


def test_approximate_index_above_the_threshold():
    """HNSW (approximate) only from ``ann_threshold`` items; its results may differ from brute force,
    so this checks the filters and a high recall, not equality."""
    rng = np.random.default_rng(4)
    n, d, k = 20_000, 32, 20
    v = rng.standard_normal((n, d)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    assert ItemIndex.build(v, b, ann_threshold=n + 1).exact
    index = ItemIndex.build(v, b, ann_threshold=n)
    assert not index.exact
    qs = rng.standard_normal((20, d)).astype(np.float32)
    full = qs.astype(np.float64) @ v.T.astype(np.float64) + b  # (20, n)
    recall = []
    for qi, q in enumerate(qs):
        exclude = np.argsort(-full[qi])[:30]
        allowed = np.arange(n) % 2 == 1
        gi, _ = index.search(q, k, exclude=exclude, allowed=allowed)
        assert len(gi) == k and 0 not in gi and not set(gi) & set(exclude.tolist()) and allowed[gi].all()
        blocked = ~allowed
        blocked[exclude] = True
        blocked[0] = True
        ri, _ = _numpy_topk(full[qi], k, blocked)
        recall.append(len(set(gi.tolist()) & set(ri.tolist())) / k)
    assert np.mean(recall) > 0.9
