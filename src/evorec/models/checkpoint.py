"""Model checkpoints: the typed payload of ``best.pt`` / ``last.pt`` (:class:`ModelCheckpoint`),
written atomically (temp file + rename), self-contained (in the models layer so serving can load a
model without importing training). Which file of a run holds which checkpoint is the run's business
(``evorec.experiments.runs.TrainingRun``).

A checkpoint holds the model's weights, the merged experiment config, the data sizes and the
vocabularies, so :func:`load_model` rebuilds the model from the file alone. Training checkpoints
(``last.pt``) also hold the optimizer, scheduler and weight-average states for ``--resume``
(:class:`ResumeState`). On disk a checkpoint is a plain dict (``ModelCheckpoint.to_dict``), the
layout evorec has always written, so files of earlier versions load unchanged.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evorec.errors import StateError
from evorec.models.base import DataSizes
from evorec.models.registry import build_model
from evorec.types import JSONDoc, StateDict
from evorec.utils.io import atomic_write_bytes

FORMAT_VERSION = 1


class CheckpointError(StateError):
    pass


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file in the same directory, fsync, then rename over ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getbuffer(), fsync=True)


@dataclass
class ModelVocabularies:
    """The ids behind a model's indices: ``items[i]`` has index ``i + 1`` (0 is padding), likewise
    ``categories``; ``sequence_fingerprint`` names the prepared sequences the model was trained on."""

    items: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    behaviors: list[str] = field(default_factory=list)
    sequence_fingerprint: str | None = None

    def to_dict(self) -> JSONDoc:
        return {"items": list(self.items), "categories": list(self.categories), "behaviors": list(self.behaviors),
                "sequence_fingerprint": self.sequence_fingerprint}

    @classmethod
    def from_dict(cls, d: JSONDoc) -> ModelVocabularies:
        return cls(list(d.get("items") or []), list(d.get("categories") or []), list(d.get("behaviors") or []),
                   d.get("sequence_fingerprint"))


@dataclass
class ResumeState:
    """What ``--resume`` needs beyond the weights (``last.pt`` only)."""

    optimizer: StateDict
    scheduler: StateDict
    weight_average: StateDict | None = None  # train.ema_decay's averaged weights


@dataclass
class ModelCheckpoint:
    """One checkpoint: everything needed to rebuild, serve or resume a model."""

    model_name: str
    model_config: JSONDoc  # the model's config as JSON (its registry config class validates it)
    sizes: DataSizes
    weights: StateDict  # the model's state_dict (on disk: "state")
    experiment: JSONDoc  # the merged experiment config as JSON (evorec.experiments.config.ExperimentConfig)
    vocabs: ModelVocabularies
    item_popularity: list[int] | None = None  # training-part item counts: serving's fallback for users without history
    train_state: JSONDoc = field(default_factory=dict)  # evorec.training.trainer.TrainState as a dict
    resume: ResumeState | None = None
    format_version: int = FORMAT_VERSION

    @classmethod
    def of_model(
        cls, model, experiment: JSONDoc, vocabs: ModelVocabularies | None = None, *,  # model: a Recommender
        item_popularity: list[int] | None = None, train_state: JSONDoc | None = None,
    ) -> ModelCheckpoint:
        """A checkpoint of ``model`` as it is now (weights copied to the CPU)."""
        return cls(
            model_name=model.name,
            model_config=model.config.model_dump(mode="json"),
            sizes=model.sizes,
            weights={k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in model.state_dict().items()},  # extra state: a dict
            experiment=experiment,
            vocabs=vocabs or ModelVocabularies(),
            item_popularity=item_popularity,
            train_state=dict(train_state or {}),
        )

    @property
    def max_len(self) -> int:
        """The history length the model was trained with (``train.max_len``)."""
        return int((self.experiment.get("train") or {}).get("max_len", 50))

    def build_model(self):  # -> a Recommender
        """The model (eval mode) with these weights."""
        model = build_model(self.model_name, self.model_config, self.sizes)
        model.load_state_dict(self.weights)
        model.eval()
        return model

    def to_dict(self) -> dict[str, Any]:
        """The on-disk layout (the keys evorec has always written)."""
        d: dict[str, Any] = {
            "format_version": self.format_version, "model_name": self.model_name, "model_config": self.model_config,
            "sizes": self.sizes.to_dict(), "state": self.weights, "experiment": self.experiment, "vocabs": self.vocabs.to_dict(),
        }
        if self.item_popularity is not None:
            d["item_popularity"] = self.item_popularity
        if self.train_state:
            d["train_state"] = self.train_state
        if self.resume is not None:
            d["optimizer"], d["scheduler"] = self.resume.optimizer, self.resume.scheduler
            if self.resume.weight_average is not None:
                d["weight_average"] = self.resume.weight_average
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCheckpoint:
        resume = None
        if "optimizer" in d:
            resume = ResumeState(d["optimizer"], d.get("scheduler") or {}, d.get("weight_average"))
        return cls(
            model_name=d["model_name"], model_config=d.get("model_config") or {}, sizes=DataSizes.from_dict(d["sizes"]),
            weights=d["state"], experiment=d.get("experiment") or {}, vocabs=ModelVocabularies.from_dict(d.get("vocabs") or {}),
            item_popularity=d.get("item_popularity"), train_state=d.get("train_state") or {}, resume=resume,
            format_version=d.get("format_version", FORMAT_VERSION),
        )

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (the plain-dict layout)."""
        return atomic_save(self.to_dict(), path)


def load_checkpoint(path: str | Path) -> ModelCheckpoint:
    """The checkpoint in ``path``; :class:`CheckpointError` for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable evorec checkpoint: {exc}") from None
    if isinstance(ck, ModelCheckpoint):
        return ck
    if not isinstance(ck, dict) or ck.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not an evorec checkpoint (format {ck.get('format_version') if isinstance(ck, dict) else '?'})")
    return ModelCheckpoint.from_dict(ck)


def load_model(source: str | Path | ModelCheckpoint | dict[str, Any]):  # -> a Recommender
    """Rebuild a model (eval mode) from a checkpoint file, a checkpoint, or its on-disk dict."""
    if isinstance(source, ModelCheckpoint):
        ck = source
    elif isinstance(source, dict):
        ck = ModelCheckpoint.from_dict(source)
    else:
        ck = load_checkpoint(source)
    return ck.build_model()
