"""MLflow experiment tracking (evorec.utils.tracking) against a real MLflow tracking server that
the test starts on loopback: training, evaluation and a forecast backtest log their params,
per-epoch and final metrics with CIs, config, data fingerprint and artefacts; the logged run is
served from its MLflow artefact URI; an unreachable server warns once and loses nothing locally;
without MLflow installed, tracking fails at the start naming the extra."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from evorec.utils import tracking

mlflow = pytest.importorskip("mlflow", reason="experiment tracking needs the `tracking` extra (in `test`)")

from conftest import experiment  # noqa: E402 - after the importorskip (tests/training/conftest.py)

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a SQLite backend and served artefacts; its URI."""
    tmp = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", str(tmp / "artifacts")]
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {proc.returncode}: {(tmp / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up after 120 s: {(tmp / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield uri
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        log.close()


@pytest.fixture(scope="module")
def tracked_run(mlflow_server, tmp_path_factory):
    """A small SASRec trained and evaluated with tracking on the server: (run dir, run id)."""
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import evaluate_run, train

    tmp = tmp_path_factory.mktemp("tracked")
    cfg = load_experiment(None, base=experiment(tmp, epochs=2))
    _, out = train(cfg, tmp / "run", tracking_uri=mlflow_server)
    evaluate_run(out, tracking_uri=mlflow_server)
    return out, json.loads((out / "mlflow.json").read_text())["run_id"]


def test_training_and_evaluation_are_logged_to_the_server(tracked_run, mlflow_server):
    from mlflow.tracking import MlflowClient

    from evorec.models.checkpoint import load_checkpoint

    out, run_id = tracked_run
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.name"] == "sasrec" and params["train.epochs"] == "2" and params["data.dataset"] == "ml100k"
    assert json.loads(params["train.betas"]) == [0.9, 0.98]  # lists as their JSON text
    assert run.data.tags["evaluate.split"] == "loo" and "evaluate.bootstrap" in run.data.tags  # the eval config, apart
    history = json.loads((out / "history.json").read_text())["history"]
    per_epoch = client.get_metric_history(run_id, "valid/NDCG_at_10")
    assert [m.step for m in per_epoch] == [1, 2]
    assert [m.value for m in per_epoch] == pytest.approx([h["valid/NDCG@10"] for h in history])
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    m = run.data.metrics
    assert m["test/NDCG_at_10"] == pytest.approx(metrics["metrics"]["NDCG@10"])
    lo, hi = metrics["ci"]["NDCG@10"]
    assert m["test/NDCG_at_10_ci_low"] == pytest.approx(lo) and m["test/NDCG_at_10_ci_high"] == pytest.approx(hi)
    assert m["best/valid/NDCG_at_10"] == pytest.approx(max(h["valid/NDCG@10"] for h in history))
    fingerprint = load_checkpoint(out / "best.pt").vocabs.sequence_fingerprint
    assert run.data.tags["evorec.data_fingerprint"] == fingerprint == metrics["sequence_fingerprint"]
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "evaluate.yaml", "run"} <= top
    files = {a.path for a in client.list_artifacts(run_id, "run")}
    assert {"run/best.pt", "run/history.json", "run/config.yaml", "run/metrics.json"} <= files
    import yaml

    logged_cfg = yaml.safe_load(Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="config.yaml", tracking_uri=mlflow_server, dst_path=str(out.parent / "dl"))).read_text())
    assert logged_cfg["model"]["name"] == "sasrec" and logged_cfg["train"]["epochs"] == 2  # the merged config


def test_evaluating_again_with_other_settings_updates_the_same_mlflow_run(tracked_run, mlflow_server, caplog):
    from mlflow.tracking import MlflowClient

    from evorec.experiments.training import evaluate_run

    out, run_id = tracked_run
    with caplog.at_level(logging.WARNING, logger="evorec.utils.tracking"):
        res = evaluate_run(out, eval_overrides=["bootstrap=50"], tracking_uri=mlflow_server)
    assert not [r for r in caplog.records if r.name == "evorec.utils.tracking"], "no tracking failure"
    run = MlflowClient(mlflow_server).get_run(run_id)
    assert run.data.tags["evaluate.bootstrap"] == "50"
    assert run.data.metrics["test/NDCG_at_10_ci_low"] == pytest.approx(res["ci"]["NDCG@10"][0])


def test_a_logged_run_is_served_from_its_mlflow_artifact_uri(tracked_run, mlflow_server, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from evorec.serving.app import create_app
    from evorec.serving.settings import ServeSettings

    out, run_id = tracked_run
    monkeypatch.setenv("EVOREC_MLFLOW_URI", mlflow_server)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the download lands in a fresh temp folder there
    settings = ServeSettings(run=f"runs:/{run_id}/run", db_url=f"sqlite:///{tmp_path / 's.db'}", pseudonymize=False)
    with TestClient(create_app(settings)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
    downloaded = list(tmp_path.glob("evorec-mlflow-run-*/run/best.pt"))
    assert len(downloaded) == 1 and downloaded[0].read_bytes() == (out / "best.pt").read_bytes()


def test_tracking_failing_mid_run_warns_once(tracked_run, mlflow_server, caplog, monkeypatch):
    tr = tracking.RunTracker.start(mlflow_server, kind="train", run_name="broken-later")
    assert tr.active

    def gone():
        raise ConnectionError("gone")

    # the server "goes away" after the start (MLflow caches one store per URI: restored after the test)
    monkeypatch.setattr(tr._client._tracking_client.store, "get_host_creds", gone)
    with caplog.at_level(logging.WARNING, logger="evorec.utils.tracking"):
        tr.log_metrics({"loss": 1.0}, step=1)
        tr.log_metrics({"loss": 0.5}, step=2)
        tr.log_files([ROOT / "pyproject.toml"])
        tr.finish()
    warnings = [r for r in caplog.records if r.name == "evorec.utils.tracking"]
    assert len(warnings) == 1 and "tracking is off for the rest of this run" in warnings[0].getMessage()
    assert not tr.active


def test_unreachable_server_the_run_goes_on_warns_once_and_keeps_everything_locally(tmp_path, caplog):
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import evaluate_run, train

    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    cfg = load_experiment(None, base=experiment(tmp_path, epochs=2))
    with caplog.at_level(logging.WARNING, logger="evorec.utils.tracking"):
        t = time.monotonic()
        state, out = train(cfg, tmp_path / "run", tracking_uri=dead)
        evaluate_run(out, tracking_uri=dead)
        spent = time.monotonic() - t
    assert state.epoch == 2 and state.best_epoch > 0
    for name in ("best.pt", "last.pt", "history.json", "config.yaml", "metrics.json", "per_user.parquet"):
        assert (out / name).exists(), name
    assert len(json.loads((out / "history.json").read_text())["history"]) == 2
    assert not (out / "mlflow.json").exists(), "no record of a run that was never logged"
    warnings = [r.getMessage() for r in caplog.records if r.name == "evorec.utils.tracking"]
    assert len(warnings) == 2, warnings  # once for the training, once for the evaluation (two commands)
    assert all(dead in w and "the run goes on" in w for w in warnings)
    assert spent < 120, f"an unreachable server held the run up ({spent:.0f}s)"


def test_forecast_backtest_is_logged_with_ci(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from evorec.experiments.config import load_forecast_experiment
    from evorec.experiments.forecasting import forecast_backtest

    cfg = load_forecast_experiment(ROOT / "configs" / "forecast" / "simulated.yaml", [
        "simulate.users=200", "forecast.model.epochs=1", "forecast.model.encoder=null", "forecast.bootstrap=50",
        "forecast.train_every=28d", f"cache_dir={tmp_path / 'cache'}"])
    res = forecast_backtest(cfg, tmp_path / "fc", tracking_uri=mlflow_server)
    rec = json.loads((tmp_path / "fc" / "mlflow.json").read_text())
    client = MlflowClient(mlflow_server)
    run = client.get_run(rec["run_id"])
    assert run.data.tags["evorec.kind"] == "forecast-backtest"
    assert run.data.tags["evorec.data_fingerprint"] == res["sequence_fingerprint"]
    label = next(iter(res["horizons"]))
    e = res["horizons"][label]
    assert run.data.metrics[f"{label}/model/NDCG_at_10"] == pytest.approx(e["model"]["NDCG@10"])
    if e.get("model_ci", {}).get("NDCG@10"):
        assert run.data.metrics[f"{label}/model/NDCG_at_10_ci_low"] == pytest.approx(e["model_ci"]["NDCG@10"][0])
    assert run.data.params["forecast.model.epochs"] == "1"
    files = {a.path for a in client.list_artifacts(rec["run_id"], "run")}
    assert {"run/forecaster.pt", "run/backtest.json", "run/config.yaml"} <= files


def test_without_mlflow_tracking_fails_at_the_start_naming_the_extra(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from evorec.cli.main import app

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(RuntimeError, match=r"evorec\[tracking\]"):
        tracking.tracking_target(track=True)
    assert tracking.tracking_target(track=False) is None or os.environ.get(tracking.ENV_URI)
    cfg = tmp_path / "exp.json"
    cfg.write_text(json.dumps(experiment(tmp_path, epochs=1)))
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--track"])
    assert res.exit_code == 2 and "evorec[tracking]" in res.output, res.output
    assert not (tmp_path / "run" / "best.pt").exists(), "nothing trained before the error"


def test_uri_resolution_and_names(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_uri() is None
    assert tracking.resolve_uri(track=True) == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv(tracking.ENV_URI, "http://tracker:5000")
    assert tracking.resolve_uri() == "http://tracker:5000"  # the variable alone turns tracking on
    assert tracking.resolve_uri(uri="http://other:1") == "http://other:1"
    assert tracking.metric_key("valid/NDCG@10") == "valid/NDCG_at_10"
    assert tracking.metric_key("AUC (sampled)") == "AUC _sampled_"
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "null"}
    assert tracking.numeric({"x": 1, "y": float("nan"), "z": True, "w": "text"}) == {"x": 1.0}
    with pytest.raises(ValueError, match="MLflow tracking URI"):
        tracking.RunTracker.start("nosuchscheme://x", kind="train")


def test_local_default_store_keeps_artifacts_as_files(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    monkeypatch.chdir(tmp_path)
    uri = tracking.resolve_uri(track=True)
    f = tmp_path / "metrics.json"
    f.write_text("{}")
    with tracking.RunTracker.start(uri, kind="evaluate", run_name="local") as tr:
        tr.log_metrics({"NDCG@10": 0.5})
        tr.log_files([f])
        tr.write_record(tmp_path)
    rec = json.loads((tmp_path / "mlflow.json").read_text())
    assert rec["run_uri"] == f"runs:/{tr.run_id}/run"
    assert list((tmp_path / "mlruns" / "artifacts").glob("*/artifacts/run/metrics.json"))
