"""`evorec report` on real ML-100K runs (a small SASRec and an interest forecaster): numbers in
the figures checked against the raw file and the model, every figure drawn by both renderers,
bad inputs, a killed build, the CLI, and the page in a real Chromium."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evorec.report import ReportError, build_report
from evorec.report import figures as F
from evorec.report.build import load_run
from evorec.report.sections import dataset_overview, interest_evolution, user_page

_spec = importlib.util.spec_from_file_location(
    "evorec_tests_training_conftest_report", Path(__file__).resolve().parents[1] / "training" / "conftest.py"
)
_training = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_training)
ML100K = _training.ML100K
DAY = 86_400


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(model run, forecast run) on real ML-100K."""
    from evorec.experiments.config import load_experiment, load_forecast_experiment
    from evorec.experiments.forecasting import forecast_backtest
    from evorec.experiments.training import train

    tmp = tmp_path_factory.mktemp("report")
    cfg = load_experiment(None, base=_training.experiment(tmp, epochs=2, max_len=30,
                                                          model_cfg={"hidden": 32, "layers": 1, "heads": 1, "max_len": 30}))
    _, model_run = train(cfg, tmp / "sasrec")
    fcfg = load_forecast_experiment(None, base={
        "data": {"path": str(ML100K), "format": "recbole", "dataset": "ml100k", "pseudonymize": False},
        "forecast": {"horizons": ["7d", "30d"], "train_every": "14d", "train_start": "1997-10-15", "valid_cutoff": "1998-01-15",
                     "test_cutoffs": ["1998-02-15", "1998-03-15"], "min_history": 1,
                     "model": {"encoder": "gru4rec", "epochs": 2, "batch_size": 256}},
        "cache_dir": str(tmp.parent / "evorec-cache"),
    })
    forecast_backtest(fcfg, tmp / "forecast")
    return Path(model_run), tmp / "forecast"


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report"
    manifest = build_report(list(runs), out, n_users=2, users=["13"], seed=1)
    return out, manifest


# -- numbers in the figures ---------------------------------------------------------------------


def _raw_ml100k():
    import pandas as pd

    return pd.read_csv(ML100K, sep="\t")


def test_overview_counts_match_the_raw_file(runs):
    run = load_run(runs[0])
    sec = dataset_overview(run.seq, "ml100k", "t")
    raw = _raw_ml100k()
    facts = dict((r[0], r[1]) for r in sec.tables[0].rows)
    assert facts["events"] == f"{len(raw):,}" and facts["users"] == f"{raw.iloc[:, 0].nunique():,}"
    # events per week: the figure's series against a count of the raw timestamps
    fig = next(f for f in sec.figures if f.id == "t-events")
    total = np.sum([np.asarray(s.y) for s in fig.chart.series], axis=0)
    weeks = np.asarray(raw.iloc[:, 3].astype("int64"), dtype="datetime64[s]").astype("datetime64[W]")
    keys, counts = np.unique(weeks, return_counts=True)
    assert [str(k) for k in keys.astype("datetime64[D]")] == list(fig.chart.series[0].x)
    assert total.tolist() == counts.tolist()
    # sequence lengths: every user counted once
    lengths = next(f for f in sec.figures if f.id == "t-lengths")
    assert sum(lengths.chart.groups[0].values) == raw.iloc[:, 0].nunique()


def test_population_shares_and_forecast_band(runs):
    fr = load_run(runs[1])
    sec, uf = interest_evolution(fr, "t")
    shares = next(f for f in sec.figures if f.id == "t-shares").chart
    np.testing.assert_allclose(shares.values.sum(0), 1.0, atol=1e-9)  # each bucket's shares sum to 1
    np.testing.assert_allclose(shares.forecast.sum(0), 1.0, atol=1e-6)  # so do the forecast's
    assert np.all(shares.forecast_lower <= shares.forecast + 1e-12) and np.all(shares.forecast <= shares.forecast_upper + 1e-12)
    assert shares.cutoff == "1998-03-15"  # the run's last test cutoff
    # the realised shares of the 7d window, against the raw file
    raw = _raw_ml100k()
    t0 = int(np.datetime64("1998-03-15", "s").astype(np.int64))
    realised = shares.realised[:, 0]
    assert math.isclose(realised.sum(), 1.0, rel_tol=1e-9)
    n_window = int(((raw.iloc[:, 3] >= t0) & (raw.iloc[:, 3] < t0 + 7 * DAY)).sum())
    assert n_window > 0
    sankey = next(f for f in sec.figures if f.id == "t-sankey").chart
    out_of_first = sum(v for s, _, _, v in sankey.links if s == 0)
    assert out_of_first == len(uf.users)  # every forecast user flows through every stage
    assert {f.id for f in sec.figures} >= {"t-h-ndcg10", "t-h-jsd"}


