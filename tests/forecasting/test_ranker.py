"""The stacked ranker and the new baselines end to end on the real Complete Journey sample: the
JSON layout (two rankings, paired differences, scored counts, selection), category 0 never
ranked, signals against a brute force from the raw CSV, the saved run forecasting again, and bad
inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evorec.experiments.config import load_forecast_experiment
from evorec.experiments.forecasting import forecast_backtest, forecast_data, forecast_run
from evorec.forecasting import nbr
from evorec.forecasting.ranker import FEATURES, GROUPS, RankerConfig, RankerForecaster, SignalContext, signals
from evorec.forecasting.windows import build_samples

ROOT = Path(__file__).resolve().parents[2]
CJ = ROOT / "configs" / "forecast" / "completejourney.yaml"
DATA = ROOT.parent / "shared" / "data" / "dunnhumby_completejourney_sample"
DAY = 86_400
QUICK = [
    "data.pseudonymize=false", "forecast.model.kind=ranker", "forecast.refit=once", "forecast.model.ranker.rounds=40",
    "forecast.bootstrap=100", "forecast.max_users=900",
    "forecast.horizons=[7d,30d]", "forecast.tifu_grid.r_g=[0.9]", "forecast.tifu_grid.m=[7]", "forecast.tifu_grid.k=[100]",
    "forecast.tifu_grid.alpha=[0.0,0.5]", "forecast.tifu_grid.metric=[cosine]", "forecast.tifu_grid.r_b=[1.0]",
]

pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"real data not found: {DATA}")


@pytest.fixture(scope="module")
def cj_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cj")
    cfg = load_forecast_experiment(CJ, QUICK + [f"cache_dir={tmp / 'cache'}"])
    res = forecast_backtest(cfg, tmp / "run")
    return cfg, res, tmp / "run"


def test_ranker_backtest_layout_and_selection(cj_run):
    _, res, run = cj_run
    p = res["protocol"]
    assert p["baskets"] == "basket_id" and p["no_category"]["events"] > 0
    assert p["model"]["kind"] == "ranker"
    for label in ("7d", "30d"):
        e = res["horizons"][label]
        assert {"ptopfreq", "tifu_knn"} <= set(e["baselines"])
        for m in (e["model"], *e["baselines"].values()):
            for k in ("NDCG@10", "EmergingRecall@10", "EmergingNDCG@10", "MixedEmergingRecall@10"):
                assert 0 <= m[k] <= 1
        assert e["scored"]["NDCG@10"] == e["active_samples"] < e["samples"]
        assert e["scored"]["EmergingRecall@10"] < e["scored"]["NDCG@10"]  # only users with an emerging category
        d = e["paired"]["tifu_knn"]["NDCG@10"]
        assert d["ci"][0] <= d["mean"] <= d["ci"][1]
        sel = p["model"]["selection"][label]
        assert sel["all"] in ("ranker", *e["baselines"]) and sel["new"] in ("ranker", *e["baselines"])
        # the new list finds more emerging interests than the single mixed ranking
        assert e["model"]["EmergingRecall@10"] > e["model"]["MixedEmergingRecall@10"]
        # engagement probabilities are calibrated over every user, not only those active in the
        # window (most users have no event in a 7-day window): as well as the tuned baseline's
        assert e["model"]["ECE"] <= e["baselines"]["tifu_knn"]["ECE"] + 0.0005, (label, e["model"]["ECE"])  # fitted on active users only: 0.005
        assert e["model"]["Brier"] <= 1.05 * e["baselines"]["tifu_knn"]["Brier"], (label, e["model"]["Brier"])
    tuned = res["tuned"]["tifu_knn"]["30d"]
    assert tuned["all"]["k"] == 100 and tuned["new"]["metric"] == "cosine"
    assert json.loads((run / "backtest.json").read_text())["horizons"]["30d"]["model"] == pytest.approx(
        res["horizons"]["30d"]["model"], nan_ok=True)


def test_saved_ranker_forecasts_again_with_both_lists(cj_run):
    _, _, run = cj_run
    uf = forecast_run(run, "2017-09-15", ["30d"])
    assert uf.engage.shape[1] == 1 and (uf.engage[:, 0, 0] == 0).all()  # category 0 never forecast
    assert np.all((uf.engage >= 0) & (uf.engage <= 1))
    row = int(np.argmax(uf.past.sum(1)))
    new = uf.new_list(row, 0)
    assert len(new) == 10 and all(uf.past[row, c] == 0 and c > 0 for c in new)
    top = uf.ranked(row, 0, 10)
    assert 0 not in top and len(top) == 10
    assert np.all(np.diff(uf.engage[row, 0, top]) <= 1e-12)  # calibrated probabilities follow the ranking


def test_signals_match_a_brute_force_from_the_csv(cj_run):
    cfg, _, _ = cj_run
    seq = forecast_data(cfg)
    T = int(pd.Timestamp("2017-07-01", tz="UTC").timestamp())
    s = build_samples(seq, [T], [30 * DAY], visible_until=T)
    sc = SignalContext(seq, nbr.basket_ordinals(seq), nbr.TifuParams(1.0, 0.9, 7, 50, 0.0, "cosine"))
    X = signals(s, seq, 0, sc, narrow_k=10)
    assert X.shape == (len(s), seq.categories.size, len(FEATURES))
    calendar = [FEATURES.index(f) for f in GROUPS["calendar"]]
    assert np.isnan(X[:, :, calendar]).all()  # a one-year log knows nothing of a year ago: missing, not zero
    assert np.isfinite(np.delete(X, calendar, axis=2)).all()
    tx = pd.read_csv(DATA / "transactions_sample.csv")
    pr = pd.read_csv(DATA / "products.csv")
    tx = tx.merge(pr[["product_id", "product_category"]], on="product_id", how="left")
    tx["t"] = (pd.to_datetime(tx.transaction_timestamp, utc=True) - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta("1s")
    tx = tx[tx.t < T]
    cats = {c: i + 1 for i, c in enumerate(seq.categories.ids.to_pylist())}
    users = seq.users.reverse(s.users + 1)
    busy = np.argsort(-(s.hist_end - s.hist_start))[:5]
    checked = 0
    for i in busy:
        u = tx[tx.household_id.astype(str) == str(users[i])]
        assert len(u) == s.hist_end[i] - s.hist_start[i]
        for cat, g in u.dropna(subset=["product_category"]).groupby("product_category"):
            c = cats[cat]
            f = dict(zip(FEATURES, X[i, c]))
            assert f["ptop"] == g.basket_id.nunique()  # baskets holding the category
            checked += 1
            assert f["days_since"] == pytest.approx((T - g.t.max()) / DAY, rel=1e-5)
            if g.basket_id.nunique() >= 2:
                first, last = g.groupby("basket_id").t.max().agg(["min", "max"])
                assert f["user_interval"] == pytest.approx((last - first) / DAY / (g.basket_id.nunique() - 1), rel=1e-5)
        assert X[i, 0, FEATURES.index("baskets")] == u.basket_id.nunique()
    assert checked > 50


def test_bad_inputs(cj_run, tmp_path):
    cfg, _, _ = cj_run
    with pytest.raises(ValueError, match="kind"):
        load_forecast_experiment(CJ, ["forecast.model.kind=prophet"])
    with pytest.raises(ValueError, match="metric"):
        load_forecast_experiment(CJ, ["forecast.tifu_grid.metric=[manhattan]"])
    seq = forecast_data(cfg)
    T = int(pd.Timestamp("2017-03-01", tz="UTC").timestamp())
    ranker = RankerForecaster(RankerConfig(), (30 * DAY,), {30 * DAY: nbr.TifuParams()})
    with pytest.raises(ValueError, match="no training window of 30 days ends by the fit origin"):
        ranker.fit(seq, nbr.basket_ordinals(seq), T, [T - 10 * DAY])


def test_explanations_add_up_and_bad_inputs_are_named(cj_run):
    from typer.testing import CliRunner

    from evorec.cli.main import app
    from evorec.experiments.forecasting import explain_run, load_forecast_run

    _, _, run = cj_run
    uf = forecast_run(run, "2017-09-15", ["30d"])
    row = int(np.argmax(uf.past.sum(1)))
    user = uf.users[row]
    top = uf.ranked(row, 0)[0]
    ex = explain_run(run, user, uf.categories[top], "2017-09-15", "30d")
    assert ex.rank == 1 and not ex.no_history and ex.p_engage == pytest.approx(uf.engage[row, 0, top])
    # the groups' contributions plus the base are the ranker's raw score for that pair
    forecaster, seq = load_forecast_run(run)
    model = forecaster.build_model()
    T = int(pd.Timestamp("2017-09-15", tz="UTC").timestamp())
    s = build_samples(seq, [T], list(model.horizons), visible_until=T, users=np.array([uf.user_rows[row]]))
    raw, _ = model.predict(s, seq, forecaster.context.over(seq).baskets)
    j = list(model.horizons).index(30 * DAY)
    assert ex.base + sum(ex.contributions.values()) == pytest.approx(raw[0, j, top], abs=1e-6)
    assert all(e["item_id"] for e in ex.past_events) and len(ex.past_events) == min(10, int(uf.past[row, top]))
    new_c = uf.new_list(row, 0)[0]
    ex_new = explain_run(run, user, uf.categories[new_c], "2017-09-15", "30d")
    assert ex_new.new_category and ex_new.new_rank == 1 and ex_new.past_events == []
    with pytest.raises(KeyError, match="did you mean 'FLUID MILK PRODUCTS'"):
        explain_run(run, user, "FLUID MILK PRODUCT", "2017-09-15", "30d")
    early = set(forecast_run(run, "2017-01-15", ["30d"]).users)
    late = next(u for u in seq.users.ids.to_pylist() if u not in early)
    ex_none = explain_run(run, late, uf.categories[top], "2017-01-15", "30d")
    assert ex_none.no_history and 0 <= ex_none.p_engage <= 1 and "population trend" in ex_none.contributions
    cli = CliRunner()
    r = cli.invoke(app, ["forecast", "explain", str(run), "--user", user, "--category", uf.categories[top], "--cutoff", "2017-09-15",
                         "--horizon", "30d", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["rank"] == 1
    r = cli.invoke(app, ["forecast", "explain", str(run), "--user", user, "--category", "nope", "--cutoff", "2017-09-15"])
    assert r.exit_code == 2 and "unknown category 'nope'" in r.output
    r = cli.invoke(app, ["forecast", "explain", str(run), "--user", "ghost", "--category", uf.categories[top], "--cutoff", "2017-09-15"])
    assert r.exit_code == 2 and "unknown user" in r.output


def test_service_explains_a_live_users_interests(cj_run, tmp_path):
    """/v1/users/{id}/interests?explain=true: every listed category carries the signal groups that
    drive its ranker score, and they add up to the score that ranks it."""
    from fastapi.testclient import TestClient

    from evorec.serving.app import create_app
    from evorec.serving.eventlog import EventStore
    from evorec.serving.settings import ServeSettings
    from evorec.serving.state import ServiceState

    _, _, run = cj_run
    settings = ServeSettings(forecast_run=str(run), db_url=f"sqlite:///{tmp_path / 's.db'}", pseudonymize=False)
    state = ServiceState(EventStore(settings.db_url), None, forecast_run=settings.forecast_run)
    client = TestClient(create_app(settings, state))
    key = {"Authorization": f"Bearer {state.store.create_key('write')}"}
    seq = state.forecast.seq
    items = seq.items.ids.to_pylist()[:40]
    t0 = int(pd.Timestamp("2017-06-01", tz="UTC").timestamp())
    events = [{"user_id": "hh", "item_id": it, "ts": t0 + 3 * DAY * (t // 3), "behavior": "buy"} for t, it in enumerate(items)]
    assert client.post("/v1/events", json={"events": events}, headers=key).json()["accepted"] == 40
    plain = client.get("/v1/users/hh/interests?horizons=30d&top=5", headers=key).json()
    r = client.get("/v1/users/hh/interests?horizons=30d&top=5&explain=true", headers=key)
    assert r.status_code == 200, r.text
    f = r.json()["forecasts"]["30d"]
    assert [c["category_id"] for c in f["categories"]] == [c["category_id"] for c in plain["forecasts"]["30d"]["categories"]]
    assert f["categories"] and f["new"]
    for c in f["categories"] + f["new"]:
        ex = c["explanation"]
        assert set(ex["groups"]) == set(GROUPS) and len(ex["top_signals"]) == 3
        assert ex["base"] + sum(ex["groups"].values()) == pytest.approx(ex["score"], abs=1e-6)
    hist_cats = {c["category_id"] for c in r.json()["current"]}
    assert not hist_cats & {c["category_id"] for c in f["new"]}


def test_selection_keeps_the_baseline_unless_the_ranker_is_better_beyond_noise():
    from evorec.forecasting.backtest import _better

    rng = np.random.default_rng(0)
    base = rng.random(2000)
    assert _better(base + 0.01, base, "tifu_knn") == "ranker"  # better on every sample
    assert _better(base - 0.01, base, "tifu_knn") == "tifu_knn"
    assert _better(base.copy(), base, "tifu_knn") == "tifu_knn"  # a tie: the simpler method
    noisy = base + rng.normal(0.0004, 0.1, 2000)  # a higher mean, within noise
    assert noisy.mean() > base.mean() and _better(noisy, base, "population") == "population"
    assert _better(np.full(5, np.nan), np.full(5, np.nan), "persistence") == "persistence"  # nothing scored on validation
    assert _better(np.array([1.0, np.nan]), np.array([0.0, np.nan]), "markov") == "markov"  # one sample is no evidence


def test_refit_per_origin_fits_again_at_every_test_cutoff(cj_run, tmp_path):
    """``forecast.refit: per_origin``: the ranker is fitted again at each test cutoff with every
    window that ends by it; the first cutoff's model is the one of ``once``, the baselines are the
    same, and the saved forecaster is the one of the last cutoff."""
    from evorec.experiments.forecasting import load_forecast_run

    cfg, once, _ = cj_run
    cfg2 = load_forecast_experiment(CJ, QUICK + [f"cache_dir={cfg.cache_dir}", "forecast.refit=per_origin"])
    res = forecast_backtest(cfg2, tmp_path / "run")
    m, m_once = res["protocol"]["model"], once["protocol"]["model"]
    assert m["refit"] == "per_origin" and m_once["refit"] == "once"
    assert len(m["fit_origins"]) == 3 and m["fit_origins"] == sorted(m["fit_origins"]) and m["fit_origins"][0] == m_once["fit_origins"][0]
    assert m["selection"] == m_once["selection"]  # selection is on validation, before any test cutoff
    for label in ("7d", "30d"):
        assert res["horizons"][label]["baselines"] == once["horizons"][label]["baselines"]
        if m["selection"][label]["all"] == "ranker":  # the later cutoffs are ranked by the refitted models
            assert res["horizons"][label]["model"]["NDCG@10"] != once["horizons"][label]["model"]["NDCG@10"]
    payload, _ = load_forecast_run(tmp_path / "run")
    assert payload.build_model().origin == m["fit_origins"][-1]


def test_training_rows_stay_within_max_rows(cj_run):
    """Past ``max_rows`` negatives are kept at the lower rate that fits; every positive is kept
    and never fewer negatives than positives (in expectation)."""
    r = RankerForecaster(RankerConfig(max_rows=1000), (DAY,), {DAY: nbr.TifuParams()})
    assert r._negative_rate(100, 100_000, DAY) == pytest.approx(900 / 100_000)
    assert r._negative_rate(2000, 100_000, DAY) == pytest.approx(2000 / 100_000)  # one negative per positive
    assert r._negative_rate(10, 1000, DAY) == 0.2  # within the bound: the configured rate
    assert RankerForecaster(RankerConfig(max_rows=None), (DAY,), {DAY: nbr.TifuParams()})._negative_rate(10**6, 10**9, DAY) == 0.2
    cfg, _, _ = cj_run
    seq = forecast_data(cfg)
    T = int(pd.Timestamp("2017-06-01", tz="UTC").timestamp())
    cuts = [T - k * 14 * DAY for k in range(3, 8)]
    capped = RankerForecaster(RankerConfig(rounds=5, max_rows=20_000), (30 * DAY,), {30 * DAY: nbr.TifuParams()})
    capped.fit(seq, nbr.basket_ordinals(seq), T, cuts)
    h = capped.history[0]
    assert h["negative_rate"] < 0.2 and h["rows"] <= 1.05 * max(20_000, 2 * h["positives"]), h
    free = RankerForecaster(RankerConfig(rounds=5), (30 * DAY,), {30 * DAY: nbr.TifuParams()}).fit(seq, nbr.basket_ordinals(seq), T, cuts)
    assert free.history[0]["negative_rate"] == 0.2 and free.history[0]["positives"] == h["positives"] and free.history[0]["rows"] > h["rows"]


def test_a_horizon_without_a_validation_window_takes_the_longest_validated_horizons_choice():
    from evorec.forecasting.backtest import _unvalidated

    choice = {"7d": {"all": "tifu_knn", "new": "ranker"}, "30d": {"all": "ranker", "new": "tifu_knn"}}
    got = _unvalidated(90 * DAY, (7 * DAY, 30 * DAY), choice, "seconds")
    assert (got["all"], got["new"]) == ("ranker", "tifu_knn") and "30d" in got["why"]
    got = _unvalidated(3 * DAY, (7 * DAY, 30 * DAY), choice, "seconds")  # only longer horizons validated: the shortest of them
    assert (got["all"], got["new"]) == ("tifu_knn", "ranker")
    got = _unvalidated(90 * DAY, (), {}, "seconds")  # nothing validated at all: no evidence either way, the ranker stands
    assert (got["all"], got["new"]) == ("ranker", "ranker")


def test_selection_cutoffs_are_non_overlapping_windows_between_validation_and_test():
    from evorec.forecasting.backtest import _selection_cutoffs

    r = {"unit": "seconds", "valid": 0, "tests": [100 * DAY]}
    assert _selection_cutoffs(30 * DAY, r, 1) == [0]
    assert _selection_cutoffs(30 * DAY, r, 4) == [10 * DAY, 40 * DAY, 70 * DAY]  # 3 fit: the 4th would start before the validation cutoff
    assert _selection_cutoffs(7 * DAY, r, 2) == [86 * DAY, 93 * DAY]  # the latest first
    assert _selection_cutoffs(5, {**r, "unit": "events"}, 4) == [0]  # horizons counted in events: the validation cutoff alone


def test_selection_on_several_windows_end_to_end(tmp_path):
    cfg = load_forecast_experiment(CJ, QUICK + ["forecast.selection_windows=3", f"cache_dir={tmp_path / 'cache'}"])
    res = forecast_backtest(cfg, tmp_path / "run")
    test0 = res["protocol"]["test_cutoffs"][0]
    valid = res["protocol"]["valid_cutoff"]
    for label, h in (("7d", 7 * DAY), ("30d", 30 * DAY)):
        sel = res["protocol"]["model"]["selection"][label]
        w = sel["valid_windows"]
        assert len(w) == 3 and w[0] >= valid and w[-1] + h <= test0 and all(b - a >= h for a, b in zip(w, w[1:]))
        assert sel["valid_samples"] > 0 and sel["all"] in ("ranker", "tifu_knn", "ptopfreq", "persistence", "decayed", "population", "markov")


def test_the_baseline_held_against_the_ranker_is_tifu_knn_unless_another_beats_it_beyond_noise():
    from evorec.forecasting.backtest import _best_baseline

    rng = np.random.default_rng(1)
    tifu = rng.random(3000)
    noise = rng.normal(0.0, 0.1, 3000)
    vecs = {"tifu_knn": tifu, "markov": tifu + noise - noise.mean() + 0.0003, "population": tifu - 0.01}
    means = {b: float(np.nanmean(v)) for b, v in vecs.items()}
    assert means["markov"] > means["tifu_knn"] and _best_baseline(vecs, means) == "tifu_knn"  # a higher mean within noise
    vecs["persistence"] = tifu + 0.02
    means["persistence"] = float(np.nanmean(vecs["persistence"]))
    assert _best_baseline(vecs, means) == "persistence"  # better on every sample
    del vecs["tifu_knn"], means["tifu_knn"]
    assert _best_baseline(vecs, means) == "persistence"  # no TIFU-KNN reported: the best mean
