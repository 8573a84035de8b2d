"""Run directories: :class:`TrainingRun` (``evorec train``) and :class:`ForecastRun` (``evorec
forecast backtest --out``) own their layout -- every file name of a run is written here once --
and read and write their payloads, typed (:class:`~evorec.models.checkpoint.ModelCheckpoint`,
:class:`~evorec.forecasting.payload.ForecasterPayload`), atomically.

A training run::

    RUN/best.pt            the best checkpoint (ModelCheckpoint: weights, config, vocabularies)
    RUN/last.pt            the latest checkpoint with the optimizer state (--resume)
    RUN/config.yaml        the merged experiment config
    RUN/history.json       the training state after each epoch
    RUN/metrics.json       evorec evaluate's metrics with confidence intervals
    RUN/per_user.parquet   evorec evaluate's per-user metrics (compare, report)
    RUN/tensorboard/       TensorBoard logs, if on

A forecast run::

    RUN/forecaster.pt      the trained forecaster (ForecasterPayload)
    RUN/backtest.json      the backtest's results
    RUN/config.yaml        the forecast experiment config

This module imports only the models, forecasting, data and utils layers, so the service can
load runs without the training code (``evorec.serving`` never imports ``evorec.training``).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import yaml

from evorec.data.sequences import SequenceData
from evorec.errors import InputError, MissingPathError
from evorec.forecasting.payload import KIND, ForecasterPayload
from evorec.models.checkpoint import ModelCheckpoint, load_checkpoint
from evorec.types import JSONDoc
from evorec.utils.io import atomic_write_parquet, atomic_write_text, json_default


def _read_json(path: Path) -> JSONDoc | None:
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: Path, doc: JSONDoc) -> Path:
    return atomic_write_text(path, json.dumps(doc, indent=2, default=json_default))


def _read_yaml(path: Path) -> JSONDoc | None:
    return yaml.safe_load(path.read_text()) if path.exists() else None


def _write_yaml(path: Path, doc: JSONDoc) -> Path:
    return atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))


class _InRun:
    """A file or folder of a run, named once on the run class: ``TrainingRun.best_checkpoint``
    below reads as ``run.best_checkpoint``, the path of that file in the run's directory."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run: _RunDir | None, owner: type) -> Path:
        if run is None:
            raise AttributeError(f"{owner.__name__}: a run's file, read it from a run object")
        return run.dir / self.name


class _RunDir:
    """What both kinds of run share: a directory, its saved config, and its per-user files."""

    config_file = _InRun("config.yaml")

    def __init__(self, path: str | Path) -> None:
        self.dir = Path(path)

    @property
    def name(self) -> str:
        return self.dir.name

    def saved_config(self) -> JSONDoc | None:
        """The config the run was made with, as saved (None before the run started)."""
        return _read_yaml(self.config_file)

    def write_config(self, doc: JSONDoc) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_yaml(self.config_file, doc)

    def personal_files(self) -> list[Path]:
        """The run's files that may hold per-user rows (Parquet tables; ``evorec data forget``)."""
        return sorted(self.dir.glob("*.parquet"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.dir)!r})"


