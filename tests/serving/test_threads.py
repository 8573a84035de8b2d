"""The service's thread counts: torch_threads is applied, logged and warned about when it exceeds
the usable cores; an exported ONNX model's session gets the same count (not ONNX Runtime's one per core)."""

from __future__ import annotations

import logging

import pytest
import torch

from evorec.serving.settings import ServeSettings, apply_threads
from evorec.utils import hardware as H


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_torch_threads_are_applied_and_logged(restore_threads, caplog):
    with caplog.at_level(logging.INFO, logger="evorec.serving.settings"):
        assert apply_threads(ServeSettings(torch_threads=1)) == 1
    assert torch.get_num_threads() == 1
    assert any("1 intra-op thread" in r.getMessage() and "torch " in r.getMessage() for r in caplog.records)


def test_torch_threads_above_the_cores_warn(restore_threads, monkeypatch, caplog):
    monkeypatch.setattr(H, "usable_cores", lambda: 1)
    with caplog.at_level(logging.WARNING, logger="evorec.utils.hardware"):
        assert apply_threads(ServeSettings(torch_threads=3)) == 3  # kept, as asked: a warning, not a silent change
    assert torch.get_num_threads() == 3
    assert any("EVOREC_SERVE_TORCH_THREADS" in r.getMessage() and "only 1" in r.getMessage() for r in caplog.records)


def test_onnx_session_threads_follow_the_setting(trained_run, tmp_path, restore_threads):
    pytest.importorskip("onnxruntime")
    from evorec.serving.export import ExportedScorer, export_run

    res = export_run(trained_run, "onnx", tmp_path / "m.onnx")
    torch.set_num_threads(2)
    inherited = ExportedScorer(res.path, "onnx", res.max_len, res.n_items)
    explicit = ExportedScorer(res.path, "onnx", res.max_len, res.n_items, threads=1)
    assert inherited._sess.get_session_options().intra_op_num_threads == 2
    assert explicit._sess.get_session_options().intra_op_num_threads == 1
