"""Model checkpoints: written atomically (temp file + rename), self-contained (in the models
layer so serving can load a model without importing training).

A checkpoint holds the model's state, the merged experiment config, the data sizes and the
vocabularies, so ``load_model`` rebuilds the model from the file alone. Training checkpoints
(``last.pt``) also hold the optimizer, scheduler, RNG states and counters for ``--resume``.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from evorec.errors import StateError
from evorec.models.base import DataSizes
from evorec.models.registry import build_model

FORMAT_VERSION = 1


class CheckpointError(StateError):
    pass


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            buf = io.BytesIO()
            torch.save(obj, buf)
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def model_payload(model, experiment: dict, vocabs: dict[str, list], extra: dict | None = None) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "model_name": model.name,
        "model_config": model.config.model_dump(mode="json"),
        "sizes": model.sizes.to_dict(),
        "state": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in model.state_dict().items()},  # extra state: a dict
        "experiment": experiment,
        "vocabs": vocabs,
        **(extra or {}),
    }


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable evorec checkpoint: {exc}") from None
    if not isinstance(ck, dict) or ck.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not an evorec checkpoint (format {ck.get('format_version') if isinstance(ck, dict) else '?'})")
    return ck


def load_model(path_or_ck: str | Path | dict):
    """Rebuild a model (eval mode) from a checkpoint file or loaded payload."""
    ck = path_or_ck if isinstance(path_or_ck, dict) else load_checkpoint(path_or_ck)
    model = build_model(ck["model_name"], ck["model_config"], DataSizes.from_dict(ck["sizes"]))
    model.load_state_dict(ck["state"])
    model.eval()
    return model
