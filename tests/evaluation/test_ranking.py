"""Full-ranking protocol: hand-computed ranks, exclusion, ties, sampled negatives, a real fold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evorec.data.batches import EvalSet, TrainView, eval_set, history_items
from evorec.evaluation.ranking import RankingResult, rank_targets, sample_negatives
from evorec.models.base import NEG_INF, DataSizes, ModelConfig, Recommender
from evorec.models.registry import build_model

NAN = float("nan")
X = 0.0  # column 0 (padding); the model and the ranking both force it to -inf


class FixedConfig(ModelConfig):
    pass


class FixedScores(Recommender):
    """Scores given per user row: ``table[user row]`` (column 0 forced to -inf)."""

    trainable = False

    def __init__(self, table):
        t = torch.as_tensor(np.asarray(table, dtype=np.float32))
        super().__init__(FixedConfig(), DataSizes(n_items=t.shape[1], n_categories=1))
        self.register_buffer("table", t)

    def score(self, batch):
        s = self.table[batch.users].clone()  # (B, n_items)
        s[:, 0] = NEG_INF
        return s


def eval_rows(seq, rows=None) -> EvalSet:
    """Leave-last-out: each row's last event is its target, everything before is history."""
    off = np.asarray(seq.offsets)
    r = np.arange(len(seq)) if rows is None else np.asarray(rows)
    start, end = off[:-1][r], off[1:][r]
    return EvalSet(
        users=r.astype(np.int64),
        hist_start=start.astype(np.int64),
        hist_end=(end - 1).astype(np.int64),
        target_item=np.asarray(seq.item)[end - 1].astype(np.int64),
        target_ts=np.asarray(seq.ts)[end - 1].astype(np.int64),
        target_pos=(end - 1).astype(np.int64),
    )


# Items 1..5 (n_items = 6). Each row: events (the last is the target) and the model's scores.
CASES = [
    # history [1, 2], target 3 (score 3): items 1, 2 score higher
    ([1, 2, 3], [X, 5, 4, 3, 2, 1]),
    # all scores tie: pessimistic ties put the target after every other candidate
    ([4, 5], [X, 1, 1, 1, 1, 1]),
    # target 2 is also in the history: it stays a candidate; the other history item (3) goes
    ([2, 3, 2], [X, 1, 3, 5, 2, 4]),
    # the model scores the target -inf: last among the candidates
    ([1, 4], [X, 1, 2, 3, NEG_INF, 0]),
    # history covers every other item: with exclusion the target is the only candidate
    ([1, 2, 3, 4, 5], [X, 5, 4, 3, 2, 1]),
]
RANK_ALL = [2, 4, 2, 4, 4]  # exclude_seen=False
RANK_EXCL = [0, 3, 1, 3, 0]  # exclude_seen=True
N_CAND_EXCL = [3, 4, 4, 4, 1]


@pytest.fixture
def hand(make_seq):
    seq = make_seq([events for events, _ in CASES], n_items=6)
    return seq, eval_rows(seq), FixedScores([scores for _, scores in CASES])


@pytest.mark.parametrize("batch_size", [1, 2, 256])
def test_hand_ranks_without_exclusion(hand, batch_size):
    seq, es, model = hand
    res = rank_targets(model, seq, es, max_len=10, batch_size=batch_size, exclude_seen=False, ks=(1, 2, 5))
    np.testing.assert_array_equal(res.rank, RANK_ALL)
    np.testing.assert_array_equal(res.n_candidates, [5] * 5)
    assert res.protocol["ranking"] == "full" and res.protocol["candidates"] == 5
    assert res.protocol["ties"] == "pessimistic" and res.protocol["exclude_seen"] is False


@pytest.mark.parametrize("batch_size", [1, 3, 256])
def test_hand_ranks_with_exclusion(hand, batch_size):
    seq, es, model = hand
    res = rank_targets(model, seq, es, max_len=10, batch_size=batch_size, exclude_seen=True, ks=(1, 2, 5))
    np.testing.assert_array_equal(res.rank, RANK_EXCL)
    np.testing.assert_array_equal(res.n_candidates, N_CAND_EXCL)
    # Top-k: history items never appear, the target may; slots without a candidate are 0.
    assert res.topk.shape == (5, 5)
    np.testing.assert_array_equal(res.topk[0, :3], [3, 4, 5])
    np.testing.assert_array_equal(res.topk[0, 3:], [0, 0])
    assert set(res.topk[1, :4]) == {1, 2, 3, 5}
    np.testing.assert_array_equal(res.topk[2, :5], [5, 2, 4, 1, 0])
    np.testing.assert_array_equal(res.topk[3], [3, 2, 5, 0, 0])  # a -inf score is never recommended
    np.testing.assert_array_equal(res.topk[4], [5, 0, 0, 0, 0])


