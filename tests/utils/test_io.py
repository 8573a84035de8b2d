"""The atomic file and directory helpers: a failure or a kill at any point leaves the old version
or the new one, complete, under the final name, and no temporary file or directory behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evorec.utils import io as io_mod
from evorec.utils.io import atomic_directory, atomic_file, atomic_write_bytes, atomic_write_text, swap_directory


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# -- files ---------------------------------------------------------------------------------------


def test_atomic_file_replaces_and_leaves_no_temp(tmp_path):
    f = tmp_path / "a.json"
    f.write_text("old")
    with atomic_file(f) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.json.") and tmp.exists()
        tmp.write_text("new")
        assert f.read_text() == "old"  # nothing under the final name until the block ends
    assert f.read_text() == "new" and names(tmp_path) == ["a.json"]
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert f.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # the permissions a plain open gives


def test_atomic_file_creates_missing_directories(tmp_path):
    out = atomic_write_bytes(tmp_path / "x" / "y" / "b.bin", b"\x00\x01", fsync=True)
    assert out.read_bytes() == b"\x00\x01" and names(out.parent) == ["b.bin"]


def test_exception_mid_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    f = tmp_path / "a.txt"
    atomic_write_text(f, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_file(f, fsync=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert f.read_text() == "old" and names(tmp_path) == ["a.txt"]
    with pytest.raises(KeyboardInterrupt):  # BaseException too
        with atomic_file(tmp_path / "new.txt") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert names(tmp_path) == ["a.txt"]


def test_a_failing_rename_leaves_no_temp(tmp_path):
    d = tmp_path / "taken"
    d.mkdir()
    (d / "inside").write_text("x")
    with pytest.raises(OSError):
        atomic_write_text(d, "cannot replace a non-empty directory")
    assert names(tmp_path) == ["taken"] and names(d) == ["inside"]


# -- directories ---------------------------------------------------------------------------------


def make(d: Path, version: str, n: int = 5) -> None:
    for i in range(n):
        (d / f"f{i}").write_text(version)


def versions(d: Path) -> set[str]:
    """The versions the files of ``d`` hold ({"old"} or {"new"} for a complete directory)."""
    files = sorted(d.iterdir())
    assert [p.name for p in files] == [f"f{i}" for i in range(5)], f"{d} is incomplete: {[p.name for p in files]}"
    return {p.read_text() for p in files}


@pytest.mark.parametrize("exchange", [True, False])
def test_atomic_directory_replaces_a_directory(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(io_mod, "exchange_paths", _no_exchange)
    target = tmp_path / "seq"
    with atomic_directory(target) as tmp:
        make(tmp, "old")
    with pytest.raises(FileExistsError):
        with atomic_directory(target):
            pass
    with atomic_directory(target, overwrite=True, fsync=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".seq.tmp-") and not any(tmp.iterdir())
        make(tmp, "new")
        assert versions(target) == {"old"}
    assert versions(target) == {"new"} and names(tmp_path) == ["seq"]


def test_exception_mid_write_keeps_the_old_directory(tmp_path):
    target = tmp_path / "seq"
    with atomic_directory(target) as tmp:
        make(tmp, "old")
    with pytest.raises(ValueError):
        with atomic_directory(target, overwrite=True, tag=".job-") as tmp:
            assert tmp.name.startswith(".seq.job-tmp-")
            make(tmp, "new", 3)
            raise ValueError("half written")
    assert versions(target) == {"old"} and names(tmp_path) == ["seq"]


def _no_exchange(a, b):
    raise OSError(errno.EINVAL, "no exchange here")


def test_a_failing_second_rename_puts_the_old_directory_back(tmp_path, monkeypatch):
    target = tmp_path / "seq"
    target.mkdir()
    make(target, "old")
    new = tmp_path / "new"
    new.mkdir()
    make(new, "new")
    monkeypatch.setattr(io_mod, "exchange_paths", _no_exchange)
    real = os.replace
    calls = []

    def replace(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError(errno.EIO, "disk gone")
        return real(a, b)

    monkeypatch.setattr(io_mod.os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        swap_directory(new, target)
    assert versions(target) == {"old"} and versions(new) == {"new"} and names(tmp_path) == ["new", "seq"]


KILL = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from evorec.utils import io

    where, target = sys.argv[1], Path(sys.argv[2])
    real_replace = os.replace

    def die(*a, **k):
        os._exit(9)

    if where == "writing":
        pass
    elif where == "exchange":
        io.exchange_paths = die
    elif where == "between_renames":
        io.exchange_paths = lambda a, b: (_ for _ in ()).throw(OSError(22, "no exchange"))
        n = []
        def replace(a, b):
            n.append(1)
            if len(n) == 2:
                os._exit(9)
            real_replace(a, b)
        io.os.replace = replace
    elif where == "deleting_old":
        io._remove = die
    with io.atomic_directory(target, overwrite=True) as tmp:
        for i in range(5):
            if where == "writing" and i == 3:
                os._exit(9)
            (tmp / f"f{i}").write_text("new")
    """
)


@pytest.mark.parametrize("where", ["writing", "exchange", "between_renames", "deleting_old"])
def test_a_killed_swap_leaves_old_or_new_complete(tmp_path, where):
    target = tmp_path / "seq"
    target.mkdir()
    make(target, "old")
    proc = subprocess.run([sys.executable, "-c", KILL, where, str(target)], capture_output=True, text=True, check=False)
    assert proc.returncode == 9, proc.stderr
    left = {p.name: p for p in tmp_path.iterdir()}
    if where == "between_renames":  # killed between the two renames: the old one lies aside, complete
        assert "seq" not in left
        (aside,) = [p for n, p in left.items() if n.startswith(".seq.old-")]
        assert versions(aside) == {"old"}
    else:
        assert versions(target) == ({"new"} if where == "deleting_old" else {"old"})
    # whatever else is left is a hidden sibling: a temporary directory or the version swapped out
    assert all(n.startswith(".seq.") for n in left if n != "seq")


def test_exchange_paths_swaps_two_directories_where_the_file_system_can(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    try:
        io_mod.exchange_paths(a, b)
    except OSError as exc:
        pytest.skip(f"no atomic exchange on this file system: {exc}")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
