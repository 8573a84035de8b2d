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
    from evorec.pipeline import load_experiment, train

    tmp = tmp_path_factory.mktemp("serve")
    cfg = load_experiment(None, base=experiment(tmp, epochs=2))
    _, out = train(cfg, tmp / "run")
    return out