def test_exclusion_uses_the_whole_history_not_the_window(hand):
    seq, es, model = hand
    res = rank_targets(model, seq, es, max_len=1, exclude_seen=True, ks=(1,))
    np.testing.assert_array_equal(res.rank, RANK_EXCL)


def test_aggregate_from_ranks(hand):
    seq, es, model = hand
    res = rank_targets(model, seq, es, max_len=10, exclude_seen=True, ks=(1, 2))
    agg = res.aggregate()
    assert agg["HR@1"] == pytest.approx(2 / 5)  # ranks 0, 3, 1, 3, 0
    assert agg["HR@2"] == pytest.approx(3 / 5)
    assert agg["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3) + 1) / 5)
    assert agg["MRR"] == pytest.approx((1 + 1 / 4 + 1 / 2 + 1 / 4 + 1) / 5)
    assert res.aggregate(ks=(5,)).keys() >= {"HR@5", "NDCG@5", "MRR@5", "MAP@5", "Recall@5"}
    np.testing.assert_array_equal(res.per_user("HR", 1), [1, 0, 0, 0, 1])


def test_constant_scores_gain_nothing_from_ties(make_seq):
    seq = make_seq([[1, 2], [3, 4], [5, 1]], n_items=6)
    res = rank_targets(FixedScores(np.zeros((3, 6))), seq, eval_rows(seq), max_len=5, exclude_seen=False, ks=(1, 4))
    np.testing.assert_array_equal(res.rank, [4, 4, 4])
    assert res.aggregate()["HR@4"] == 0.0


def test_k_larger_than_catalogue_raises(hand):
    seq, es, model = hand
    with pytest.raises(ValueError, match="K=6 is larger than the 5 candidates"):
        rank_targets(model, seq, es, max_len=5, ks=(5, 6))
    with pytest.raises(ValueError, match="K=5 is larger than the 4 candidates"):
        rank_targets(model, seq, es, max_len=5, ks=(5,), negatives=3)
    with pytest.raises(ValueError, match="positive"):
        rank_targets(model, seq, es, max_len=5, ks=(0,))


def test_nan_scores_raise(hand):
    seq, es, _ = hand
    table = np.array([s for _, s in CASES], dtype=np.float32)
    table[2, 4] = NAN
    with pytest.raises(ValueError, match="NaN"):
        rank_targets(FixedScores(table), seq, es, max_len=5, ks=(1,))


def test_model_mode_is_restored(hand):
    seq, es, model = hand
    model.train()
    rank_targets(model, seq, es, max_len=5, ks=(1,))
    assert model.training
    model.eval()
    rank_targets(model, seq, es, max_len=5, ks=(1,))
    assert not model.training


class BufferView(FixedScores):
    """Returns a view of its own buffer: ranking must not write into the model's state."""

    def score(self, batch):
        return self.table[:1].expand(batch.size, -1) if batch.size > 1 else self.table[0:1]


def test_ranking_never_writes_into_the_models_scores(make_seq):
    seq = make_seq([[1, 2, 3]], n_items=6)
    model = BufferView([[NEG_INF, 5, 4, 3, 2, 1]])
    before = model.table.clone()
    res = rank_targets(model, seq, eval_rows(seq), max_len=5, exclude_seen=True, ks=(1,))
    assert res.rank[0] == 0
    assert torch.equal(model.table, before)


# ---------------------------------------------------------------------------------------------
# Sampled negatives


@pytest.fixture
def bigger(make_seq):
    rng = np.random.default_rng(3)
    n_items = 201
    histories = [list(rng.integers(1, n_items, size=rng.integers(2, 15))) for _ in range(40)]
    seq = make_seq(histories, n_items=n_items)
    return seq, n_items


def test_sampled_negatives_are_the_same_for_every_model(bigger):
    seq, n_items = bigger
    es = eval_rows(seq)
    rng = np.random.default_rng(0)
    a = FixedScores(rng.normal(size=(len(seq), n_items)))
    b = FixedScores(rng.normal(size=(len(seq), n_items)))
    ra = rank_targets(a, seq, es, max_len=8, negatives=50, seed=11, ks=(10,))
    rb = rank_targets(b, seq, es, max_len=8, negatives=50, seed=11, ks=(10,), batch_size=7)
    np.testing.assert_array_equal(ra.negatives, rb.negatives)
    assert not np.array_equal(ra.rank, rb.rank)
    rc = rank_targets(a, seq, es, max_len=8, negatives=50, seed=12, ks=(10,))
    assert not np.array_equal(ra.negatives, rc.negatives)
    # Independent of which other users are evaluated.
    sub = eval_rows(seq, rows=[5, 17, 30])
    rs = rank_targets(b, seq, sub, max_len=8, negatives=50, seed=11, ks=(10,))
    np.testing.assert_array_equal(rs.negatives, ra.negatives[[5, 17, 30]])
    np.testing.assert_array_equal(rs.rank, rb.rank[[5, 17, 30]])


def test_sampled_negatives_are_valid_and_ranked_pessimistically(bigger):
    seq, n_items = bigger
    es = eval_rows(seq)
    table = np.round(np.random.default_rng(1).normal(size=(len(seq), n_items)), 1)  # many ties
    res = rank_targets(FixedScores(table), seq, es, max_len=8, negatives=50, seed=5, ks=(5, 10))
    rows, items = history_items(seq, es.hist_start, es.hist_end)
    for j in range(len(es.users)):
        neg = res.negatives[j]
        assert len(set(neg.tolist())) == 50
        assert neg.min() >= 1 and neg.max() < n_items
        assert es.target_item[j] not in neg
        assert not set(neg.tolist()) & set(items[rows == j].tolist())
        t = table[j, es.target_item[j]]
        assert res.rank[j] == int((table[j, neg] >= t).sum())
    assert res.protocol["name"] == "sampled-uniform-50" and res.protocol["candidates"] == 51
    assert res.topk is None
    agg = res.aggregate()
    assert set(agg) >= {"HR@10 (sampled-uniform-50)", "NDCG@10 (sampled-uniform-50)", "MRR (sampled-uniform-50)"}
    assert not any(k in agg for k in ("HR@10", "NDCG@10", "MRR"))
    with pytest.raises(ValueError, match="full ranking"):
        res.list_metrics(np.ones(n_items))


def test_popularity_sampling_follows_the_counts(bigger):
    seq, n_items = bigger
    es = eval_rows(seq)
    counts = np.zeros(n_items)
    counts[1:101] = np.arange(1, 101)  # items 101..200 can never be drawn
    res = rank_targets(
        FixedScores(np.zeros((len(seq), n_items))), seq, es, max_len=8, negatives=20,
        negative_sampling="popularity", item_counts=counts, seed=0, ks=(5,),
    )
    assert res.negatives.max() <= 100
    assert np.median(res.negatives) > 50  # weighted towards the frequent (higher) items
    assert "HR@5 (sampled-popularity-20)" in res.aggregate()


def test_too_few_items_for_the_negatives(bigger):
    seq, n_items = bigger
    es = eval_rows(seq)
    with pytest.raises(ValueError, match="items left to draw"):
        sample_negatives(es.users, es.target_item, n_items, n_items - 2,
                         forbidden_rows=np.array([0]), forbidden_items=np.array([es.target_item[0] % 200 + 1]))


# ---------------------------------------------------------------------------------------------
# A real fold


def reference_ranks(model, seq, es: EvalSet, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain per-user loop: the protocol written out, to check the vectorised path against."""
    from evorec.data.batches import eval_batches

    ranks, topk = [], []
    with torch.no_grad():
        for sl, batch in eval_batches(seq, es, max_len, 64):
            scores = model.score(batch).numpy().astype(np.float64)
            for b, j in enumerate(range(sl.start, sl.stop)):
                s = scores[b].copy()
                tgt = es.target_item[j]
                hist = np.asarray(seq.item)[es.hist_start[j]: es.hist_end[j]]
                s[0] = -np.inf
                s[[i for i in hist if i != tgt]] = -np.inf
                cand = np.flatnonzero(np.isfinite(s) | (np.arange(len(s)) == tgt))
                cand = cand[cand > 0]
                ranks.append(int((s[cand] >= s[tgt]).sum()) - 1)
                order = sorted(cand.tolist(), key=lambda i: -s[i])
                topk.append(order[:10])
    return np.array(ranks), topk


def test_real_fold_pop_and_itemknn(tiny):
    seq, split = tiny
    es = eval_set(seq, split, "test")
    view = TrainView.from_split(seq, split)
    n_items = seq.items.size
    sizes = DataSizes(n_items=n_items, n_categories=seq.categories.size)
    results: dict[str, RankingResult] = {}
    for name in ("pop", "itemknn"):
        model = build_model(name, {}, sizes)
        model.fit(view)
        res = rank_targets(model, seq, es, max_len=50, exclude_seen=True, ks=(5, 10, 20))
        results[name] = res
        agg = res.aggregate()
        assert len(res) == len(es.users)
        assert (res.rank >= 0).all() and (res.rank < res.n_candidates).all()
        assert agg["HR@10"] > 3 * 10 / (n_items - 1), f"{name} is no better than random: {agg}"
        assert 0 < agg["NDCG@10"] <= agg["HR@10"] <= agg["HR@20"] <= 1
        assert 0 < agg["MRR"] < 1
        # The vectorised ranks equal the protocol written out as a loop (first 150 users).
        sub = EvalSet(**{k: v[:150] for k, v in es.__dict__.items()})
        ref_rank, ref_top = reference_ranks(model, seq, sub, 50)
        np.testing.assert_array_equal(res.rank[:150], ref_rank)
        if name == "itemknn":  # distinct scores (tie-breaking prior): the lists must agree exactly
            np.testing.assert_array_equal(res.topk[:150, :10], np.array(ref_top))
    counts = np.bincount(np.asarray(seq.item), minlength=n_items)
    pop_lists = results["pop"].list_metrics(counts, ks=(10,))
    knn_lists = results["itemknn"].list_metrics(counts, ks=(10,))
    assert pop_lists["Coverage@10"] < knn_lists["Coverage@10"]
    assert pop_lists["PopBias@10"] > 0.9
    assert pop_lists["Novelty@10"] < knn_lists["Novelty@10"]


def test_length_sorted_batches_rank_like_the_plain_loop(tiny):
    """rank_targets scores histories grouped by length (few padded columns); a Transformer's
    ranks, top-k lists and the hook's rows must equal the plain loop over the fold in its order."""
    from evorec.data.batches import eval_batches_by_length

    seq, split = tiny
    es = eval_set(seq, split, "test")
    L = 120
    lengths = np.minimum(es.hist_end - es.hist_start, L)
    assert len(np.unique(lengths)) > 3  # the fold mixes short and long histories
    seen_rows = np.concatenate([rows for rows, _ in eval_batches_by_length(seq, es, L, 16)])
    np.testing.assert_array_equal(np.sort(seen_rows), np.arange(len(es.users)))  # every row once
    assert (np.diff(lengths[seen_rows]) >= 0).all()  # ascending length
    torch.manual_seed(0)
    model = build_model("sasrec", {"hidden": 16, "heads": 2, "max_len": L, "dropout": 0.0, "attn_dropout": 0.0}, DataSizes(seq.items.size, seq.categories.size))
    model.eval()
    hooked = np.full(len(es.users), -1.0)

    def hook(rows, scores):
        hooked[rows] = scores.gather(1, torch.from_numpy(es.target_item[rows]).unsqueeze(1)).squeeze(1).numpy()

    res = rank_targets(model, seq, es, max_len=L, batch_size=16, exclude_seen=True, ks=(10,), score_hook=hook)
    ref_rank, ref_top = reference_ranks(model, seq, es, L)
    np.testing.assert_array_equal(res.rank, ref_rank)
    np.testing.assert_array_equal(res.topk[:, :10], np.array(ref_top))
    with torch.no_grad():  # the hook saw each row's own target score
        from evorec.data.batches import eval_batches

        plain = np.concatenate([model.score(b).gather(1, torch.from_numpy(es.target_item[sl]).unsqueeze(1)).squeeze(1).numpy()
                                for sl, b in eval_batches(seq, es, L, 64)])
    np.testing.assert_allclose(hooked, plain, rtol=1e-5, atol=1e-6)
