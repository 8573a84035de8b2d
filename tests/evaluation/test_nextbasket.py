"""Next-basket / next-period protocol on hand-made baskets: targets, repeat/explore split, metrics
worked out by hand, the exclude_seen rule (repeat targets dropped, counted, warned about)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from test_ranking import FixedScores

from evorec.data.batches import TrainView
from evorec.data.sequences import SequenceData
from evorec.data.splits import TimeSplitConfig, make_split
from evorec.data.vocab import Vocab
from evorec.evaluation.nextbasket import basket_targets, evaluate_baskets
from evorec.evaluation.protocols import EvalConfig, TrainingPart, evaluate_model

DAY = 86400
T0 = 1_500_000_000 - 1_500_000_000 % DAY  # midnight UTC

# user -> [(day, basket id, items)], items 1..6 (n_items = 7). Valid cut: day 10, test cut: day 20.
LOG = {
    "a": [(1, 0, [1, 2]), (2, 1, [1, 3]), (3, 2, [1, 2]), (12, 3, [4, 6]), (21, 4, [1, 5]), (22, 5, [2])],
    "b": [(1, 0, [3]), (2, 1, [3, 4]), (12, 2, [5]), (21, 3, [6, 3])],
}


def write_baskets(path, log=LOG, with_ids: bool = True) -> SequenceData:
    """A unix-time sequence directory (format 2) with basket numbers: the ids', or by day."""
    path.mkdir(parents=True, exist_ok=True)
    items, ts, basket, lengths = [], [], [], []
    for user in sorted(log):
        n = 0
        for day, b, its in log[user]:
            for j, i in enumerate(its):
                items.append(i)
                ts.append(T0 + day * DAY + 3600 * (b % 3) + (0 if with_ids else j))  # same basket: one time (ids)
                basket.append(b)
                n += 1
        lengths.append(n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype("<i8")
    np.save(path / "offsets.npy", offsets)
    np.save(path / "item.npy", np.array(items, "<i4"))
    np.save(path / "category.npy", np.zeros(len(items), "<i4"))
    np.save(path / "behavior.npy", np.full(len(items), 5, "i1"))
    np.save(path / "ts.npy", np.array(ts, "<i8"))
    if with_ids:
        np.save(path / "basket.npy", np.array(basket, "<i8"))
    meta = {"n_users": len(log), "n_events": int(offsets[-1]), "n_items": 7, "time_kind": "unix", "fingerprint": f"hand-{with_ids}",
            "dataset": "hand", "baskets": "basket_id" if with_ids else "day"}
    (path / "meta.json").write_text(json.dumps(meta))
    Vocab(sorted(log)).save(path / "users.parquet")
    Vocab([f"i{k}" for k in range(1, 7)]).save(path / "items.parquet")  # index k = "ik"
    Vocab([]).save(path / "categories.parquet")
    return SequenceData(path)


@pytest.fixture
def baskets(tmp_path):
    seq = write_baskets(tmp_path / "seq")
    split = make_split(seq, TimeSplitConfig(valid_start=T0 + 10 * DAY, test_start=T0 + 20 * DAY))
    return seq, split


X = 0.0
SCORES = [  # row a: 1 > 2 > ... > 6; row b: 6 > 1 > 2 > 3 > 4 > 5
    [X, 6, 5, 4, 3, 2, 1],
    [X, 5, 4, 3, 2, 1, 6],
]


def test_targets_are_the_next_basket_split_into_repeat_and_explore(baskets):
    seq, split = baskets
    t = basket_targets(seq, split, "test", "next_basket")
    got = {(int(t.es.users[r]), int(i)): bool(rep) for r, i, rep in zip(t.rows, t.items, t.repeat)}
    # a (row 0): next basket {1, 5}: 1 is a repeat; basket {2} of day 22 is not the next one
    # b (row 1): {6, 3}: 3 is a repeat, 6 new to b
    assert got == {(0, 1): True, (0, 5): False, (1, 3): True, (1, 6): False}
    p = basket_targets(seq, split, "test", "next_period", period_days=7)
    assert sorted((int(p.es.users[r]), int(i)) for r, i in zip(p.rows, p.items)) == [(0, 1), (0, 2), (0, 5), (1, 3), (1, 6)]


def test_metrics_by_hand(baskets):
    seq, split = baskets
    cfg = EvalConfig(protocol="next_basket", exclude_seen=False, ks=[1, 2], bootstrap=0)
    ev = evaluate_model(FixedScores(SCORES), seq, split, ["test"], cfg, TrainingPart(TrainView.from_split(seq, split).end), max_len=50)
    m = ev.summary["metrics"]
    # a: top-2 [1, 2], hit {1} of {1, 5}; b: top-2 [6, 1], hit {6} of {3, 6}
    ndcg2 = 1.0 / (1.0 + 1.0 / math.log2(3))
    assert m["Recall@2"] == pytest.approx(0.5) and m["PHR@2"] == pytest.approx(1.0) and m["NDCG@2"] == pytest.approx(ndcg2)
    assert m["repeat Recall@2"] == pytest.approx(0.5)  # a hits its repeat, b misses 3
    assert m["explore Recall@2"] == pytest.approx(0.5)  # b hits 6, a misses 5
    assert m["Recall@1"] == pytest.approx(0.5) and m["NDCG@1"] == pytest.approx(1.0)
    p = ev.summary["protocol"]
    assert p["name"] == "next_basket" and p["per_fold"]["test"]["repeat_targets"] == 2 and p["baskets"] == "basket_id"
    assert ev.table.num_rows == 2 and "explore NDCG@2" in ev.table.column_names


def test_exclude_seen_drops_repeat_targets_with_a_warning(baskets, caplog):
    seq, split = baskets
    cfg = EvalConfig(protocol="next_basket", exclude_seen=True, ks=[1, 2], bootstrap=0)
    with caplog.at_level(logging.WARNING):
        ev = evaluate_model(FixedScores(SCORES), seq, split, ["test"], cfg, TrainingPart(TrainView.from_split(seq, split).end), max_len=50)
    assert "2 of 4 target items" in caplog.text and "dropped from the evaluation" in caplog.text
    assert ev.summary["protocol"]["per_fold"]["test"]["repeat_targets_dropped"] == 2
    m = ev.summary["metrics"]
    # a: history {1, 2, 3, 4, 6} removed -> top-2 [5, X]: hit 5; b: history {3, 4, 5} removed -> top-2 [6, 1]: hit 6
    assert m["Recall@1"] == pytest.approx(1.0) and m["repeat Recall@1"] != m["repeat Recall@1"]  # NaN: no repeat target left


def test_next_item_exclude_seen_drops_users_whose_target_is_a_repeat(baskets, caplog):
    seq, split = baskets
    cfg = EvalConfig(protocol="next_item", exclude_seen=True, ks=[1], bootstrap=0, auc_negatives=2)
    with caplog.at_level(logging.WARNING):
        ev = evaluate_model(FixedScores(SCORES), seq, split, ["test"], cfg, TrainingPart(TrainView.from_split(seq, split).end), max_len=50)
    # a's first test item is 1 (a repeat): dropped; b's is 6 (new to b): kept, ranked first
    assert "1 of 2 users" in caplog.text
    assert ev.summary["users"] == 1 and ev.summary["metrics"]["HR@1"] == 1.0
    assert ev.summary["protocol"]["repeat_targets_dropped"] == 1
    kept = evaluate_model(FixedScores(SCORES), seq, split, ["test"], cfg.model_copy(update={"exclude_seen": False}),
                          TrainingPart(TrainView.from_split(seq, split).end), max_len=50)
    assert kept.summary["users"] == 2 and kept.summary["protocol"]["repeat_targets_dropped"] == 0


def test_a_log_without_basket_ids_uses_days(tmp_path):
    seq = write_baskets(tmp_path / "days", with_ids=False)
    assert seq.basket_source == "day"
    split = make_split(seq, TimeSplitConfig(valid_start=T0 + 10 * DAY, test_start=T0 + 20 * DAY))
    t = basket_targets(seq, split, "test", "next_basket")
    assert sorted((int(t.es.users[r]), int(i)) for r, i in zip(t.rows, t.items)) == [(0, 1), (0, 5), (1, 3), (1, 6)]


def test_protocol_needs_a_time_cut(tiny):
    seq, split = tiny  # leave-one-out: no cut
    cfg = EvalConfig(protocol="next_basket", bootstrap=0)
    with pytest.raises(ValueError, match="needs folds with a time cut"):
        evaluate_baskets(FixedScores(np.zeros((len(seq), seq.items.size))), seq, split, ["test"], cfg,
                         TrainingPart(TrainView.from_split(seq, split).end), max_len=50)
    with pytest.raises(ValueError, match="next_item"):
        EvalConfig(protocol="next_order")


def test_training_early_stops_on_the_protocol_it_is_evaluated_with(tmp_path):
    """Under eval.protocol=next_basket the trainer's validation is the next basket (every item of
    it, PHR among the metrics), and the best epoch's validation NDCG@10 is what `evorec evaluate`
    gives on the validation fold: one protocol for early stopping and evaluation."""
    from pathlib import Path

    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import evaluate_run, train

    root = Path(__file__).resolve().parents[2]
    config = root / "configs" / "completejourney" / "trex.yaml"
    if not (root.parent / "shared" / "data" / "dunnhumby_completejourney_sample").exists():
        pytest.skip("the Complete Journey sample is not beside the repository")
    cfg = load_experiment(config, [
        "model.name=sasrec", "model.config={}", "train.max_len=20", "train.epochs=1", "train.batch_size=256",
        "eval.candidates=all", "data.pseudonymize=false",
    ])
    state, run = train(cfg, tmp_path / "run")
    rec = state.history[state.best_epoch - 1]
    assert {"valid/NDCG@10", "valid/Recall@10", "valid/PHR@10", "valid/repeat Recall@10", "valid/explore Recall@10"} <= set(rec)
    res = evaluate_run(run, fold="valid")
    assert res["protocol"]["name"] == "next_basket"
    assert rec["valid/NDCG@10"] == pytest.approx(res["metrics"]["NDCG@10"], abs=1e-9)
    assert rec["valid/Recall@10"] == pytest.approx(res["metrics"]["Recall@10"], abs=1e-9)
