"""Forecast windows and features against brute force, the backtest end to end on the simulator,
the planted ground truth recovered (known answers), bad inputs, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from evorec.cli.main import app
from evorec.data.simulate import sidecar_paths
from evorec.data.splits import SplitError
from evorec.evaluation.stats import paired_test
from evorec.experiments.config import load_forecast_experiment
from evorec.experiments.forecasting import forecast_backtest, forecast_data, forecast_run, forecast_source
from evorec.forecasting.metrics import jensen_shannon
from evorec.forecasting.windows import build_samples, history_features

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "configs" / "forecast" / "simulated.yaml"
DAY = 86_400
SMALL = [
    "simulate.users=400", "forecast.model.epochs=3", "forecast.model.encoder=null", "forecast.bootstrap=200",
    "forecast.train_every=28d",
]


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forecast")
    cfg = load_forecast_experiment(SIM, SMALL + [f"cache_dir={tmp / 'cache'}"])
    res = forecast_backtest(cfg, tmp / "run")
    return cfg, res, tmp / "run"


def test_windows_and_features_match_brute_force(sim_run):
    cfg, _, _ = sim_run
    seq = forecast_data(cfg)
    T = int(np.datetime64("2025-01-01", "s").astype(np.int64))
    H = [7 * DAY, 30 * DAY]
    s = build_samples(seq, [T], H, visible_until=T + 10 * DAY)
    f = history_features(seq, s, [30 * DAY])
    off, ts, cat = np.asarray(seq.offsets), np.asarray(seq.ts), np.asarray(seq.category)
    C = seq.categories.size
    rng = np.random.default_rng(0)
    for i in rng.choice(len(s), 25, replace=False):
        u = int(s.users[i])
        t, c = ts[off[u] : off[u + 1]], cat[off[u] : off[u + 1]]
        past = t < T
        assert s.hist_end[i] - off[u] == past.sum()
        assert np.array_equal(f.past[i], np.bincount(c[past], minlength=C))
        for j, h in enumerate(H):
            win = (t >= T) & (t < min(T + h, T + 10 * DAY))  # never beyond what is visible
            assert np.array_equal(s.counts[i, j], np.bincount(c[win], minlength=C))
            last = past & (t >= T - h)
            assert np.array_equal(f.last[j, i], np.bincount(c[last], minlength=C))
        assert s.observed[i].tolist() == [True, False]  # 30 days do not fit in the 10 visible days
        w = 0.5 ** ((T - t[past]) / (30 * DAY))
        assert np.allclose(f.decayed[0, i], np.bincount(c[past], weights=w, minlength=C), rtol=1e-5)
        if past.any():
            assert f.last_cat[i] == c[past][-1]
            k = c[past][-1]
            assert f.recency[i, k] == pytest.approx(T - t[past][-1])


def test_calendar_signals_match_brute_force(sim_run):
    from evorec.forecasting import nbr
    from evorec.forecasting.ranker import FEATURES, YEAR, SignalContext, signals

    cfg, _, _ = sim_run
    seq = forecast_data(cfg)
    T, h = int(np.datetime64("2025-04-15", "s").astype(np.int64)), 30 * DAY
    s = build_samples(seq, [T], [h], visible_until=T)
    X = signals(s, seq, 0, SignalContext(seq, nbr.basket_ordinals(seq), nbr.TifuParams()), narrow_k=10)
    off, ts, cat = np.asarray(seq.offsets), np.asarray(seq.ts), np.asarray(seq.category)
    C = seq.categories.size
    f = {n: X[:, :, FEATURES.index(n)] for n in ("year_ago_user", "year_ago_reach", "year_ago_trend")}
    user_of = np.repeat(np.arange(len(off) - 1), np.diff(off))

    def reach(lo, hi):
        sel = (ts >= lo) & (ts < hi)
        pairs = np.unique(user_of[sel] * C + cat[sel])
        return np.bincount(pairs % C, minlength=C) / len(np.unique(user_of[sel]))

    assert np.allclose(f["year_ago_reach"], reach(T - YEAR, T - YEAR + h)[None, :])
    assert np.allclose(f["year_ago_trend"], (reach(T - YEAR, T - YEAR + h) - reach(T - YEAR - h, T - YEAR))[None, :])
    for i in np.random.default_rng(1).choice(len(s), 20, replace=False):
        u = int(s.users[i])
        t, c = ts[off[u] : off[u + 1]], cat[off[u] : off[u + 1]]
        if t[0] > T - YEAR:  # a user who started within the year: nothing known of a year ago
            assert np.isnan(f["year_ago_user"][i]).all()
        else:
            win = (t >= T - YEAR) & (t < T - YEAR + h)
            assert np.array_equal(f["year_ago_user"][i], np.bincount(c[win], minlength=C))


def test_backtest_results_per_horizon(sim_run):
    _, res, run = sim_run
    assert set(res["horizons"]) == {"1d", "7d", "30d", "90d"}
    for _label, e in res["horizons"].items():
        assert set(e["baselines"]) == {"persistence", "decayed", "population", "markov", "ptopfreq", "tifu_knn"}
        assert set(e["paired"]) == set(e["baselines"])  # model minus each baseline on the same samples
        for b, d in e["paired"].items():
            assert d["NDCG@10"]["ci"][0] <= d["NDCG@10"]["mean"] <= d["NDCG@10"]["ci"][1]
            assert d["NDCG@10"]["mean"] == pytest.approx(e["model"]["NDCG@10"] - e["baselines"][b]["NDCG@10"], abs=1e-9)
        assert e["scored"]["NDCG@10"] == e["active_samples"] <= e["samples"]  # NDCG counts only users active in the window
        for m in (e["model"], *e["baselines"].values()):
            assert 0 <= m["NDCG@10"] <= 1 and 0 <= m["JSD"] <= 1 and 0 <= m["Brier"] <= 1 and 0 <= m["ECE"] <= 1
        lo, hi = e["model_ci"]["NDCG@10"]
        assert lo <= e["model"]["NDCG@10"] <= hi
        assert e["vs_best_baseline"]["baseline"] in e["baselines"]
        # the planted interests bound every forecaster: the window's own interest ranks best, and the
        # state carried forward from the cutoff is a ceiling for anything that sees only the past
        fut, now = e["oracles"]["oracle_future"]["NDCG@10"], e["oracles"]["oracle_now"]["NDCG@10"]
        best = max(b["NDCG@10"] for b in e["baselines"].values())
        assert fut >= now - 0.01 and now > best and now > e["model"]["NDCG@10"]
        lo, hi = e["oracles_ci"]["oracle_now"]["NDCG@10"]
        assert lo <= now <= hi
        g = e["gap_closed"]
        assert g["NDCG@10"] == pytest.approx((e["model"]["NDCG@10"] - best) / (now - best))
    # the learned model is at least as good as the best baseline at 30 days (it sees every baseline's signal)
    e = res["horizons"]["30d"]
    assert e["model"]["NDCG@10"] >= max(b["NDCG@10"] for b in e["baselines"].values()) - 0.01
    assert e["model"]["NDCG@10"] > e["baselines"]["persistence"]["NDCG@10"]
    doc = json.loads((run / "backtest.json").read_text())
    assert doc["horizons"]["30d"]["model"] == pytest.approx(e["model"], nan_ok=True)
    # the classic recipe's row: next-category accuracy and F1 for every forecaster, the model's confusions
    nc = res["next_category"]
    assert nc["samples"] > 100 and set(nc) >= {"model", *e["baselines"]}
    for who in ("model", *e["baselines"]):
        assert 0 < nc[who]["accuracy"] <= 1 and 0 <= nc[who]["f1_macro"] <= 1
        assert nc[who]["f1_micro"] == pytest.approx(nc[who]["accuracy"])  # single-label: micro F1 is accuracy
    assert nc["ptopfreq"]["accuracy"] > nc["population"]["accuracy"]  # the user's own history names the next category better
    cells = nc["model"]["confusion_top"]
    assert cells and all(c["count"] >= d["count"] for c, d in zip(cells, cells[1:]))


def test_planted_drift_emerging_and_fading_are_recovered(sim_run):
    """Known answers from the simulator: the forecast moves toward the planted truth."""
    cfg, _, run = sim_run
    sim_path = Path(forecast_source(cfg).path)
    planted = pq.read_table(sidecar_paths(sim_path)["planted"]).to_pandas()
    truth = pq.read_table(sidecar_paths(sim_path)["truth"]).to_pandas()
    cutoff = "2025-06-15"
    T = int(np.datetime64(cutoff, "s").astype(np.int64))
    uf = forecast_run(run, cutoff, ["30d"])
    row = {u: i for i, u in enumerate(uf.users)}
    cidx = {c: i for i, c in enumerate(uf.categories)}
    share_past = uf.past / np.maximum(uf.past.sum(1, keepdims=True), 1)
    dist = uf.dist[:, 0]

    # emerging interests that rose 3-9 weeks before the cutoff: forecast share above the all-history share
    em = planted[(planted.kind == "emerging") & (planted.ts <= T - 21 * DAY) & (planted.ts >= T - 63 * DAY)]
    em = em[em.user_id.isin(row)]
    assert len(em) >= 5, "the simulator plants emerging interests"
    ui = em.user_id.map(row).to_numpy()
    ci = em.category_id.map(cidx).to_numpy()
    assert (dist[ui, ci] > share_past[ui, ci]).mean() >= 0.8

    # interests that faded 5-12 weeks before the cutoff: forecast share below the all-history share
    fa = planted[(planted.kind == "fading") & (planted.ts <= T - 35 * DAY) & (planted.ts >= T - 84 * DAY)]
    fa = fa[fa.user_id.isin(row)]
    ui = fa.user_id.map(row).to_numpy()
    ci = fa.category_id.map(cidx).to_numpy()
    seen = share_past[ui, ci] > 0  # an interest can only visibly fade if the user had engaged with it
    assert seen.sum() >= 5
    assert (dist[ui, ci] < share_past[ui, ci])[seen].mean() >= 0.8

    # drift: the forecast is closer to the true interest of the next 30 days than the all-history shares are
    w = truth[(truth.period_start >= T) & (truth.period_start < T + 30 * DAY)]
    true = np.zeros_like(dist)
    g = w.groupby(["user_id", "category_id"]).prob.mean().reset_index()
    g = g[g.user_id.isin(row)]
    true[g.user_id.map(row).to_numpy(), g.category_id.map(cidx).to_numpy()] = g.prob.to_numpy()
    has = true.sum(1) > 0
    j_model = jensen_shannon(dist[has], true[has])
    j_hist = jensen_shannon(share_past[has], true[has])
    t = paired_test(j_model, j_hist, metric="JSD to the true interest", n_boot=2000)
    assert t.diff < 0 and t.diff_hi < 0 and t.p_bootstrap < 0.01  # significantly closer, user by user


def test_bad_inputs(sim_run, tmp_path):
    cfg, _, run = sim_run
    base = SMALL + [f"cache_dir={cfg.cache_dir}"]
    with pytest.raises(SplitError, match="outside the data's time span"):
        forecast_backtest(load_forecast_experiment(SIM, base + ["forecast.test_cutoffs=[2031-01-01]"]))
    with pytest.raises(SplitError, match="after the data ends"):
        forecast_backtest(load_forecast_experiment(SIM, base + ["forecast.test_cutoffs=[2025-12-01]"]))
    with pytest.raises(SplitError, match="must end by the first test cutoff"):
        forecast_backtest(load_forecast_experiment(SIM, base + ["forecast.valid_cutoff=2025-04-01"]))
    with pytest.raises(KeyError, match="unknown baseline"):
        forecast_backtest(load_forecast_experiment(SIM, base + ["forecast.baselines=[persistence,oracle]"]))
    with pytest.raises(ValueError, match="exactly one data source"):
        load_forecast_experiment(None, base={"forecast": {"valid_cutoff": "2025-01-01", "test_cutoffs": ["2025-04-01"]}})
    with pytest.raises(KeyError, match="not one the forecaster was trained for"):
        forecast_run(run, "2025-06-15", ["5d"])
    with pytest.raises(SplitError, match="outside the data's time span"):
        forecast_run(run, "1999-01-01")
    with pytest.raises(KeyError, match="unknown user"):
        forecast_run(run, "2025-06-15", users=["nobody"])
    with pytest.raises(FileNotFoundError, match="not a forecast run"):
        forecast_run(tmp_path, "2025-06-15")


def test_cli(sim_run, tmp_path):
    cfg, _, run = sim_run
    cli = CliRunner()
    r = cli.invoke(app, ["forecast", str(run), "--cutoff", "2025-06-15", "--horizons", "7d,30d", "--out", str(tmp_path / "f.parquet")])
    assert r.exit_code == 0, r.output
    t = pq.read_table(tmp_path / "f.parquet")
    assert set(t.column("horizon").to_pylist()) == {"7d", "30d"}
    r = cli.invoke(app, ["forecast", "predict", str(run), "--cutoff", "2025-06-15", "--users", "u000001", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["users"] == 1 and all(row["user_id"] == "u000001" for row in doc["forecasts"])
    r = cli.invoke(app, ["forecast", str(run), "--cutoff", "2031-01-01", "--json"])
    assert r.exit_code == 2 and "outside" in r.output
    r = cli.invoke(app, ["forecast", "backtest", "--config", str(SIM), "--set", "forecast.test_cutoffs=[2031-01-01]",
                         "--set", f"cache_dir={cfg.cache_dir}", "--json"])
    assert r.exit_code == 2 and "outside the data's time span" in r.output


def test_order_only_data_counts_horizons_in_events(tmp_path):
    """S3-Rec Beauty has no dates: cutoffs are positions and horizons count events (and say so)."""
    beauty = ROOT.parent / "shared" / "data" / "amazon_s3rec_seq" / "Beauty.txt"
    if not beauty.exists():
        pytest.skip(f"real data not found: {beauty}")
    cfg = load_forecast_experiment(None, base={
        "data": {"path": str(beauty), "format": "s3rec", "dataset": "beauty", "pseudonymize": False},
        "prepare": {"clean": {"dedup": False}},
        "forecast": {"horizons": [1, 5], "train_every": 2, "train_start": 4, "valid_cutoff": 6, "test_cutoffs": [12, 14],
                     "model": {"encoder": None, "epochs": 1}, "bootstrap": 0, "baselines": ["persistence", "decayed"],
                     "max_users": 3000},
        "cache_dir": str(tmp_path / "cache"),
    })
    res = forecast_backtest(cfg)
    assert res["unit"] == "events" and "count events" in res["note"]
    assert res["protocol"]["users"].startswith("3000 of 22363")
    assert set(res["horizons"]) == {"1ev", "5ev"}
    e = res["horizons"]["5ev"]
    assert 0 < e["samples"] and 0 <= e["model"]["NDCG@10"] <= 1
    with pytest.raises(SplitError, match="a duration"):
        forecast_backtest(load_forecast_experiment(None, base={**cfg.model_dump(mode="json"), "forecast": {
            **cfg.forecast.model_dump(mode="json"), "horizons": ["7d"]}}))


def test_engagement_is_calibrated_whatever_the_ranking_head(sim_run):
    """The engagement probabilities come from the engagement head through its isotonic map, also
    on horizons whose categories are ranked by the share head."""
    from evorec.experiments.forecasting import load_forecast_run
    from evorec.forecasting.forecaster import Forecaster

    _, res, run = sim_run
    forecaster, _ = load_forecast_run(run)
    f = Forecaster.from_state(forecaster.model_state)
    for label, e in res["horizons"].items():
        assert e["model"]["ECE"] < 0.05, (label, e["model"]["ECE"], f.rank_source)
