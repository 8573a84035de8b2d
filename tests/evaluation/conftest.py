"""Fixtures for the evaluation tests.

- ``tiny``: the real ML-100K leave-one-out fold, the very fixture of ``tests/models/conftest.py``
  (loaded from that file, so both suites build the data the same way).
- ``experiment``: small real ML-100K experiment configs (from ``tests/training/conftest.py``).
- ``make_seq``: a hand-written sequence directory (the documented on-disk layout) for tiny
  hand-computed cases.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from evorec.data.sequences import SequenceData

_spec = importlib.util.spec_from_file_location(
    "evorec_tests_models_conftest", Path(__file__).resolve().parents[1] / "models" / "conftest.py"
)
_models_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_models_conftest)
tiny = _models_conftest.tiny  # re-exported fixture

_spec = importlib.util.spec_from_file_location(
    "evorec_tests_training_conftest", Path(__file__).resolve().parents[1] / "training" / "conftest.py"
)
_training_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_training_conftest)
experiment = _training_conftest.experiment  # small real ML-100K experiment configs


def write_sequences(path: Path, histories: list[list[int]], n_items: int) -> SequenceData:
    """A sequence directory holding one user row per list (items as given, ordinal time)."""
    path.mkdir(parents=True, exist_ok=True)
    lengths = [len(h) for h in histories]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype("<i8")
    items = np.array([i for h in histories for i in h], dtype="<i4")
    np.save(path / "offsets.npy", offsets)
    np.save(path / "item.npy", items)
    np.save(path / "category.npy", np.zeros(len(items), "<i4"))
    np.save(path / "behavior.npy", np.ones(len(items), "i1"))
    np.save(path / "ts.npy", np.concatenate([np.arange(n) for n in lengths] or [np.zeros(0)]).astype("<i8"))
    meta = {"n_users": len(histories), "n_events": int(offsets[-1]), "n_items": n_items, "time_kind": "ordinal",
            "fingerprint": "hand-made", "dataset": "hand-made"}
    (path / "meta.json").write_text(json.dumps(meta))
    return SequenceData(path)


@pytest.fixture
def make_seq(tmp_path):
    counter = iter(range(1_000_000))

    def make(histories: list[list[int]], n_items: int) -> SequenceData:
        return write_sequences(tmp_path / f"seq{next(counter)}", histories, n_items)

    return make
