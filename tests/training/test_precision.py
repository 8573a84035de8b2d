"""The trainer resolves ``train.precision: auto`` on its device, trains in what it chose, logs the
choice and saves it in history.json, the checkpoints and metrics.json; too many threads warn."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import experiment

from evorec.experiments.config import load_experiment
from evorec.experiments.training import evaluate_run, train
from evorec.models.checkpoint import load_checkpoint
from evorec.utils import hardware as H

AVX2_ONLY = frozenset({"avx2", "fma", "sse2"})
AMX = frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})


@pytest.fixture
def cpu_flags(monkeypatch):
    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(k, raising=False)

    def make(flags: frozenset[str], capability: str) -> None:
        monkeypatch.setattr(H, "_read_cpuinfo", lambda: ("Test CPU 9000", flags))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)

    return make


@pytest.fixture
def autocasts(monkeypatch):
    """The ``enabled`` flag of every autocast the training step opens."""
    seen: list[bool] = []
    real = torch.autocast

    def recording(*args, **kwargs):
        seen.append(bool(kwargs.get("enabled", True)))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", recording)
    return seen


def _run(tmp_path, name, **train_kw):
    cfg = load_experiment(None, base=experiment(tmp_path, epochs=1, eval_users=100, device="cpu", **train_kw))
    return train(cfg, tmp_path / name)


def test_auto_on_an_avx2_cpu_trains_fp32_and_records_it(tmp_path, cpu_flags, autocasts, caplog):
    cpu_flags(AVX2_ONLY, "AVX2")
    with caplog.at_level(logging.INFO, logger="evorec.training.trainer"):
        state, out = _run(tmp_path, "avx2")
    assert autocasts and not any(autocasts), "an AVX2-only CPU must not autocast to bf16"
    assert state.precision == "fp32" and "emulated" in state.precision_reason and "Test CPU 9000" in state.cpu
    assert state.threads == torch.get_num_threads()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "precision fp32 (train.precision=auto" in logged and "emulated" in logged
    hist = json.loads((out / "history.json").read_text())
    assert hist["precision"] == "fp32" and hist["precision_reason"] == state.precision_reason
    for ck in ("best.pt", "last.pt"):
        assert load_checkpoint(out / ck).train_state["precision"] == "fp32"
    evaluate_run(out, eval_overrides=["bootstrap=0"])
    ts = json.loads((out / "metrics.json").read_text())["train_state"]
    assert ts["precision"] == "fp32" and "emulated" in ts["precision_reason"] and "Test CPU 9000" in ts["cpu"]


def test_auto_on_an_amx_cpu_trains_bf16(tmp_path, cpu_flags, autocasts):
    cpu_flags(AMX, "AVX512")
    state, out = _run(tmp_path, "amx")
    assert autocasts and all(autocasts)
    assert state.precision == "bf16" and "AMX" in state.precision_reason
    assert load_checkpoint(out / "best.pt").train_state["precision"] == "bf16"


def test_explicit_bf16_on_an_avx2_cpu_trains_bf16_with_a_warning(tmp_path, cpu_flags, autocasts, caplog):
    cpu_flags(AVX2_ONLY, "AVX2")
    with caplog.at_level(logging.WARNING):
        state, _ = _run(tmp_path, "forced", precision="bf16")
    assert autocasts and all(autocasts) and state.precision == "bf16"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "train.precision=bf16" in r.getMessage()]
    assert warned and H.EMULATED_BF16_COST in warned[0]


def test_threads_above_the_cores_warn_and_are_kept(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(H, "usable_cores", lambda: 1)
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.WARNING, logger="evorec.utils.hardware"):
            state, _ = _run(tmp_path, "threads", threads=2)
        assert state.threads == 2
    finally:
        torch.set_num_threads(before)
    (rec,) = [r for r in caplog.records if "train.threads=2" in r.getMessage()]
    assert "only 1" in rec.getMessage()


def test_default_threads_are_torchs_a_busy_machine_is_warned_and_a_resume_keeps_the_runs_count(tmp_path, monkeypatch, caplog):
    before = torch.get_num_threads()
    monkeypatch.setattr(H, "usable_cores", lambda: 2)
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(H.os, "getloadavg", lambda: (3.0, 3.0, 3.0))  # both cores busy with other jobs
        cfg = load_experiment(None, base=experiment(tmp_path, epochs=1, eval_users=100, device="cpu"))
        with caplog.at_level(logging.WARNING, logger="evorec.utils.hardware"):
            state, out = train(cfg, tmp_path / "busy")
        assert state.threads == 2 and torch.get_num_threads() == 2  # the same choice whatever the load
        assert any("train.threads=1" in r.getMessage() for r in caplog.records)
        torch.set_num_threads(1)
        monkeypatch.setattr(H.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        state, _ = train(cfg, out, resume=True)
        assert torch.get_num_threads() == 2, "a resume keeps the count the run trained with"
        assert state.threads == 2 and "resumed" in state.threads_reason
    finally:
        torch.set_num_threads(before)
