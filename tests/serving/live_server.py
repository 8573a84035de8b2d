"""A real ``evorec serve`` as a child process, for the tests that need the process itself: killing
it mid-request (test_crash.py) and running the container's command line and health check
(test_deploy.py). Imported as a plain module (pytest puts this folder on sys.path), like
tests/models/conformance.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def evorec_exe() -> str:
    """The ``evorec`` console script of the interpreter running the tests (the venv's)."""
    exe = Path(sys.executable).with_name("evorec")
    if not exe.exists():
        import shutil

        found = shutil.which("evorec")
        if found is None:
            raise FileNotFoundError("no `evorec` console script beside the test interpreter or on PATH")
        return found
    return str(exe)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any EVOREC_* variable (a setting inherited from the shell
    must not change what the child serves), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOREC_")}
    env.update(extra)
    return env


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no rollback, no flush -- what a crash or an OOM kill does."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"


def start(args: list[str], env: dict[str, str], log: Path, port: int, timeout: float = 120.0) -> Server:
    """Start ``evorec ARGS`` (which must bind 127.0.0.1:``port``) and wait until /healthz answers."""
    with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([evorec_exe(), *args], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(proc, port, log)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"`evorec {' '.join(args)}` exited with rc {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"server not healthy after {timeout:.0f} s:\n{server.log_tail()}")


def serve(run: Path, db_url: str, env: dict[str, str], log: Path, timeout: float = 120.0) -> Server:
    """``evorec serve --run RUN --host 127.0.0.1 --port FREE --db URL``."""
    port = free_port()
    return start(["serve", "--run", str(run), "--host", "127.0.0.1", "--port", str(port), "--db", db_url], env, log, port, timeout)


def create_key(role: str, db_url: str, env: dict[str, str]) -> str:
    """``evorec keys create --role ROLE --db URL --json``: the key, printed once."""
    out = subprocess.run([evorec_exe(), "keys", "create", "--role", role, "--label", f"test-{role}", "--db", db_url, "--json"],
                         check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["key"]