def test_user_page_recommendations_are_the_models_top_k(runs):
    import torch

    from evorec.data.batches import gather, to_batch

    run = load_run(runs[0])
    page = user_page("13", model=run, k=5, fid="t")
    recs = [row[1] for row in page.tables[0].rows]
    assert len(recs) == 5
    seq = run.seq
    row = seq.vocabs.users.index_of("13") - 1
    a, b = int(seq.offsets[row]), int(seq.offsets[row + 1])
    from evorec.models.checkpoint import load_model

    model = load_model(run.checkpoint)
    batch = to_batch(gather(seq, np.array([a]), np.array([b]), 30), np.array([int(seq.ts[b - 1]) + 1]), np.array([row + 1]))
    with torch.no_grad():
        s = model.score(batch)[0]
    s[0] = -float("inf")
    s[torch.from_numpy(np.unique(np.asarray(seq.item)[a:b]).astype(np.int64))] = -float("inf")
    want = [seq.vocabs.items.id_of(int(i)) for i in torch.topk(s, 5).indices]
    assert recs == want
    seen = set(seq.vocabs.items.reverse(np.asarray(seq.item)[a:b]))
    assert not seen & set(recs)
    whys = [f for f in page.figures if "-why" in f.id]
    assert len(whys) == 3 and all(len(f.chart.labels) > 0 for f in whys)
    assert user_page("no-such-user", model=run) is None


# -- the written report -------------------------------------------------------------------------


