"""Splits on real data: semantics, the leakage guard (and that it catches corruption),
ordinal datasets, persistence, and the YAML-driven prepare()."""

from __future__ import annotations

import copy
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import make_beauty_ordinal_store, make_grocery_store
from pydantic import ValidationError

from evorec.data.clean import CleanConfig, KCoreConfig
from evorec.data.prepare import PrepareConfig, prepare
from evorec.data.sequences import SequenceData
from evorec.data.splits import (
    BacktestSplitConfig,
    LeakageError,
    LOOSplitConfig,
    Split,
    SplitError,
    TimeSplitConfig,
    backtest_split,
    check_no_leakage,
    item_first_ts,
    leave_one_out,
    load_split,
    make_split,
    resolve_horizon,
    resolve_time,
    save_split,
    time_split,
)
from evorec.types import BEHAVIOR_INDEX

REPO = Path(__file__).parents[2]
DAY = 86_400


def utc(s: str) -> int:
    return int(datetime.fromisoformat(s).replace(tzinfo=timezone.utc).timestamp())


@pytest.fixture(scope="module")
def taobao_seq(taobao_store, tmp_path_factory) -> SequenceData:
    out = tmp_path_factory.mktemp("split") / "taobao"
    cfg = PrepareConfig(clean=CleanConfig(kcore=KCoreConfig(user_min=3, item_min=2)))
    return prepare(taobao_store, "taobao", cfg, out).open()


@pytest.fixture(scope="module")
def grocery_seq(tmp_path_factory) -> SequenceData:
    d = tmp_path_factory.mktemp("grocery")
    store = make_grocery_store(d / "store.duckdb")
    return prepare(store, "grocery", PrepareConfig(), d / "seq").open()


@pytest.fixture(scope="module")
def beauty_store(tmp_path_factory) -> Path:
    return make_beauty_ordinal_store(tmp_path_factory.mktemp("beauty") / "store.duckdb", n_users=1500)


def corrupted(split: Split) -> Split:
    """A deep copy with writable arrays, to damage on purpose."""
    out = copy.deepcopy(split)
    out.train_ends = {k: np.array(v) for k, v in out.train_ends.items()}
    for f in out.folds.values():
        for name in ("users", "hist_end", "tgt_offsets", "tgt_pos"):
            setattr(f, name, np.array(getattr(f, name)))
    return out


def first_targets(fold) -> np.ndarray:
    return np.asarray(fold.tgt_pos)[np.asarray(fold.tgt_offsets)[:-1]]


# --------------------------------------------------------------------------------------------
# leave-one-out
# --------------------------------------------------------------------------------------------


def test_loo_semantics_and_guard(taobao_seq):
    seq = taobao_seq
    split = leave_one_out(seq)
    check_no_leakage(split, seq)
    off = np.asarray(seq.offsets)
    end = off[1:]
    test, valid = split.folds["test"], split.folds["valid"]
    assert test.n_users == valid.n_users == len(seq) - split.report["n_short_users"]
    u = test.users
    assert np.array_equal(test.tgt_pos, end[u] - 1)
    assert np.array_equal(valid.tgt_pos, end[u] - 2)
    assert np.array_equal(split.train_ends["train"][u], end[u] - 2)
    assert np.array_equal(test.hist_end, end[u] - 1)  # test history includes the valid target
    short = np.setdiff1d(np.arange(len(seq)), u)
    assert (np.diff(off)[short] < 3).all()
    assert np.array_equal(split.train_ends["train"][short], end[short])  # policy "train"


def test_loo_guard_catches_corruption(taobao_seq):
    seq = taobao_seq
    split = leave_one_out(seq)
    u = int(split.folds["valid"].users[10])
    bad = corrupted(split)
    bad.train_ends["train"][u] += 1  # training now swallows the validation target
    with pytest.raises(LeakageError, match="training"):
        check_no_leakage(bad, seq)
    bad = corrupted(split)
    bad.folds["test"].hist_end[5] += 1  # test history now contains the test target
    with pytest.raises(LeakageError, match="fold 'test'.*history ends at position"):
        check_no_leakage(bad, seq)
    bad = corrupted(split)
    bad.folds["valid"].tgt_pos[3] = split.folds["valid"].tgt_pos[3] - 1  # a target inside the history
    with pytest.raises(LeakageError, match="fold 'valid'"):
        check_no_leakage(bad, seq)


