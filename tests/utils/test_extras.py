"""Optional dependencies are extras: a feature without its extra says which one to install.

A missing package is simulated by ``sys.modules[name] = None`` (then ``import name`` raises
ImportError), so the tests run where every extra is installed.
"""

from __future__ import annotations

import sys

import pytest
import torch
from typer.testing import CliRunner

from evorec.cli.main import app
from evorec.errors import MissingExtraError


def _without(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("module", ["fastapi", "uvicorn", "faiss"])
def test_serve_without_the_serve_extra_names_it(monkeypatch, module):
    _without(monkeypatch, module)
    r = CliRunner().invoke(app, ["serve", "--run", "nowhere"])
    assert r.exit_code == 2, r.output
    assert "evorec serve needs the 'serve' extra: pip install 'evorec[serve]'" in " ".join(r.output.split())


def test_report_without_the_report_extra_names_it(monkeypatch, tmp_path):
    _without(monkeypatch, "plotly")
    r = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2, r.output
    assert "pip install 'evorec[report]'" in " ".join(r.output.split())
    assert not (tmp_path / "r").exists()


def test_report_page_without_plotly_names_the_extra(monkeypatch):
    from evorec.report.html import render_page

    _without(monkeypatch, "plotly", "plotly.io")
    with pytest.raises(MissingExtraError, match=r"pip install 'evorec\[report\]'") as info:
        render_page("t", "s", [], [], png=False)
    assert info.value.extra == "report" and info.value.missing == "plotly.io"


def test_integrated_gradients_without_captum_names_the_explain_extra(monkeypatch):
    from evorec.explain.attribution import integrated_gradients

    _without(monkeypatch, "captum", "captum.attr")
    with pytest.raises(MissingExtraError, match=r"pip install 'evorec\[explain\]'"):
        integrated_gradients(torch.nn.Identity(), None, 1)  # the extra is checked before anything is computed


def test_extras_are_declared():
    """The extras named in the errors exist in the package's metadata (pyproject.toml)."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    meta = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    core = " ".join(meta["dependencies"])
    for extra, packages in {"serve": ["fastapi", "uvicorn", "faiss-cpu", "captum", "plotly"], "report": ["plotly", "captum"],
                            "explain": ["captum"], "tensorboard": ["tensorboard"]}.items():
        for package in packages:
            assert any(dep.startswith(package) for dep in extras[extra]), (extra, package)
            assert package not in core, f"{package} is still a core dependency"
    assert any(dep.startswith("evorec[") and "serve" in dep for dep in extras["test"])


def test_everything_but_the_service_imports_without_the_extras():
    """Only evorec.serving needs an extra to be imported; the rest loads them when a feature runs."""
    import subprocess

    probe = """
import importlib, pkgutil, sys
for name in ("fastapi", "uvicorn", "faiss", "captum", "plotly", "tensorboard", "torch.utils.tensorboard"):
    sys.modules[name] = None
import evorec
for m in pkgutil.walk_packages(evorec.__path__, "evorec."):
    if not m.name.startswith("evorec.serving.") and not m.name.endswith("__main__") or m.name == "evorec.serving.export":
        importlib.import_module(m.name)
"""
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
