"""Evaluation protocols end to end on real ML-100K: time split, backtest horizons, the guard,
per-user vectors and CIs, cold-start groups, next-category metrics, paired comparison, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import experiment
from typer.testing import CliRunner

from evorec.cli.main import app
from evorec.data.splits import LeakageError
from evorec.evaluation import metrics as M
from evorec.evaluation.protocols import EvalConfig, TrainingPart, evaluate_model
from evorec.experiments.config import load_experiment
from evorec.experiments.training import compare_runs, evaluate_run, prepared_data, train

TIME_SPLIT = {"kind": "time", "valid_start": "1998-02-01", "test_start": "1998-03-01"}


def _run(tmp_path: Path, name: str, model: str, split: dict | None = None, model_cfg: dict | None = None, **train_kw):
    base = experiment(tmp_path, model=model, model_cfg=model_cfg if model_cfg is not None else {}, **train_kw)
    if split is not None:
        base["prepare"] = {"split": split}
    cfg = load_experiment(None, base=base)
    train(cfg, tmp_path / name)
    return cfg, tmp_path / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocols")
    out = {}
    out["pop_time"] = _run(tmp, "pop_time", "pop", TIME_SPLIT, epochs=1)
    out["markov_time"] = _run(tmp, "markov_time", "markov", TIME_SPLIT, epochs=1)
    out["pop_loo"] = _run(tmp, "pop_loo", "pop", None, epochs=1)
    return out


def test_time_protocol_metrics_cis_per_user_and_groups(runs):
    cfg, run = runs["pop_time"]
    res = evaluate_run(run)
    p = res["protocol"]
    assert p["split"] == "time" and p["exclude_seen"] is True and p["ranking"] == "full"
    assert p["candidates"] == "items that existed before the fold's cut"
    assert p["per_fold"]["test"]["excluded_items"] > 0  # items first rated after 1998-03-01 are not candidates
    m, ci = res["metrics"], res["ci"]
    assert set(m) >= {"HR@10", "NDCG@10", "MRR", "GAUC", "AUC (sampled-uniform-100)"}
    assert all(isinstance(v, float) for v in m.values())
    for k in ("HR@10", "NDCG@10", "MRR", "GAUC"):
        lo, hi = ci[k]
        assert lo <= m[k] <= hi and hi - lo < 0.2
    table = pq.read_table(run / "per_user.parquet")
    assert table.num_rows == res["users"] > 50
    assert np.isclose(np.mean(table.column("NDCG@10").to_numpy()), m["NDCG@10"])
    ranks = table.column("rank").to_numpy()
    assert np.allclose(table.column("HR@10").to_numpy(), M.hit_rate(ranks, 10))
    # the guard's promise holds in the output: every target precedes nothing of the training data
    seq, split = prepared_data(cfg)
    ts = np.asarray(seq.ts)[table.column("target_pos").to_numpy()]
    assert (ts >= split.folds["test"].cut).all()
    g = res["groups"]
    assert g["cold users (history < 5)"]["users"] + g["warm users (history >= 5)"]["users"] == res["users"]
    items = [v["users"] for k, v in g.items() if "items" in k]
    assert sum(items) == res["users"]
    hl = table.column("history_length").to_numpy()
    cold = hl < 5
    if cold.any():
        assert np.isclose(g["cold users (history < 5)"]["metrics"]["NDCG@10"], table.column("NDCG@10").to_numpy()[cold].mean())
    assert 0 <= res["list_metrics"]["Coverage@10"] <= 1
    # per-user AUC is the share of candidates below the target
    auc = table.column("AUC").to_numpy()
    n = table.column("n_candidates").to_numpy()
    assert np.allclose(auc, 1 - ranks / (n - 1))
    assert json.loads((run / "metrics.json").read_text())["metrics"] == res["metrics"]


def test_candidates_all_ranks_more_items(runs):
    _, run = runs["pop_time"]
    known = evaluate_run(run)
    every = evaluate_run(run, eval_overrides=["candidates=all"])
    assert every["protocol"]["candidates"] == "all items"
    t_known = pq.read_table(run / "per_user.parquet")  # the last evaluation wrote it (candidates=all)
    assert "excluded_items" not in every["protocol"]["per_fold"]["test"]
    n_excl = known["protocol"]["per_fold"]["test"]["excluded_items"]
    assert n_excl > 0 and t_known.num_rows == known["users"]
    # pop never ranks a never-seen item above a seen one, so the metrics agree; the candidate count differs
    assert every["metrics"]["HR@10"] == pytest.approx(known["metrics"]["HR@10"])


def test_next_category_classification(runs):
    _, run = runs["markov_time"]
    res = evaluate_run(run)
    if "classification" not in res:
        pytest.skip("dataset without categories")
    c = res["classification"]["next category"]
    assert 0 <= c["accuracy"] <= 1 and 0 <= c["f1_macro"] <= 1
    assert sum(c["confusion"]["count"]) == res["users"]
    table = pq.read_table(run / "per_user.parquet")
    true = np.asarray(table.column("category_true").to_pylist(), dtype=object)
    pred = np.asarray(table.column("category_pred").to_pylist(), dtype=object)
    assert np.isclose((true == pred).mean(), c["accuracy"])


def test_backtest_protocol_per_horizon(runs):
    _, run = runs["markov_time"]
    res = evaluate_run(run, protocol="backtest", split_overrides=["horizons=[1d,7d,30d]"])
    p = res["protocol"]
    assert p["split"] == "backtest" and len(p["folds"]) == len(p["split_config"]["cutoffs"]) * 3
    h = res["horizons"]
    assert list(h) == ["next event", "1d", "7d", "30d"]
    for label in ("1d", "7d", "30d"):
        assert 0 <= h[label]["metrics"]["W-Recall@10"] <= h[label]["metrics"]["W-HR@10"] <= 1
        assert h[label]["ci"]["W-NDCG@10"] is not None
    assert h["30d"]["targets_per_user"] >= h["1d"]["targets_per_user"]  # a longer window holds more items
    assert h["30d"]["users"] >= h["1d"]["users"]
    table = pq.read_table(run / "per_user.parquet")
    assert set(table.column("fold").to_pylist()) == set(p["folds"])
    w = table.column("window_targets").to_numpy()
    assert (w >= 0).all()


def test_guard_refuses_a_model_trained_past_the_cut(runs):
    _, run = runs["pop_loo"]  # leave-one-out training holds events long after any time cut
    with pytest.raises(LeakageError, match="saw the evaluation period"):
        evaluate_run(run, protocol="time", split_overrides=["valid_start=1998-02-01", "test_start=1998-03-01"])


def test_bad_inputs_are_clear_errors(runs, tmp_path):
    cfg, run = runs["pop_time"]
    with pytest.raises(ValueError, match="larger than the catalogue"):
        evaluate_run(run, eval_overrides=["ks=[10,100000]"])
    with pytest.raises(KeyError, match="no fold 'nope'"):
        evaluate_run(run, fold="nope")
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        evaluate_run(tmp_path)
    # a model whose vocabulary differs from the data
    from evorec.experiments.training import data_sizes
    from evorec.models.registry import build_model

    seq, split = prepared_data(cfg)
    sizes = data_sizes(seq)
    other = build_model("pop", {}, dataclasses.replace(sizes, n_items=sizes.n_items - 3, item_category=sizes.item_category[:-3]))
    with pytest.raises(ValueError, match="vocabularies differ"):
        evaluate_model(other, seq, split, ["test"], EvalConfig(), TrainingPart(end=np.asarray(split.train_ends["train"])), max_len=20)


def test_compare_paired_and_mismatches(runs):
    _, a = runs["markov_time"]
    _, b = runs["pop_time"]
    evaluate_run(a)
    evaluate_run(b)
    res = compare_runs(a, b, ["NDCG@10", "HR@10"], n_boot=2000)
    t = res["tests"]["NDCG@10"]
    assert t["n"] == res["users"] and t["diff"] == pytest.approx(t["mean_a"] - t["mean_b"])
    assert t["diff_lo"] <= t["diff"] <= t["diff_hi"] and 0 <= t["p_bootstrap"] <= 1 and 0 <= t["p_wilcoxon"] <= 1
    assert res["tests"]["HR@10"]["p_bootstrap_holm"] >= res["tests"]["HR@10"]["p_bootstrap"]
    same = compare_runs(b, b, ["NDCG@10"], n_boot=500)["tests"]["NDCG@10"]
    assert same["diff"] == 0 and same["p_wilcoxon"] == 1.0
    # a different protocol is refused
    evaluate_run(b, eval_overrides=["exclude_seen=false"])
    with pytest.raises(ValueError, match="different protocols.*exclude_seen"):
        compare_runs(a, b)
    evaluate_run(b)
    _, c = runs["pop_loo"]
    evaluate_run(c)
    with pytest.raises(ValueError, match="different protocols"):
        compare_runs(a, c)


def test_cli_evaluate_and_compare(runs):
    cli = CliRunner()
    _, a = runs["markov_time"]
    _, b = runs["pop_time"]
    r = cli.invoke(app, ["evaluate", str(a), "--json", "--set", "bootstrap=200"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert isinstance(doc["metrics"]["NDCG@10"], float) and len(doc["ci"]["NDCG@10"]) == 2
    r = cli.invoke(app, ["evaluate", str(b)])
    assert r.exit_code == 0 and "NDCG@10" in r.output and "time split" in r.output
    r = cli.invoke(app, ["compare", str(a), str(b), "--bootstrap", "500"])
    assert r.exit_code == 0, r.output
    assert "NDCG@10" in r.output and "Wilcoxon" in r.output
    r = cli.invoke(app, ["evaluate", str(a), "--protocol", "weekly"])
    assert r.exit_code == 2 and "loo, time or backtest" in r.output
    _, loo = runs["pop_loo"]
    r = cli.invoke(app, ["evaluate", str(loo), "--protocol", "time"])
    assert r.exit_code == 2 and "refusing to evaluate" in r.output


def test_window_columns_hand_example():
    topk = np.array([[3, 5, 7, 9], [2, 4, 6, 8], [1, 0, 0, 0]])
    rows = np.array([0, 0, 1])
    items = np.array([5, 9, 11])  # user 0: two hits (ranks 1 and 3); user 1: miss; user 2: no targets
    w = M.window_columns(topk, rows, items, n_items=12, ks=[2, 4])
    assert np.allclose(w["W-HR@2"][:2], [1, 0]) and np.isnan(w["W-HR@2"][2])
    assert np.allclose(w["W-Recall@4"][:2], [1.0, 0.0])
    assert np.allclose(w["W-Precision@4"][:2], [0.5, 0.0])
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3)
    assert np.isclose(w["W-NDCG@4"][0], dcg / idcg)
    assert np.isclose(w["W-NDCG@2"][0], (1 / np.log2(3)) / idcg)


def test_sampled_metrics_are_named_and_fixed(runs):
    _, run = runs["markov_time"]
    a = evaluate_run(run, eval_overrides=["sampled_negatives=50", "bootstrap=100"])
    name = "NDCG@10 (sampled-uniform-50)"
    assert name in a["metrics"] and "NDCG@10" in a["metrics"]  # beside full ranking, never instead
    assert a["metrics"][name] >= a["metrics"]["NDCG@10"]  # 50 negatives are easier than every item
    b = evaluate_run(run, eval_overrides=["sampled_negatives=50", "bootstrap=100"])
    assert a["metrics"][name] == b["metrics"][name]  # the same negatives for the same seed
    t = pq.read_table(run / "per_user.parquet")
    assert name in t.column_names
    p = evaluate_run(run, eval_overrides=["sampled_negatives=50", "negative_sampling=popularity", "bootstrap=100"])
    assert "NDCG@10 (sampled-popularity-50)" in p["metrics"]


def test_a_checkpoint_from_other_data_is_refused(runs, tmp_path):
    import shutil

    import torch

    _, run = runs["pop_time"]
    other = tmp_path / "other"
    shutil.copytree(run, other)
    ck = torch.load(other / "best.pt", weights_only=False)
    ck["vocabs"]["sequence_fingerprint"] = "0" * 32  # as if trained on another dataset's sequences
    torch.save(ck, other / "best.pt")
    with pytest.raises(ValueError, match="vocabulary differs from the split"):
        evaluate_run(other)
    (other / "best.pt").write_bytes(b"garbage")
    with pytest.raises(Exception, match="not a readable evorec checkpoint"):
        evaluate_run(other)