def test_loo_target_behaviors_and_short_policy(taobao_seq):
    seq = taobao_seq
    cfg = LOOSplitConfig(target_behaviors=["buy"], short_users="drop")
    split = leave_one_out(seq, cfg)
    check_no_leakage(split, seq)
    buy = BEHAVIOR_INDEX["buy"]
    beh = np.asarray(seq.behavior)
    for name in ("valid", "test"):
        assert (beh[split.folds[name].tgt_pos] == buy).all()
    off = np.asarray(seq.offsets)
    for j, u in enumerate(split.folds["test"].users[:50]):
        user_beh = beh[off[u] : off[u + 1]]
        buys = np.flatnonzero(user_beh == buy) + off[u]
        assert split.folds["test"].tgt_pos[j] == buys[-1]
        assert split.folds["valid"].tgt_pos[j] == buys[-2]
    eligible = split.folds["test"].users
    others = np.setdiff1d(np.arange(len(seq)), eligible)
    assert len(others) == split.report["n_short_users"] > 0
    assert np.array_equal(split.train_ends["train"][others], off[:-1][others])  # dropped: no training rows
    assert split.report["n_unused_tail_events"] > 0  # views after the last buy are never used


# --------------------------------------------------------------------------------------------
# global time cut (Amazon Grocery: 14 years of reviews)
# --------------------------------------------------------------------------------------------


def test_time_split_semantics_and_guard(grocery_seq):
    seq = grocery_seq
    cfg = TimeSplitConfig(valid_start="2013-07-01", test_start=date(2014, 1, 1))
    split = time_split(seq, cfg)
    check_no_leakage(split, seq)
    t1, t2 = utc("2013-07-01"), utc("2014-01-01")
    ts = np.asarray(seq.ts)
    off = np.asarray(seq.offsets)
    te = split.train_ends["train"]
    train_ts = np.concatenate([ts[a:b] for a, b in zip(off[:-1], te)])
    assert train_ts.max() < t1
    assert len(train_ts) == (ts < t1).sum()  # every pre-cut event is training
    v, t = split.folds["valid"], split.folds["test"]
    assert ((ts[v.tgt_pos] >= t1) & (ts[v.tgt_pos] < t2)).all()
    assert (ts[t.tgt_pos] >= t2).all()
    first_seen = item_first_ts(seq)
    known = first_seen[np.asarray(seq.item)] < t1  # items that existed before the valid cut
    in_valid = (ts >= t1) & (ts < t2) & np.repeat(te > off[:-1], np.diff(off))
    assert v.n_targets == (in_valid & known).sum()
    # (counted over every user with events in the window, before the min_history filter)
    assert v.info["new_item_targets_dropped"] == ((ts >= t1) & (ts < t2) & ~known).sum() > 0  # new items arrive
    assert (first_seen[np.asarray(seq.item)[t.tgt_pos]] < t2).all()
    # history of a test target is everything before the test cut, valid period included
    j = 0
    u = int(t.users[j])
    assert ts[off[u] : t.hist_end[j]].max() < t2 and t.hist_end[j] >= te[u]

    bad = corrupted(split)
    k = int(np.flatnonzero(te[v.users] < off[1:][v.users])[0])
    bad.train_ends["train"][v.users[k]] += 1
    with pytest.raises(LeakageError, match="not before the cut"):
        check_no_leakage(bad, seq)
    bad = corrupted(split)
    bad.folds["test"].hist_end[0] += 1
    with pytest.raises(LeakageError, match="fold 'test'"):
        check_no_leakage(bad, seq)


