"""A throwaway PostgreSQL cluster on loopback for a benchmark (shared by the benchmark scripts).

Made the way the test fixture ``postgres_url`` in ``tests/serving/conftest.py`` makes it: ``initdb``
in a fresh ``mkdtemp`` directory (chowned to the ``postgres`` system user and run through
``runuser -u postgres --`` when we are root, since PostgreSQL refuses to run as root), trust
authentication, a free loopback port, ``pg_ctl start``; on exit (normal, exception, Ctrl-C)
``pg_ctl stop -m fast`` and the directory is removed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Cluster:
    url: str  # postgresql+psycopg://postgres@127.0.0.1:PORT/evorec
    port: int
    bin_dir: Path
    major: str  # the Debian package's major version (the bin folder's parent)
    pid: int  # the postmaster's


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of the process ``pid`` (with its reaped children) and its live children: for the
    postmaster, the whole server (backends are its children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid):
            total += sum(int(x) for x in f[11:15]) / tick  # utime stime cutime cstime
        elif f[1] == str(pid):
            total += (int(f[11]) + int(f[12])) / tick
    return total


def pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_postgres(dbname: str = "evorec") -> Iterator[Cluster]:
    pg = pg_bin()
    if pg is None:
        raise SystemExit("PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="evorec-pg-bench-"))
    data = base / "data"
    as_pg: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run([*as_pg, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                       check=True, capture_output=True)
        port = free_port()
        # its own session: a Ctrl-C in the terminal reaches this script, which stops the server itself
        subprocess.run([*as_pg, str(pg / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-o",
                        f"-h 127.0.0.1 -p {port} -k {base} -F", "start"], check=True, capture_output=True,
                       start_new_session=True)
        subprocess.run([*as_pg, str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", dbname],
                       check=True, capture_output=True)
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield Cluster(f"postgresql+psycopg://postgres@127.0.0.1:{port}/{dbname}", port, pg, pg.parent.name, pid)
    finally:
        if (data / "postmaster.pid").exists():  # also after a start interrupted half-way
            subprocess.run([*as_pg, str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
