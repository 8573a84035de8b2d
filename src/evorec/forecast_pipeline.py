"""Wiring for interest forecasts: one ``ForecastExperimentConfig`` -> data -> backtest -> run dir.

The data source is a file (as in ``ExperimentConfig``) or the simulator (``simulate:`` with any
``SimConfig`` field; the simulated log is generated once into the cache, keyed by its config, and
its planted ground truth lies beside it). A run directory holds ``forecaster.pt`` (the model,
its calibrators and the context it needs), ``backtest.json`` and ``config.yaml``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evorec.data.prepare import PrepareConfig
from evorec.data.sequences import SequenceData
from evorec.data.simulate import SimConfig
from evorec.forecasting.backtest import BacktestConfig, run_backtest
from evorec.pipeline import DataSourceConfig, ExperimentConfig, _prepared
from evorec.utils.io import atomic_write_text, json_default
from evorec.utils.config import load_config
from evorec.utils.tracking import log_forecast_backtest

logger = logging.getLogger(__name__)


class ForecastExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    data: DataSourceConfig | None = None
    simulate: dict[str, Any] | None = Field(None, description="simulator settings (SimConfig fields) instead of a data file")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    forecast: BacktestConfig
    cache_dir: str = Field(default_factory=lambda: os.environ.get("EVOREC_CACHE", ".evorec-cache"))

    @model_validator(mode="after")
    def _one_source(self) -> ForecastExperimentConfig:
        if (self.data is None) == (self.simulate is None):
            raise ValueError("give exactly one data source: `data:` (a file) or `simulate:` (the simulator)")
        if self.simulate is not None:
            SimConfig.model_validate(self.simulate)  # bad simulator fields fail now
        return self


def load_forecast_experiment(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> ForecastExperimentConfig:
    cfg = load_config(ForecastExperimentConfig, path, overrides, base)
    if path is not None:
        cfg.__dict__["_config_dir"] = str(Path(path).resolve().parent)
    return cfg


def _experiment(cfg: ForecastExperimentConfig) -> ExperimentConfig:
    """The next-item ``ExperimentConfig`` that prepares the same data (reusing its cache)."""
    data = cfg.data
    if cfg.simulate is not None:
        sim = SimConfig.model_validate(cfg.simulate)
        key = hashlib.sha256(json.dumps(sim.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cfg.cache_dir) / "simulated" / f"sim-{key}.parquet"
        if not path.exists():
            from evorec.data.simulate import write_simulation

            path.parent.mkdir(parents=True, exist_ok=True)
            logger.info("simulating %d users x %d days -> %s", sim.users, sim.days, path)
            write_simulation(sim, path)
        data = DataSourceConfig(path=str(path.resolve()), format="parquet", dataset=f"sim{key[:8]}", pseudonymize=False)
    exp = ExperimentConfig(data=data, prepare=cfg.prepare, model={"name": "pop"}, cache_dir=cfg.cache_dir)
    if "_config_dir" in cfg.__dict__:
        exp.__dict__["_config_dir"] = cfg.__dict__["_config_dir"]
    return exp


def forecast_data(cfg: ForecastExperimentConfig) -> SequenceData:
    seq, _, _ = _prepared(_experiment(cfg))
    return seq


def forecast_backtest(cfg: ForecastExperimentConfig, out_dir: str | Path | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Run the backtest; with ``out_dir`` also save the model and the results there; with
    ``tracking_uri`` log them to MLflow (``evorec.utils.tracking.log_forecast_backtest``)."""
    seq = forecast_data(cfg)
    oracles = None
    if cfg.simulate is not None:  # the planted interests give the forecasts' ceilings
        from evorec.forecasting.oracles import simulated_oracles

        oracles = simulated_oracles(SimConfig.model_validate(cfg.simulate), seq)
    res, model, ctx = run_backtest(seq, cfg.forecast, oracles)
    res = {"dataset": _experiment(cfg).data.dataset, "sequence_fingerprint": seq.fingerprint, **res}
    if out_dir is not None:
        import torch

        from evorec.models.checkpoint import atomic_save

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        atomic_save(
            {
                "kind": "evorec-forecaster",
                "forecaster": model.state(),
                "experiment": cfg.model_dump(mode="json"),
                "sequence_fingerprint": seq.fingerprint,
                "sequences_dir": str(Path(seq.path).resolve()),
                "categories": seq.categories.ids.to_pylist(),
                "context": {"train_limit": ctx.train_limit, "unit": ctx.unit,
                            "transitions": None if ctx.transitions is None else torch.from_numpy(ctx.transitions),
                            "steps": ctx.steps},
            },
            out / "forecaster.pt",
        )
        atomic_write_text(out / "backtest.json", json.dumps(res, indent=2, default=json_default))
    if tracking_uri:
        log_forecast_backtest(tracking_uri, cfg.model_dump(mode="json"), res, out_dir)
    return res



def load_forecast_run(run_dir: str | Path) -> tuple[dict[str, Any], SequenceData]:
    """(state of ``RUN/forecaster.pt``, the sequences it was trained on; prepared again if the
    cache is gone)."""
    from evorec.forecasting.predict import read_forecaster

    state = read_forecaster(run_dir)
    cfg = ForecastExperimentConfig.model_validate(state["experiment"])
    seq = forecast_data(cfg)
    if not seq.derived_from(state.get("sequence_fingerprint")):
        raise ValueError(f"{run_dir}: the data now prepares to other sequences than the forecaster was trained on")
    return state, seq


def forecast_run(run_dir: str | Path, cutoff: Any, horizons: list[Any] | None = None, users: list[str] | None = None):  # noqa: ANN201
    """:class:`~evorec.forecasting.predict.UserForecasts` of a forecast run at ``cutoff``."""
    from evorec.forecasting.predict import forecast_at

    state, seq = load_forecast_run(run_dir)
    return forecast_at(state, seq, cutoff, horizons, users=users)


def explain_run(run_dir: str | Path, user: str, category: str, cutoff: Any, horizon: Any | None = None):  # noqa: ANN201
    """:class:`~evorec.forecasting.predict.ForecastExplanation` of one user's forecast for one category."""
    from evorec.forecasting.predict import explain_at

    state, seq = load_forecast_run(run_dir)
    return explain_at(state, seq, user, category, cutoff, horizon)