def test_guard_refuses_a_target_item_only_seen_after_the_cut(grocery_seq):
    seq = grocery_seq
    split = time_split(seq, TimeSplitConfig(valid_start="2013-07-01", test_start="2014-01-01"))
    first_seen = item_first_ts(seq)
    items, ts = np.asarray(seq.item), np.asarray(seq.ts)
    t2 = utc("2014-01-01")
    new_pos = np.flatnonzero((ts >= t2) & (first_seen[items] >= t2))
    assert len(new_pos), "Grocery has items first reviewed after 2014-01-01"
    bad = corrupted(split)
    f = bad.folds["test"]
    # make one test user's target an item that only appears after the cut
    owner = np.repeat(np.arange(len(seq)), np.diff(np.asarray(seq.offsets)))
    u = int(owner[new_pos[0]])
    rows = np.flatnonzero(np.asarray(f.users) == u)
    assert len(rows) == 1, "the new item's reviewer is a test user"
    f.tgt_pos[f.tgt_offsets[rows[0]]] = new_pos[0]
    with pytest.raises(LeakageError, match="only seen after the cut"):
        check_no_leakage(bad, seq)


def test_time_split_rejects_bad_order(grocery_seq):
    with pytest.raises(SplitError, match="valid_start < test_start"):
        time_split(grocery_seq, TimeSplitConfig(valid_start="2014-01-01", test_start="2013-01-01"))


def test_time_split_with_target_behaviors_and_end(taobao_seq):
    seq = taobao_seq
    cfg = TimeSplitConfig(
        valid_start="2017-12-01", test_start="2017-12-02T12:00:00", test_end="2017-12-03", target_behaviors=["buy", "cart"]
    )
    split = time_split(seq, cfg)
    check_no_leakage(split, seq)
    ts, beh = np.asarray(seq.ts), np.asarray(seq.behavior)
    test = split.folds["test"]
    assert ((ts[test.tgt_pos] >= utc("2017-12-02T12:00:00")) & (ts[test.tgt_pos] < utc("2017-12-03"))).all()
    assert np.isin(beh[test.tgt_pos], [BEHAVIOR_INDEX["buy"], BEHAVIOR_INDEX["cart"]]).all()
    bad = corrupted(split)
    bad.folds["test"].end = utc("2017-12-02T18:00:00")  # a narrower end than the targets respect
    with pytest.raises(LeakageError, match="fold end"):
        check_no_leakage(bad, seq)


# --------------------------------------------------------------------------------------------
# rolling-origin backtest
# --------------------------------------------------------------------------------------------


def test_backtest_seconds_semantics_and_guard(taobao_seq):
    seq = taobao_seq
    cfg = BacktestSplitConfig(cutoffs=["2017-12-01", "2017-12-02"], horizons=["1d", 6 * 3600], target_behaviors=["buy"])
    split = backtest_split(seq, cfg)
    check_no_leakage(split, seq)
    assert sorted(split.folds) == ["c0_h0", "c0_h1", "c1_h0", "c1_h1"]
    assert sorted(split.train_ends) == ["train_c0", "train_c1"]
    ts, beh = np.asarray(seq.ts), np.asarray(seq.behavior)
    off = np.asarray(seq.offsets)
    for f in split.folds.values():
        c, h = f.info["cutoff"], f.info["horizon"]
        assert ((ts[f.tgt_pos] >= c) & (ts[f.tgt_pos] < c + h)).all()
        assert (beh[f.tgt_pos] == BEHAVIOR_INDEX["buy"]).all()
        has_hist = f.hist_end > off[f.users]
        assert has_hist.all()
        assert (ts[f.hist_end - 1] < c).all()
        # all buys in the window of fold users are targets
        known = item_first_ts(seq)[np.asarray(seq.item)] < c
        in_window = (ts >= c) & (ts < c + h) & (beh == BEHAVIOR_INDEX["buy"]) & known
        owner = np.repeat(np.arange(len(seq)), np.diff(off))
        eligible = np.zeros(len(seq), bool)
        eligible[(split.train_ends[f.train] - off[:-1]) >= 1] = True
        assert f.n_targets == (in_window & eligible[owner]).sum()
    assert split.folds["c0_h1"].n_targets <= split.folds["c0_h0"].n_targets  # 6 h inside 1 day

    bad = corrupted(split)
    bad.train_ends["train_c1"][split.folds["c1_h0"].users[0]] += 1
    with pytest.raises(LeakageError, match="train_c1"):
        check_no_leakage(bad, seq)
    bad = corrupted(split)
    f = bad.folds["c0_h0"]
    f.cut = f.cut - DAY  # claims history stops a day earlier than it does
    with pytest.raises(LeakageError, match="not before the cut"):
        check_no_leakage(bad, seq)


