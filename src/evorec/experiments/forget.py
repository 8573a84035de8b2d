"""``evorec data forget``: users removed from a store, prepared sequences and run directories.

The store and the sequences are the data layer's (:func:`evorec.data.forget.forget_users`, where
what is removed and what stays is documented); the runs are this package's: a training or
forecast run directory (:mod:`evorec.experiments.runs`) gives its per-user files
(``per_user.parquet``), which are rewritten without the users' rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evorec.data import forget as data_forget
from evorec.experiments.runs import ForecastRun, TrainingRun


def run_files(path: Path) -> list[Path] | None:
    """The per-user files of the run directory at ``path`` (None: not a run directory)."""
    for kind in (ForecastRun, TrainingRun):
        if kind.holds_one(path):
            return kind(path).personal_files()
    return None


def forget_users(user_ids: Sequence[str], store: str | Path, **options: Any) -> dict[str, Any]:
    """:func:`evorec.data.forget.forget_users` (same options) where each path in ``runs`` is a run
    directory of this package or a folder of them (one level, as ``runs/``)."""
    return data_forget.forget_users(user_ids, store, run_files=run_files, **options)
