"""Atomic file writes (temp file in the same directory + rename) and JSON for numpy values:
a killed process never leaves a half-written result under its final name."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def _temp_beside(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_parquet(path: str | Path, table) -> Path:  # noqa: ANN001 - pyarrow.Table
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = _temp_beside(path)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_default(x: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as plain values."""
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