def test_backtest_event_horizon(taobao_seq):
    seq = taobao_seq
    cfg = BacktestSplitConfig(cutoffs=[utc("2017-12-02")], horizons=[3], horizon_unit="events")
    split = make_split(seq, cfg)
    check_no_leakage(split, seq)
    f = split.folds["c0_h0"]
    assert (np.diff(f.tgt_offsets) <= 3).all()
    off = np.asarray(seq.offsets)
    known = item_first_ts(seq)[np.asarray(seq.item)] < utc("2017-12-02")
    span_end = np.minimum(f.hist_end + 3, off[1:][f.users])
    exp = np.array([known[a:b].sum() for a, b in zip(f.hist_end, span_end)])
    assert np.array_equal(np.diff(f.tgt_offsets), exp)  # the next 3 events, minus items new at the cut


def test_sequence_disorder_is_caught(taobao_seq, tmp_path):
    seq = taobao_seq
    split = leave_one_out(seq)
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in seq.path.iterdir():
        if p.is_file():
            (broken / p.name).write_bytes(p.read_bytes())
    ts = np.array(seq.ts)
    u = int(np.flatnonzero(np.diff(np.asarray(seq.offsets)) >= 3)[0])
    a = int(seq.offsets[u])
    ts[a], ts[a + 1] = ts[a + 1] + 1000, ts[a]  # out of order inside one user
    np.save(broken / "ts.npy", ts)
    with pytest.raises(LeakageError, match="not time-ordered"):
        check_no_leakage(split, SequenceData(broken))


# --------------------------------------------------------------------------------------------
# ordinal datasets
# --------------------------------------------------------------------------------------------


def test_ordinal_time_cut_as_date_is_a_clear_error(beauty_store, tmp_path):
    cfg = PrepareConfig(split=TimeSplitConfig(valid_start="2014-01-01", test_start="2014-06-01"))
    with pytest.raises(SplitError, match="ordinal.*positions"):
        prepare(beauty_store, "beauty", cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SplitError, match="ordinal"):
        resolve_time(date(2014, 1, 1), "ordinal")
    assert resolve_time(12, "ordinal") == 12


def test_ordinal_backtest_counts_events(beauty_store, tmp_path):
    cfg = PrepareConfig(split=BacktestSplitConfig(cutoffs=[5, 8], horizons=[1, 2]))
    res = prepare(beauty_store, "beauty", cfg, tmp_path / "out")
    seq = res.open()
    split = load_split(tmp_path / "out" / "split")
    check_no_leakage(split, seq)
    f = split.folds["c0_h1"]
    assert f.info["horizon_unit"] == "events"
    off = np.asarray(seq.offsets)
    assert (f.hist_end - off[f.users] == 4).all()  # positions 1..4 are before cutoff 5
    assert (np.asarray(seq.ts)[f.tgt_pos] >= 5).all()
    assert (np.diff(f.tgt_offsets) <= 2).all()
    with pytest.raises(SplitError, match="count events"):
        prepare(beauty_store, "beauty", PrepareConfig(split=BacktestSplitConfig(cutoffs=[5], horizons=[1], horizon_unit="seconds")), tmp_path / "x")
    with pytest.raises(SplitError, match="duration"):
        make_split(seq, BacktestSplitConfig(cutoffs=[5], horizons=["7d"]))


def test_ordinal_loo_and_integer_time_cut(beauty_store, tmp_path):
    res = prepare(beauty_store, "beauty", PrepareConfig(split=TimeSplitConfig(valid_start=6, test_start=8)), tmp_path / "t")
    seq = res.open()
    split = load_split(tmp_path / "t" / "split")
    check_no_leakage(split, seq)
    off = np.asarray(seq.offsets)
    assert ((split.train_ends["train"] - off[:-1]) == np.minimum(5, np.diff(off))).all()
    loo = leave_one_out(seq)
    check_no_leakage(loo, seq)
    assert loo.folds["test"].n_users == len(seq)  # 5-core data: every user has >= 3 events


