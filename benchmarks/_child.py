"""Run a benchmark step as a child process and measure it (shared by the benchmark scripts)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time


def run_child(argv: list[str], env: dict[str, str] | None = None) -> tuple[str, str, float, float, int]:
    """(stdout, stderr, wall seconds, the child's peak RSS in MB, exit code).

    Output goes to temporary files, not pipes: a child writing more than a pipe buffer while the
    parent waits in ``os.wait4`` (needed for the child's own peak memory) would deadlock."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return out.read().decode(), err.read().decode(), wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)
