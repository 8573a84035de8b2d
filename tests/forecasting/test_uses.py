"""Drift, segments, audiences and demand on hand-built forecasts with known answers (demand
intervals against a Monte-Carlo of Bernoulli draws), bad inputs, and the CLI plus the demand
backtest on a small real forecast run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from evorec.forecasting.audience import audience
from evorec.forecasting.demand import demand, demand_backtest
from evorec.forecasting.drift import DriftConfig, drift, drift_summary
from evorec.forecasting.metrics import jensen_shannon
from evorec.forecasting.predict import UserForecasts
from evorec.forecasting.segments import SegmentConfig, segments

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "configs" / "forecast" / "simulated.yaml"
DAY = 86_400


def make_uf(current, dist, engage, past=None, recent=None, horizons=(30 * DAY,)) -> UserForecasts:
    """UserForecasts from arrays: ``current`` (U, C); ``dist``, ``engage``, ``recent`` (U, H, C)
    or (U, C) for one horizon; ``past`` (U, C) defaults to 1 everywhere (no new category)."""
    current = np.asarray(current, dtype=np.float64)
    U, C = current.shape

    def three(a):  # (U, C) -> (U, 1, C)
        a = np.asarray(a)
        return a[:, None, :] if a.ndim == 2 else a

    dist, engage = three(dist).astype(np.float64), three(engage).astype(np.float64)
    return UserForecasts(
        users=[f"u{i:03d}" for i in range(U)],
        user_rows=np.arange(U),
        categories=["(unknown)"] + [f"c{i}" for i in range(1, C)],
        horizons=tuple(horizons),
        unit="seconds",
        cutoff=1_700_000_000,
        current=current,
        past=np.ones((U, C)) if past is None else np.asarray(past, dtype=np.float64),
        recent=np.zeros_like(dist, dtype=bool) if recent is None else three(recent).astype(bool),
        dist=dist,
        engage=engage,
    )


# --- drift --------------------------------------------------------------------------------


@pytest.fixture
def drift_uf() -> UserForecasts:
    """Users 0-4 over 3 known categories: stable, drifting, emerging, fading, all three;
    user 5 has a recent interest that fades but is too small to be a top interest."""
    cur = np.array([[0, .5, .5, 0], [0, 1, 0, 0], [0, .5, .5, 0], [0, .6, .4, 0], [0, 1, 0, 0], [0, .1, .9, 0]])
    dist = np.array([[0, .5, .5, 0], [0, 0, 1, 0], [0, .5, .5, 0], [0, .5, .5, 0], [0, 0, 0, 1], [0, .1, .9, 0]])
    eng = np.full((6, 4), 0.9)
    eng[:, 3] = 0.0
    eng[2, 3] = 0.8  # emerging: never touched c3, likely now
    eng[3, 1] = 0.1  # fading: recent top interest c1 (share .6), likely no engagement
    eng[4, 1], eng[4, 3] = 0.05, 0.7  # all three at once
    eng[5, 1] = 0.0  # recent, fading, but only 10% of current interest
    past = np.ones((6, 4))
    past[[2, 4], 3] = 0
    recent = np.zeros((6, 4), bool)
    recent[:, 1] = True
    return make_uf(cur, dist, eng, past, recent)


def test_drift_labels_shift_and_columns(drift_uf):
    t = drift(drift_uf, "30d")
    rows = t.to_pylist()
    assert [r["label"] for r in rows] == ["stable", "drifting", "emerging-interest", "fading", "emerging-interest", "stable"]
    np.testing.assert_allclose(t.column("shift").to_numpy(), jensen_shannon(drift_uf.current, drift_uf.dist[:, 0]))
    assert rows[1]["shift"] == pytest.approx(1.0)
    assert rows[2]["p_emerging"] == pytest.approx(0.8) and rows[0]["p_emerging"] == pytest.approx(0.0)
    assert rows[3]["fading_category"] == "c1" and rows[3]["p_fading"] == pytest.approx(0.9)
    assert rows[5]["fading_category"] is None and rows[5]["p_fading"] is None  # 10% share: not a top interest
    assert rows[0]["top_current"] == "c1" and rows[1]["top_forecast"] == "c2" and rows[4]["top_forecast"] == "c3"
    s = drift_summary(t)
    assert s["users"] == 6 and s["labels"] == {"stable": 2, "drifting": 1, "emerging-interest": 2, "fading": 1}
    assert s["shift"]["max"] == pytest.approx(1.0)


def test_drift_precedence_and_thresholds(drift_uf):
    def label(cfg: DriftConfig) -> str:
        return drift(drift_uf, "30d", cfg).column("label").to_pylist()[4]

    assert label(DriftConfig(precedence=["fading", "drifting", "emerging-interest"])) == "fading"
    assert label(DriftConfig(precedence=["drifting", "fading"])) == "drifting"
    assert label(DriftConfig(precedence=[])) == "stable"
    assert label(DriftConfig(emerging_p=0.75)) == "fading"  # p_emerging 0.7 no longer counts
    assert label(DriftConfig(emerging_p=0.75, fading_p=0.99)) == "drifting"
    assert label(DriftConfig(emerging_p=0.75, fading_p=0.99, drift_jsd=1.0)) == "stable"
    with pytest.raises(ValueError, match="unknown drift label"):
        DriftConfig(precedence=["drifting", "sideways"])
    with pytest.raises(ValueError):
        DriftConfig(drift_jsd_typo=0.2)
    with pytest.raises(KeyError, match="not one the forecaster was trained for"):
        drift(drift_uf, "7d")


# --- audience -----------------------------------------------------------------------------


def test_audience_order_reach_and_bad_inputs():
    p = np.array([0.2, 0.9, 0.5, 0.9, 0.0])
    eng = np.zeros((5, 3))
    eng[:, 2] = p
    uf = make_uf(np.full((5, 3), 1 / 3), np.full((5, 3), 1 / 3), eng)
    a = audience(uf, "c2", "30d", top=3)
    assert [u["user_id"] for u in a["users"]] == ["u001", "u003", "u002"]  # ties keep user order
    assert a["expected_reach_top"] == pytest.approx(2.3) and a["expected_reach_all"] == pytest.approx(2.5)
    assert a["n_users"] == 5 and a["category"] == "c2" and a["horizon"] == "30d"
    assert len(audience(uf, "c2", "30d", top=100)["users"]) == 5
    with pytest.raises(KeyError, match="unknown"):
        audience(uf, "c9", "30d", 3)
    with pytest.raises(KeyError):
        audience(uf, "(unknown)", "30d", 3)
    with pytest.raises(KeyError, match="trained for"):
        audience(uf, "c2", "90d", 3)
    with pytest.raises(ValueError, match="top"):
        audience(uf, "c2", "30d", 0)


# --- demand -------------------------------------------------------------------------------


def test_demand_matches_monte_carlo():
    rng = np.random.default_rng(0)
    U, C, R = 300, 21, 1000
    eng = rng.beta(0.5, 2.0, size=(U, C))  # (U, C)
    eng[:, 1] = 0.0  # nobody: interval [0, 0]
    eng[:, 2] = 0.002  # rare: the lower end is clipped at 0
    dist = rng.dirichlet(np.ones(C), size=U)  # (U, C)
    uf = make_uf(dist, dist, eng)
    rows = demand(uf, "30d", 0.95).to_pylist()
    assert [r["category_id"] for r in rows] == [f"c{i}" for i in range(1, C)]
    exp = np.array([r["expected_users"] for r in rows])
    np.testing.assert_allclose(exp, eng[:, 1:].sum(0))
    np.testing.assert_allclose([r["expected_share"] for r in rows], dist[:, 1:].mean(0))
    assert rows[0]["lower"] == rows[0]["upper"] == 0.0 and rows[1]["lower"] == 0.0
    lo, hi = np.array([r["lower"] for r in rows]), np.array([r["upper"] for r in rows])
    # Monte-Carlo: R worlds of independent Bernoulli engagements
    draws = np.stack([(rng.random((U, C - 1)) < eng[:, 1:]).sum(0) for _ in range(R)])  # (R, C - 1)
    np.testing.assert_allclose(draws.mean(0), exp, rtol=0.05, atol=0.2)
    np.testing.assert_allclose(draws.std(0), np.array([r["sd"] for r in rows]), rtol=0.08, atol=0.1)
    inside = (draws[:, 2:] >= lo[2:]) & (draws[:, 2:] <= hi[2:])  # the non-degenerate categories
    assert abs(inside.mean() - 0.95) < 0.03
    with pytest.raises(ValueError, match="confidence"):
        demand(uf, "30d", 1.5)
    with pytest.raises(KeyError):
        demand(uf, "1d")


# --- segments -----------------------------------------------------------------------------


def three_clusters(n=(50, 50, 5), seed=0) -> UserForecasts:
    """Clusters A (c1 -> c1), B (c2 -> c2) and a small C (mostly c1 plus c3), nearest to A."""
    rng = np.random.default_rng(seed)
    protos = [np.array([0, 1, 0, 0.0]), np.array([0, 0, 1, 0.0]), np.array([0, 0.7, 0, 0.3])]
    cur = np.concatenate([np.abs(p + rng.normal(0, 0.02, (k, 4))) for p, k in zip(protos, n)])
    cur /= cur.sum(1, keepdims=True)
    return make_uf(cur, cur, np.full(cur.shape, 0.5))


def test_segments_merge_small_cluster_into_nearest():
    uf = three_clusters()
    dt = drift(uf, "30d")
    res = segments(uf, SegmentConfig(k=3, min_size=20), drift_table=dt)
    assert not res.withheld and res.merged == 1
    seg = np.asarray(res.assignment.column("segment"))
    assert len(set(seg[:50])) == 1 and len(set(seg[50:100])) == 1 and seg[0] != seg[50]
    assert set(seg[100:]) == {seg[0]}  # the 5 joined A, their nearest
    ex = res.export()
    assert sorted(p["size"] for p in ex["segments"]) == [50, 55]
    assert all(p["size"] >= 20 for p in ex["segments"])
    assert ex["users"].num_rows == 105 and set(ex["users"].column_names) == {"user_id", "segment", "x", "y"}
    big = next(p for p in ex["segments"] if p["size"] == 55)
    assert big["top_now"][0]["category"] == "c1" and sum(big["drift_mix"].values()) == 55
    assert np.isfinite(np.asarray(res.assignment.column("x"))).all()


@pytest.mark.parametrize("method", ["kmeans", "hdbscan"])
def test_segments_every_exported_segment_is_large_enough(method):
    rng = np.random.default_rng(1)
    cur = rng.dirichlet(np.full(6, 0.3), size=130)  # (U, C) no clear structure
    uf = make_uf(cur, rng.dirichlet(np.full(6, 0.3), size=130), np.full((130, 6), 0.3))
    res = segments(uf, SegmentConfig(method=method, k=8, min_size=20, hdbscan_min_cluster_size=5))
    ex = res.export()
    assert ex["segments"] and all(p["size"] >= 20 for p in ex["segments"])
    assert sum(p["size"] for p in ex["segments"]) == ex["users"].num_rows == 130


def test_segments_withheld_when_too_few_users():
    uf = three_clusters()
    res = segments(uf, SegmentConfig(k=3, min_size=106))
    assert res.withheld and "fewer than min_size=106" in res.reason
    ex = res.export()
    assert ex["withheld"] and ex["segments"] == [] and ex["users"].num_rows == 0
    with pytest.raises(KeyError):
        segments(uf, SegmentConfig(horizon="7d"))


# --- a small real run: the demand backtest and the CLI ------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from evorec.experiments.config import load_forecast_experiment
    from evorec.experiments.forecasting import forecast_backtest

    tmp = tmp_path_factory.mktemp("uses")
    overrides = [
        "simulate.users=200", "forecast.model.epochs=1", "forecast.model.encoder=null", "forecast.bootstrap=0",
        "forecast.horizons=[7d, 30d]", "forecast.baselines=[persistence]", "forecast.train_every=56d",
        f"cache_dir={tmp / 'cache'}",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVOREC_SECRET", "benchmark")
        forecast_backtest(load_forecast_experiment(SIM, overrides), tmp / "run")
        yield tmp / "run"


def test_demand_backtest_counts_what_happened(small_run):
    from evorec.data.splits import SplitError
    from evorec.experiments.forecasting import load_forecast_run

    forecaster, seq = load_forecast_run(small_run)
    res = demand_backtest(forecaster, seq, ["2025-06-15"], "30d")
    T, h = 1_749_945_600, 30 * DAY  # 2025-06-15 UTC
    # brute force: users with history before T and >= 1 event of the category in [T, T + h)
    off, ts, cat = np.asarray(seq.offsets), np.asarray(seq.ts), np.asarray(seq.category)
    want = {}
    for u in range(len(off) - 1):
        t, c = ts[off[u]:off[u + 1]], cat[off[u]:off[u + 1]]
        if (t < T).any():
            for k in set(c[(t >= T) & (t < T + h)].tolist()):
                want[k] = want.get(k, 0) + 1
    cut = res["cutoffs"][0]
    got = {i + 1: r["actual"] for i, r in enumerate(cut["categories"])}
    assert got == {k: want.get(k, 0) for k in got}
    assert 0 <= cut["coverage"] <= 1 and cut["wape_model"] >= 0 and cut["wape_persistence"] >= 0
    with pytest.raises(SplitError, match="after the data ends"):
        demand_backtest(forecaster, seq, ["2025-12-20"], "30d")


def test_cli_commands(small_run, monkeypatch):
    from evorec.cli.main import app

    monkeypatch.setenv("EVOREC_SECRET", "benchmark")
    runner = CliRunner()
    run = ["--run", str(small_run), "--cutoff", "2025-10-01"]

    def ok(*args):
        r = runner.invoke(app, ["forecast", *args, *run, "--json"])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    d = ok("drift", "--horizon", "7d", "--set", "drift_jsd=0.3")
    assert d["config"]["drift_jsd"] == 0.3 and len(d["users"]) == d["summary"]["users"] > 0
    assert sum(d["summary"]["labels"].values()) == d["summary"]["users"]
    s = ok("segments", "--k", "4", "--min-size", "30")
    assert s["segments"] and all(p["size"] >= 30 for p in s["segments"])
    assert ok("segments", "--min-size", "100000")["withheld"]
    a = ok("audience", "c001", "--top", "5")
    assert len(a["users"]) == 5 and a["expected_reach_top"] <= a["expected_reach_all"]
    m = ok("demand", "--backtest-cutoffs", "2025-06-15,2025-09-15")
    assert len(m["categories"]) > 0 and len(m["backtest"]["cutoffs"]) == 2
    assert set(m["backtest"]["mean"]) == {"wape_model", "wape_persistence", "coverage"}
    out = small_run.parent / "drift.parquet"
    r = runner.invoke(app, ["forecast", "drift", *run, "--out", str(out)])
    assert r.exit_code == 0 and out.exists() and "stable" in r.stdout
    assert pq.read_table(out).num_rows == d["summary"]["users"]
    for bad, msg in [
        (["audience", "nope", *run], "unknown to the model"),
        (["audience", "c001", *run, "--top", "0"], "--top"),
        (["drift", *run, "--horizon", "2d"], "trained for"),
        (["demand", *run, "--backtest-cutoffs", "2025-12-20"], "after the data ends"),
        (["segments", *run, "--method", "dbscan"], "method"),
    ]:
        r = runner.invoke(app, ["forecast", *bad])
        assert r.exit_code == 2, (bad, r.output)
        assert msg in r.output


def test_old_top_level_names_are_hidden_deprecated_aliases(small_run, monkeypatch, caplog):
    """`evorec drift ...` (before `evorec forecast drift ...`) still works for one release: the
    same output, a deprecation warning in the log, and no line in `evorec --help`."""
    from evorec.cli.main import app

    monkeypatch.setenv("EVOREC_SECRET", "benchmark")
    runner = CliRunner()
    args = ["--run", str(small_run), "--cutoff", "2025-10-01", "--k", "4", "--min-size", "30", "--json"]
    new = runner.invoke(app, ["forecast", "segments", *args])
    assert new.exit_code == 0, new.output
    assert "deprecated" not in caplog.text
    old = runner.invoke(app, ["segments", *args])
    assert old.exit_code == 0, old.output
    assert json.loads(old.stdout) == json.loads(new.stdout)
    assert "`evorec segments` is deprecated" in caplog.text and "use `evorec forecast segments`" in caplog.text
    r = runner.invoke(app, ["audience", "nope", "--run", str(small_run), "--cutoff", "2025-10-01"])
    assert r.exit_code == 2 and "unknown to the model" in r.output  # the same user errors
    top = runner.invoke(app, ["--help"]).stdout
    forecast = runner.invoke(app, ["forecast", "--help"]).stdout
    for name in ("drift", "segments", "audience", "demand"):
        assert f" {name} " not in top and f" {name} " in forecast, name