# --------------------------------------------------------------------------------------------
# parsing, persistence, config files
# --------------------------------------------------------------------------------------------


def test_resolve_time_and_horizon():
    assert resolve_time("2017-12-01", "unix") == utc("2017-12-01")
    assert resolve_time("2017-12-01T08:00:00+08:00", "unix") == utc("2017-12-01")
    assert resolve_time(datetime(2017, 12, 1), "unix") == utc("2017-12-01")
    assert resolve_time("1512086400", "unix") == 1512086400
    with pytest.raises(SplitError):
        resolve_time("next tuesday", "unix")
    assert resolve_horizon("7d", "seconds") == 7 * DAY
    assert resolve_horizon("12h", "seconds") == 12 * 3600
    assert resolve_horizon(5, "events") == 5
    # the label evorec itself prints for event horizons reads back
    assert resolve_horizon("5ev", "events") == resolve_horizon("5 events", "events") == 5
    with pytest.raises(SplitError, match="counts events"):
        resolve_horizon("5ev", "seconds")
    with pytest.raises(SplitError):
        resolve_horizon(0, "events")
    with pytest.raises(SplitError):
        resolve_horizon("0ev", "events")


def test_split_save_load_round_trip(taobao_seq, tmp_path):
    split = backtest_split(taobao_seq, BacktestSplitConfig(cutoffs=["2017-12-02"], horizons=["1d"]))
    save_split(split, tmp_path / "bt")
    back = load_split(tmp_path / "bt")
    assert back.kind == "backtest" and back.folds.keys() == split.folds.keys()
    for k, v in split.train_ends.items():
        assert np.array_equal(back.train_ends[k], v)
    for name, f in split.folds.items():
        g = back.folds[name]
        assert (g.cut, g.end, g.train, g.info) == (f.cut, f.end, f.train, f.info)
        for arr in ("users", "hist_end", "tgt_offsets", "tgt_pos"):
            assert np.array_equal(getattr(g, arr), getattr(f, arr))
    check_no_leakage(back, taobao_seq)


def test_prepare_config_yaml(taobao_store, tmp_path):
    cfg = PrepareConfig.from_yaml(REPO / "configs" / "prepare" / "taobao.yaml")
    assert cfg.split.kind == "backtest" and cfg.clean.kcore.user_min == 5
    res = prepare(taobao_store, "taobao", cfg, tmp_path / "out")
    assert res.clean_report.removed("kcore") > 0 and res.clean_report.kcore_converged
    assert (tmp_path / "out" / "split" / "split.json").exists()
    assert (tmp_path / "out" / "prepare.json").exists()
    check_no_leakage(load_split(tmp_path / "out" / "split"), res.open())
    # round trip through YAML, and unquoted YAML dates are accepted
    cfg.to_yaml(tmp_path / "c.yaml")
    assert PrepareConfig.from_yaml(tmp_path / "c.yaml") == cfg
    over = PrepareConfig.from_yaml(
        REPO / "configs" / "prepare" / "taobao.yaml",
        overrides={"clean.kcore.user_min": "10", "clean.collapse": "null", "split.target_behaviors": "[buy, cart]"},
    )
    assert over.clean.kcore.user_min == 10 and over.clean.collapse is None
    assert [b.value for b in over.split.target_behaviors] == ["buy", "cart"]
    with pytest.raises(ValidationError):
        PrepareConfig.from_yaml(REPO / "configs" / "prepare" / "taobao.yaml", overrides={"clean.kcore.usr_min": "3"})
    summary = res.to_dict()
    assert summary["events"] == res.n_events and summary["split"].startswith("backtest")
    doc = yaml.safe_load("split: {kind: time, valid_start: 2017-12-01, test_start: 2017-12-02}")
    assert PrepareConfig.model_validate(doc).split.valid_start == date(2017, 12, 1)
    with pytest.raises(ValidationError):
        PrepareConfig.model_validate({"split": {"kind": "loo", "target_behaviour": ["buy"]}})
    with pytest.raises(ValidationError):
        PrepareConfig.model_validate({"split": {"kind": "random"}})