class TrainingRun(_RunDir):
    """A training run directory (see the module docstring for its files)."""

    best_checkpoint = _InRun("best.pt")
    last_checkpoint = _InRun("last.pt")
    history_file = _InRun("history.json")
    metrics_file = _InRun("metrics.json")
    per_user_file = _InRun("per_user.parquet")
    tensorboard_dir = _InRun("tensorboard")

    @classmethod
    def holds_one(cls, path: str | Path) -> bool:
        """Whether ``path`` is a training run directory (finished, interrupted or evaluated)."""
        run = cls(path)
        return any(p.exists() for p in (run.best_checkpoint, run.last_checkpoint, run.per_user_file, run.metrics_file))

    @property
    def finished(self) -> bool:
        """Whether training wrote its best checkpoint."""
        return self.best_checkpoint.exists()

    @classmethod
    def open(cls, path: str | Path) -> TrainingRun:
        """The finished run at ``path`` (MissingPathError if it has no best checkpoint)."""
        run = cls(path)
        if not run.finished:
            raise MissingPathError(f"{run.dir} is not a finished run (no {run.best_checkpoint.name})")
        return run

    @cached_property
    def checkpoint(self) -> ModelCheckpoint:
        """The best checkpoint (read once per run object)."""
        return load_checkpoint(self.best_checkpoint)

    def last(self) -> ModelCheckpoint | None:
        """The latest checkpoint (with the optimizer state), None before the first epoch ended."""
        return load_checkpoint(self.last_checkpoint) if self.last_checkpoint.exists() else None

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the sequences the model was trained on (None without a best checkpoint)."""
        return self.checkpoint.vocabs.sequence_fingerprint if self.finished else None

    def check_data(self, seq: SequenceData) -> None:
        """The model's vocabulary fits ``seq``: the same sequences, or the same minus forgotten users."""
        fp = self.checkpoint.vocabs.sequence_fingerprint
        if not seq.derived_from(fp):
            raise InputError(
                f"{self.dir} was trained on sequences {(fp or '?')[:12]} but its data now prepares to {seq.fingerprint[:12]}: "
                "the model's vocabulary differs from the split"
            )

    @property
    def version(self) -> str:
        """``NAME@mtime`` of the best checkpoint: what the service reports as its model version."""
        return f"{self.name}@{int(self.best_checkpoint.stat().st_mtime)}"

    def stamp(self) -> tuple[int, int] | None:
        """(mtime in ns, size) of the best checkpoint, None if it cannot be read: a new file changes it."""
        try:
            st = self.best_checkpoint.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def history(self) -> JSONDoc | None:
        return _read_json(self.history_file)

    def write_history(self, doc: JSONDoc) -> None:
        atomic_write_text(self.history_file, json.dumps(doc, indent=2, default=float))  # tensors and numpy scalars as numbers

    def metrics(self) -> JSONDoc | None:
        """``metrics.json`` (None if not evaluated; json.JSONDecodeError if damaged)."""
        return _read_json(self.metrics_file)

    def write_evaluation(self, metrics: JSONDoc, per_user) -> None:
        atomic_write_parquet(self.per_user_file, per_user)
        _write_json(self.metrics_file, metrics)

    @property
    def evaluated(self) -> bool:
        return self.metrics_file.exists() and self.per_user_file.exists()

    def per_user(self):
        import pyarrow.parquet as pq

        return pq.read_table(self.per_user_file) if self.per_user_file.exists() else None


class ForecastRun(_RunDir):
    """A forecast run directory (see the module docstring for its files)."""

    forecaster_file = _InRun("forecaster.pt")
    backtest_file = _InRun("backtest.json")

    @classmethod
    def holds_one(cls, path: str | Path) -> bool:
        return cls(path).forecaster_file.exists()

    @classmethod
    def open(cls, path: str | Path) -> ForecastRun:
        """The forecast run at ``path`` (MissingPathError if it has no forecaster)."""
        run = cls(path)
        if not run.forecaster_file.exists():
            raise MissingPathError(
                f"{run.dir} is not a forecast run (no {run.forecaster_file.name}; run `evorec forecast backtest --out {run.dir}`)"
            )
        return run

    @cached_property
    def payload(self) -> ForecasterPayload:
        """The trained forecaster (read once per run object)."""
        import torch

        path = self.forecaster_file
        if not path.exists():
            self.open(self.dir)  # the error naming the command
        try:
            raw = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise InputError(f"{path} is not a readable evorec forecaster: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("kind") != KIND:
            raise InputError(f"{path} is not an evorec forecaster file")
        return ForecasterPayload.from_dict(raw)

    def save(self, payload: ForecasterPayload, backtest: JSONDoc, config: JSONDoc) -> None:
        """Write the config, the forecaster and the backtest's results (each atomically)."""
        from evorec.models.checkpoint import atomic_save

        self.write_config(config)
        atomic_save(payload.to_dict(), self.forecaster_file)
        _write_json(self.backtest_file, backtest)
        self.__dict__.pop("payload", None)

    def files(self) -> list[Path]:
        """The run's files, as a tracking server keeps them."""
        return [self.forecaster_file, self.backtest_file, self.config_file]

    def backtest(self) -> JSONDoc | None:
        return _read_json(self.backtest_file)

    def check_data(self, seq: SequenceData) -> None:
        """``seq`` is the sequences the forecaster was trained on (or them minus forgotten users)."""
        if not seq.derived_from(self.payload.sequence_fingerprint):
            raise InputError(f"{self.dir}: the data now prepares to other sequences than the forecaster was trained on")

    def trained_sequences(self) -> SequenceData:
        """The prepared sequences the forecaster was trained on, opened where its backtest left them
        (no data preparation, so a service can load it); checked against the forecaster."""
        where = self.payload.sequences_dir
        if not where or not (Path(where) / "meta.json").exists():
            raise MissingPathError(
                f"{self.dir}: the prepared sequences of this forecaster ({where}) are gone; run `evorec forecast backtest` again"
            )
        seq = SequenceData(where)
        if not seq.derived_from(self.payload.sequence_fingerprint):
            raise InputError(f"{self.dir}: the sequences at {where} are not the ones the forecaster was trained on")
        return seq
