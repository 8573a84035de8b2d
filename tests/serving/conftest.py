"""Fixtures for the service tests: a small SASRec trained on real ML-100K, and a client with keys."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "evorec_tests_training_conftest_serving", Path(__file__).resolve().parents[1] / "training" / "conftest.py"
)
_training = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_training)
experiment = _training.experiment


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import train

    tmp = tmp_path_factory.mktemp("serve")
    cfg = load_experiment(None, base=experiment(tmp, epochs=2))
    _, out = train(cfg, tmp / "run")
    return out


@pytest.fixture(scope="session")
def forecast_run(tmp_path_factory) -> Path:
    """A small interest forecaster trained on the simulator (300 users, 2 epochs, no bootstrap):
    horizons 1d, 7d, 30d, 90d."""
    from evorec.experiments.config import load_forecast_experiment
    from evorec.experiments.forecasting import forecast_backtest

    tmp = tmp_path_factory.mktemp("serve_fc")
    sim = Path(__file__).resolve().parents[2] / "configs" / "forecast" / "simulated.yaml"
    cfg = load_forecast_experiment(sim, ["simulate.users=300", "forecast.model.epochs=2", "forecast.model.encoder=null",
                                         "forecast.bootstrap=0", "forecast.train_every=28d", f"cache_dir={tmp / 'cache'}"])
    forecast_backtest(cfg, tmp / "fc")
    return tmp / "fc"


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on loopback for the session: a fresh cluster in a temp dir, run as
    the ``postgres`` system user (PostgreSQL refuses root). `.ci/run` installs the Debian package
    and sets EVOREC_REQUIRE_POSTGRES=1, so a missing server fails there instead of skipping."""
    import os
    import shutil
    import socket
    import subprocess

    pg = _pg_bin()
    if pg is None:
        if os.environ.get("EVOREC_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required (EVOREC_REQUIRE_POSTGRES=1) but /usr/lib/postgresql/*/bin/initdb is missing")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    import tempfile

    # not under pytest's tmp dir: that one is private to root, and the server runs as postgres
    base = Path(tempfile.mkdtemp(prefix="evorec-pg-"))
    data = base / "data"
    as_pg: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_pg, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], check=True,
                   capture_output=True)
    log = base / "server.log"
    subprocess.run([*as_pg, str(pg / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                    f"-h 127.0.0.1 -p {port} -k {base} -F", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_pg, str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "evorec"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/evorec"
    finally:
        subprocess.run([*as_pg, str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
