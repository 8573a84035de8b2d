"""Atomic writes: one helper for a file (:func:`atomic_file`), one for a directory
(:func:`atomic_directory`), and JSON for numpy values. A killed or failing process never leaves a
half-written result under its final name, nor a temporary file or directory behind it.

Both write into a hidden temporary sibling of the target (same directory, so the final rename is
atomic) and rename it into place only when the writing finished; ``fsync=True`` also makes the
result durable (the data before the rename, the directory entry after it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_file(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` (``.NAME.HEX.tmp``, created empty, with the
    permissions a plain ``open`` would give) to write the file into; when the block ends normally
    it replaces ``path`` in one rename.

    On an exception (or a failing rename) the temporary file is removed and ``path`` keeps its
    old content. ``fsync``: flush the file to disk before the rename and the directory after.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_directory(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview, *, fsync: bool = False) -> Path:
    path = Path(path)
    with atomic_file(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    path = Path(path)
    with atomic_file(path, fsync=fsync) as tmp:
        tmp.write_text(text)
    return path


def atomic_write_parquet(path: str | Path, table) -> Path:  # untyped: pyarrow.Table
    import pyarrow.parquet as pq

    path = Path(path)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)
    return path


@contextlib.contextmanager
def atomic_directory(target: str | Path, *, overwrite: bool = False, tag: str = ".", fsync: bool = False) -> Iterator[Path]:
    """Yield a fresh empty directory beside ``target`` (``.NAME{tag}tmp-HEX``) to write into; when
    the block ends normally it takes ``target``'s place (:func:`swap_directory`).

    On an exception the temporary directory is removed and ``target`` is untouched. An existing
    ``target`` (other than an empty directory) is an error unless ``overwrite``. ``fsync``: make
    the final rename durable (the files inside are the caller's to flush).
    """
    target = Path(target)
    if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{tag}tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    try:
        yield tmp
        swap_directory(tmp, target, tag=tag)
    except BaseException:
        _remove(tmp)
        raise
    if fsync:
        fsync_directory(target.parent)


# exchange_paths fails with these where the platform or file system cannot exchange two names
_NO_EXCHANGE = (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV, errno.EPERM)


def swap_directory(new: str | Path, target: str | Path, *, tag: str = ".") -> None:
    """Put the directory ``new`` in place of ``target`` and delete the old version.

    Where the file system can (:func:`exchange_paths`) the two are exchanged in one atomic step,
    so at every instant ``target`` is one complete version. Elsewhere the old one is first renamed
    to ``.NAME{tag}old-HEX``: a process killed between the two renames leaves it there, complete,
    for the caller's recovery. ``new`` is gone afterwards, or (on an error) still holds the new
    version with ``target`` unchanged.
    """
    new, target = Path(new), Path(target)
    if not target.exists() and not target.is_symlink():
        os.replace(new, target)
        return
    try:
        exchange_paths(new, target)
        old = new
    except OSError as exc:
        if exc.errno not in _NO_EXCHANGE:
            raise
        old = target.with_name(f".{target.name}{tag}old-{uuid.uuid4().hex[:12]}")
        os.replace(target, old)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(old, target)
            raise
    _remove(old)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


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
