"""The experiment config schema: one YAML file per experiment, validated here.

:class:`ExperimentConfig` (``evorec train``) names its data source, how to prepare it, the
model, training and evaluation; :class:`ForecastExperimentConfig` (``evorec forecast
backtest``) names a data source or the simulator, how to prepare it and the backtest. Both are
read with ``--set key.sub=value`` overrides by :func:`load_experiment` /
:func:`load_forecast_experiment`, which also record the config file's directory on the data
source (relative data paths are tried from there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evorec.data.prepare import PrepareConfig
from evorec.data.simulate import SimConfig
from evorec.errors import InputError
from evorec.evaluation.protocols import EvalConfig
from evorec.forecasting.backtest import BacktestConfig
from evorec.models.registry import make_config
from evorec.training.trainer import TrainConfig
from evorec.utils.config import load_config


def default_cache_dir() -> str:
    return os.environ.get("EVOREC_CACHE", ".evorec-cache")


class DataSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., description="source file; relative paths are tried from the working directory, then from the config file's directory")
    format: str
    dataset: str
    options: dict[str, str] = Field(default_factory=dict)
    pseudonymize: bool = True
    base_dir: str | None = Field(
        None, exclude=True,
        description="the config file's directory (set by the loaders, never saved): relative paths are also tried from it and its parents",
    )


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    data: DataSourceConfig
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    model: ModelSpec
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    cache_dir: str = Field(default_factory=default_cache_dir)

    @property
    def target_behaviors(self) -> list[str] | None:
        """The behaviours a model of this experiment learns to predict (the split's, if it says)."""
        return getattr(self.prepare.split, "target_behaviors", None)


class ForecastExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    data: DataSourceConfig | None = None
    simulate: dict[str, Any] | None = Field(None, description="simulator settings (SimConfig fields) instead of a data file")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    forecast: BacktestConfig
    cache_dir: str = Field(default_factory=default_cache_dir)

    @model_validator(mode="after")
    def _one_source(self) -> ForecastExperimentConfig:
        if (self.data is None) == (self.simulate is None):
            raise InputError("give exactly one data source: `data:` (a file) or `simulate:` (the simulator)")
        if self.simulate is not None:
            SimConfig.model_validate(self.simulate)  # bad simulator fields fail now
        return self

    @property
    def simulation(self) -> SimConfig | None:
        return None if self.simulate is None else SimConfig.model_validate(self.simulate)


def _with_base_dir(data: DataSourceConfig | None, path: str | Path | None) -> None:
    if data is not None and path is not None:
        data.base_dir = str(Path(path).resolve().parent)


def load_experiment(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> ExperimentConfig:
    cfg = load_config(ExperimentConfig, path, overrides, base)
    make_config(cfg.model.name, cfg.model.config)  # unknown model or bad model field: fail now
    _with_base_dir(cfg.data, path)
    return cfg


def load_forecast_experiment(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> ForecastExperimentConfig:
    cfg = load_config(ForecastExperimentConfig, path, overrides, base)
    _with_base_dir(cfg.data, path)
    return cfg
