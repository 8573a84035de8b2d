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
