from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ML100K = SHARED / "movielens_100k_recbole" / "ml-100k.inter"


def experiment(tmp_path: Path, model: str = "sasrec", model_cfg: dict | None = None, **train) -> dict:
    """A small experiment on real ML-100K: a few epochs of a small model."""
    if not ML100K.exists():
        pytest.skip(f"real data not found: {ML100K}")
    t = {"epochs": 3, "batch_size": 128, "max_len": 20, "lr": 3e-3, "progress": False, "eval_users": 300,
         "tensorboard": False, "seed": 3}
    t.update(train)
    return {
        "data": {"path": str(ML100K), "format": "recbole", "dataset": "ml100k", "pseudonymize": False},
        "model": {"name": model, "config": model_cfg if model_cfg is not None else {"hidden": 32, "layers": 1, "heads": 1, "max_len": 20}},
        "train": t,
        "cache_dir": str(tmp_path.parent / "evorec-cache"),
    }
