"""`evorec data sniff FILE` and `evorec --help` start fast: they import only what they need.

The sniffer answers in 0.02-0.2 s; the whole command must stay within the issue-19 target of 1 s,
so the CLI must not load Torch, Ibis or pandas (each costs 0.3-1 s to import) on its way to it.
Each command runs in a fresh interpreter, as a user runs it, and reports the modules it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evorec.cli.common import user_errors

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TAOBAO = SHARED / "taobao_userbehavior_head84k" / "UserBehavior_head.csv"
HEAVY = ("torch", "ibis", "pandas", "sklearn", "mlflow", "evorec.data.splits", "evorec.models", "evorec.training")

# Runs `evorec ARGS...` as `python -m evorec` does, then prints the heavy modules it loaded.
PROBE = """
import atexit, json, runpy, sys
heavy = json.loads(sys.argv[1])
atexit.register(lambda: sys.stderr.write("LOADED=" + json.dumps(sorted(m for m in heavy if m in sys.modules)) + "\\n"))
sys.argv = ["evorec", *sys.argv[2:]]
runpy.run_module("evorec", run_name="__main__")
"""


def _loaded(*args: str) -> tuple[int, list[str], str]:
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), *args], capture_output=True, text=True, timeout=120)
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("LOADED=")]
    assert line, p.stderr
    return p.returncode, json.loads(line[-1][len("LOADED="):]), p.stdout


def _sample(tmp_path: Path) -> Path:
    """A shared event file when ../shared/data is here, else a few Taobao-shaped rows."""
    if TAOBAO.exists():
        return TAOBAO
    src = tmp_path / "UserBehavior.csv"
    src.write_text("".join(f"{u},{100 + u},7,pv,{1511544070 + u}\n" for u in range(200)))
    return src


def test_sniff_command_imports_no_torch_ibis_or_pandas(tmp_path):
    code, loaded, out = _loaded("data", "sniff", str(_sample(tmp_path)))
    assert code == 0, out
    assert "taobao" in out
    assert loaded == [], f"`evorec data sniff` imported {loaded}"


def test_sniff_command_json_and_unreadable_file_stay_light(tmp_path):
    code, loaded, out = _loaded("data", "sniff", str(_sample(tmp_path)), "--json")
    assert code == 0 and json.loads(out)["certain"] is True
    assert loaded == []
    code, loaded, _ = _loaded("data", "sniff", str(tmp_path / "missing.csv"))
    assert code == 2 and loaded == []  # the one-line user error, still without the heavy modules


def test_help_imports_nothing_heavy():
    code, loaded, out = _loaded("--help")
    assert code == 0 and "data" in out
    assert loaded == []


def test_leakage_error_is_still_a_user_error():
    """LeakageError (an AssertionError) is caught once evorec.data.splits is loaded, as before."""
    import typer

    from evorec.data.splits import LeakageError

    with pytest.raises(typer.Exit) as exc, user_errors():
        raise LeakageError("the training set saw the evaluation period")
    assert exc.value.exit_code == 2
    with pytest.raises(AssertionError), user_errors():  # a plain assertion is a bug, not a user error
        raise AssertionError("bug")
