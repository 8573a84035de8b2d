"""Atomic file writes (temp file in the same directory + rename), an atomic exchange of two
directories, and JSON for numpy values: a killed process never leaves a half-written result
under its final name."""

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


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange_paths(a: str | Path, b: str | Path) -> None:
    """Swap two existing paths (files or directories) in one atomic step.

    Uses Linux ``renameat2(RENAME_EXCHANGE)``: at every instant each name holds one complete
    version. Raises ``OSError`` (``ENOSYS``, ``EINVAL``...) where the platform or file system
    cannot do it, so callers can fall back to two renames.
    """
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError) as exc:  # not Linux, or a libc without renameat2
        raise OSError(errno.ENOSYS, "renameat2 is not available") from exc
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


def fsync_directory(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (best effort: some platforms cannot open directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_default(x: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as plain values."""
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
