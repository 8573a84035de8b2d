"""Experiments end to end: what a run is and how one is made.

- :mod:`~evorec.experiments.config`: the config schema (``ExperimentConfig``,
  ``ForecastExperimentConfig``) and its loaders;
- :mod:`~evorec.experiments.cache`: the data cache (ingest + prepare, keyed by content and config);
- :mod:`~evorec.experiments.runs`: ``TrainingRun`` and ``ForecastRun``, the run directories, their
  file layout and typed payloads (importable without the training code: the service uses it);
- :mod:`~evorec.experiments.training`: train, evaluate and compare recommenders;
- :mod:`~evorec.experiments.forecasting`: forecast backtests and forecasts of saved runs;
- :mod:`~evorec.experiments.reproduce` and :mod:`~evorec.experiments.tables`: published tables
  (package data) reproduced row by row;
- :mod:`~evorec.experiments.forget`: forgetting users in stores, caches and runs.

This module imports nothing, so ``evorec.experiments.runs`` stays light.
"""