def test_report_files(report):
    out, manifest = report
    html = (out / "index.html").read_text()
    assert manifest["figures"] == len(manifest["png"]) > 10
    for p in manifest["png"]:
        data = (out / p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # self-contained: plotly.js inline, no external script or stylesheet
    assert not re.search(r"<script[^>]+src=", html) and not re.search(r"<link[^>]+href=\"?https?:", html)
    assert "Plotly" in html and len(html) > 3_000_000
    assert "13" in manifest["users"] and len(manifest["users"]) == 3
    ids = [f for s in manifest["sections"] for f in s["figures"]]
    for fid in ("ml100k-events", "ml100k-metrics", "ml100k-ttq", "ml100k-confusion", "ml100k-shares", "ml100k-sankey", "ml100k-segmap"):
        assert fid in ids
    assert json.loads((out / "report.json").read_text())["figures"] == manifest["figures"]
    assert not list(out.parent.glob(".report.*"))  # no temp dir left behind


def test_every_chart_kind_renders_with_both_libraries(tmp_path):
    charts = [
        F.Lines([F.Series("a", [1, 2, 3], [1.0, 2.0, 1.5], [0.5, 1.5, 1.0], [1.5, 2.5, 2.0])], hlines=[(1.0, "ref")], vline=(2, "cut")),
        F.Bars(["x", "y"], [F.BarGroup("g", [1.0, 2.0], [0.5, 1.5], [1.5, 2.5]), F.BarGroup("pub", [1.2, float("nan")], hatched=True)]),
        F.Bars(["x", "y"], [F.BarGroup("g", [1.0, -2.0])], horizontal=True),
        F.Areas(["2024-01-01", "2024-01-08"], ["a", "other"], np.array([[1.0, 2.0], [3.0, 1.0]]), x_dates=True, centered=True,
                cutoff="2024-01-08", forecast_x=["2024-01-08", "2024-01-15"], forecast=np.array([[1.0, 1.0], [2.0, 2.0]]),
                forecast_lower=np.array([[0.5, 0.5], [1.5, 1.5]]), forecast_upper=np.array([[1.5, 1.5], [2.5, 2.5]]),
                realised_x=["2024-01-15"], realised=np.array([[1.0], [2.0]])),
        F.Flows(["p1", "p2", "p3"], ["a", "b"], [(0, "a", "b", 3), (0, "b", "b", 1), (1, "b", "a", 4), (0, "a", "inactive", 2)]),
        F.Points([0.0, 1.0, 2.0], [1.0, 0.0, 1.0], ["s0", "s1", "s0"], hover=["u1", "u2", "u3"]),
        F.Grid(["a", "b"], ["a", "b"], np.array([[0.9, 0.1], [0.2, 0.8]]), text=np.array([[9, 1], [2, 8]])),
    ]
    for i, c in enumerate(charts):
        fig = F.Figure(f"f{i}", f"chart {i}", c)
        assert len(F.to_plotly(fig).data) > 0
        path = F.save_png(fig, tmp_path)
        assert path.read_bytes()[:4] == b"\x89PNG"
    sank = F.to_plotly(F.Figure("s", "s", charts[4])).data[0]
    assert sum(sank.link.value) == 10 and list(sank.node.label) == ["a", "b", "b", "inactive", "a"]  # per stage: a b | b inactive | a


# -- bad inputs and failures --------------------------------------------------------------------


def test_bad_inputs_are_refused_with_the_reason(runs, tmp_path):
    model_run, forecast_run = runs
    with pytest.raises(ReportError, match="no such run directory"):
        build_report([tmp_path / "missing"], tmp_path / "o1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="neither a training run"):
        build_report([tmp_path / "empty"], tmp_path / "o2")
    with pytest.raises(ReportError, match="at least one run"):
        build_report([], tmp_path / "o3")
    with pytest.raises(ReportError, match="none of the runs' data"):
        build_report([forecast_run], tmp_path / "o4", users=["nobody-42"], n_users=0)
    occupied = tmp_path / "mine"
    occupied.mkdir()
    (occupied / "thesis.tex").write_text("precious")
    with pytest.raises(ReportError, match="not an evorec report directory"):
        build_report([forecast_run], occupied, n_users=0)
    assert (occupied / "thesis.tex").read_text() == "precious"
    # a corrupt metrics.json is named, and --no-evaluate refuses an unevaluated run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(model_run, copy)
    (copy / "metrics.json").write_text("{not json")
    with pytest.raises(ReportError, match="metrics.json is not valid JSON"):
        build_report([copy], tmp_path / "o5", n_users=0)
    (copy / "metrics.json").unlink()
    with pytest.raises(ReportError, match="has not been evaluated"):
        build_report([copy], tmp_path / "o6", n_users=0, evaluate=False)
    with pytest.raises(ReportError, match="users-sample"):
        build_report([forecast_run], tmp_path / "o7", n_users=-1)


def test_killed_build_keeps_the_previous_report(runs, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    build_report([runs[1]], out, n_users=1, png=False)
    before = (out / "index.html").read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(F, "save_png", boom)
    with pytest.raises(KeyboardInterrupt):
        build_report([runs[1]], out, n_users=1, png=True)
    assert (out / "index.html").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # the temp dir is gone


def test_cli(runs, tmp_path):
    from evorec.cli.main import app

    cli = CliRunner()
    r = cli.invoke(app, ["report", str(runs[1]), "--out", str(tmp_path / "r"), "--users-sample", "1", "--no-png", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert Path(doc["index_path"]).exists() and doc["png"] == []
    r = cli.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "no such run directory" in r.output
    r = cli.invoke(app, ["report", str(runs[1]), "--out", str(tmp_path / "r3"), "--cutoff", "2031-01-01"])
    assert r.exit_code == 2 and "error" in r.output.lower()


# -- in a real browser --------------------------------------------------------------------------


def test_report_in_chromium(report, page, artifacts):
    out, manifest = report
    page.goto((out / "index.html").as_uri())
    page.wait_for_function("document.querySelectorAll('main > section:not(#users) .plot .main-svg').length > 0")
    plots = page.eval_on_selector_all(
        "main > section:not(#users) .plot",
        "els => els.map(e => { const s = e.querySelector('.main-svg'); const r = s && s.getBoundingClientRect();"
        " return [e.id, !!s, s ? s.querySelectorAll('path, rect, text').length : 0, r ? r.width * r.height : 0]; })",
    )
    assert len(plots) == sum(len(s["figures"]) for s in manifest["sections"])
    for fid, has_svg, marks, area in plots:
        assert has_svg and marks > 5 and area > 10_000, fid
    # a user lookup shows that user's page with its figures
    page.fill("#user-input", "13")
    page.click("#user-form button")
    page.wait_for_selector('.user-page[data-user="13"]:not([hidden]) .plot .main-svg')
    visible = page.eval_on_selector_all(".user-page:not([hidden])", "els => els.map(e => e.dataset.user)")
    assert visible == ["13"]
    n = page.eval_on_selector_all('.user-page[data-user="13"] .plot', "els => els.filter(e => e.querySelector('.main-svg')).length")
    assert n >= 2  # the timeline and at least one explanation
    assert page.locator('.user-page[data-user="13"] table').nth(1).inner_text().count("\n") >= 5  # recommendations
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    assert (artifacts / "report.png").stat().st_size > 50_000
    page.fill("#user-input", "no-such-user")
    page.click("#user-form button")
    assert "not in this report" in page.inner_text("#user-message")
    assert page.errors == []


def test_time_axis_buckets_dates_and_event_positions():
    from evorec.report.sections import _Clock

    day = _Clock(True)
    t0 = int(np.datetime64("2024-01-01", "s").astype(np.int64))
    x, inv, name = day.buckets(np.array([t0, t0 + 3 * DAY, t0 + 3 * DAY + 5]), t0, t0 + 10 * DAY)
    assert name == "day" and len(x) == 10 and x[0] == "2024-01-01" and inv.tolist() == [0, 3, 3]  # empty days kept
    pos = _Clock(False)
    x, inv, name = pos.buckets(np.array([1, 2, 130, 299]), 1, 300)  # order-only: ts are event positions
    assert name == "5 events" and x[0] == 0 and inv.tolist() == [0, 0, 26, 59] and len(x) == 60
    assert pos.label(15) == 15 and pos.span(5) == "5 events" and day.span(30 * DAY) == "30 days"
