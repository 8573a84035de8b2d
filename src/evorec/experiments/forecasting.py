"""Interest forecasts as functions over :class:`ForecastRun`: one ``ForecastExperimentConfig`` ->
data -> backtest -> run directory, and forecasts or explanations of a saved run.

The data source is a file (as for training) or the simulator (``simulate:`` with any
``SimConfig`` field; the simulated log is generated once into the cache, keyed by its config,
and its planted ground truth gives the forecasts' ceilings).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from evorec.data.sequences import SequenceData
from evorec.experiments.cache import DataCache
from evorec.experiments.config import DataSourceConfig, ForecastExperimentConfig
from evorec.experiments.runs import ForecastRun
from evorec.forecasting.backtest import run_backtest
from evorec.forecasting.payload import ForecastContext, ForecasterPayload
from evorec.forecasting.predict import ForecastExplanation, UserForecasts, explain_at, forecast_at
from evorec.types import JSONDoc
from evorec.utils.tracking import log_forecast_backtest

log = logging.getLogger(__name__)


def forecast_source(cfg: ForecastExperimentConfig) -> DataSourceConfig:
    """The experiment's data source: its file, or the simulator's log (generated once into the cache)."""
    sim = cfg.simulation
    if sim is None:
        assert cfg.data is not None  # one source: checked by the config
        return cfg.data
    return DataCache(cfg.cache_dir).simulated(sim)


def forecast_data(cfg: ForecastExperimentConfig) -> SequenceData:
    """The experiment's prepared sequences (through the data cache)."""
    return DataCache(cfg.cache_dir).prepared(forecast_source(cfg), cfg.prepare).seq


def forecast_backtest(cfg: ForecastExperimentConfig, out_dir: str | Path | None = None, tracking_uri: str | None = None) -> JSONDoc:
    """Run the backtest; with ``out_dir`` also save the model and the results there (a
    :class:`ForecastRun`); with ``tracking_uri`` log them to MLflow
    (``evorec.utils.tracking.log_forecast_backtest``)."""
    source = forecast_source(cfg)
    seq = DataCache(cfg.cache_dir).prepared(source, cfg.prepare).seq
    oracles = None
    sim = cfg.simulation
    if sim is not None:  # the planted interests give the forecasts' ceilings
        from evorec.forecasting.oracles import simulated_oracles

        oracles = simulated_oracles(sim, seq)
    res, model, ctx = run_backtest(seq, cfg.forecast, oracles)
    res = {"dataset": source.dataset, "sequence_fingerprint": seq.fingerprint, **res}
    if out_dir is not None:
        payload = ForecasterPayload(
            model_state=model.state(), experiment=cfg.model_dump(mode="json"), sequence_fingerprint=seq.fingerprint,
            sequences_dir=str(Path(seq.path).resolve()), categories=seq.categories.ids.to_pylist(), context=ForecastContext.of(ctx),
        )
        ForecastRun(out_dir).save(payload, res, cfg.model_dump(mode="json"))
    if tracking_uri:
        files = ForecastRun(out_dir).files() if out_dir is not None else []
        log_forecast_backtest(tracking_uri, cfg.model_dump(mode="json"), res, out_dir, files)
    return res


def load_forecast_run(run_dir: str | Path) -> tuple[ForecasterPayload, SequenceData]:
    """(the trained forecaster of a forecast run, the sequences it was trained on; prepared again
    through the data cache if the cache is gone). The data's fingerprint is checked here, once."""
    run = ForecastRun.open(run_dir)
    cfg = ForecastExperimentConfig.model_validate(run.payload.experiment)
    seq = forecast_data(cfg)
    run.check_data(seq)
    return run.payload, seq


def forecast_run(run_dir: str | Path, cutoff: Any, horizons: list[Any] | None = None, users: list[str] | None = None) -> UserForecasts:
    """:class:`~evorec.forecasting.predict.UserForecasts` of a forecast run at ``cutoff``."""
    payload, seq = load_forecast_run(run_dir)
    return forecast_at(payload, seq, cutoff, horizons, users=users)


def explain_run(run_dir: str | Path, user: str, category: str, cutoff: Any, horizon: Any | None = None) -> ForecastExplanation:
    """:class:`~evorec.forecasting.predict.ForecastExplanation` of one user's forecast for one category."""
    payload, seq = load_forecast_run(run_dir)
    return explain_at(payload, seq, user, category, cutoff, horizon)
