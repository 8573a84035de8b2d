"""Model checkpoints: written atomically (temp file + rename), self-contained (in the models
layer so serving can load a model without importing training).

A checkpoint holds the model's state, the merged experiment config, the data sizes and the
vocabularies, so ``load_model`` rebuilds the model from the file alone. Training checkpoints
(``last.pt``) also hold the optimizer, scheduler, RNG states and counters for ``--resume``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from evorec.models.base import DataSizes
from evorec.models.registry import build_model
from evorec.utils.io import atomic_write_bytes

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    pass


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file in the same directory, fsync, then rename over ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getbuffer(), fsync=True)


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
