"""``train.precision: auto`` and the other run-time hardware choices (evorec.utils.hardware).

The CPU is faked: ``_read_cpuinfo`` (the flag source), torch's reported capability and the
environment caps are replaced, so every case runs on any machine."""

from __future__ import annotations

import logging

import pytest
import torch
from typer.testing import CliRunner

from evorec.cli.main import app
from evorec.experiments.config import load_experiment
from evorec.training.trainer import TrainConfig
from evorec.utils import hardware as H

AVX2_ONLY = ("avx2", "fma")  # AMD Zen 2/3, most laptops
ZEN4 = ("avx2", "fma", "avx512f", "avx512_bf16")  # AVX512-BF16, no AMX
SAPPHIRE_RAPIDS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


@pytest.fixture
def fake_cpu(monkeypatch):
    """fake_cpu(flags, capability="AVX512", **env): the CPU cpu_info() then reports."""
    for k in CAPS:
        monkeypatch.delenv(k, raising=False)

    def make(flags, capability: str = "AVX512", **env: str) -> H.CpuInfo:
        monkeypatch.setattr(H, "_read_cpuinfo", lambda: ("Test CPU 9000", frozenset(flags) | {"sse2", "fpu"}))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return H.cpu_info()

    return make


def test_cpu_info_reads_the_flag_source_and_caps(fake_cpu):
    cpu = fake_cpu(SAPPHIRE_RAPIDS, "AVX2", ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    assert cpu.model == "Test CPU 9000"
    assert cpu.flags == SAPPHIRE_RAPIDS  # only the flags that matter, in CPU_FLAGS order
    assert cpu.capability == "AVX2" and cpu.aten_cpu_capability == "avx2" and cpu.onednn_max_cpu_isa == "AVX2"
    assert cpu.cores >= 1 and cpu.usable_cores >= 1
    text = cpu.describe()
    assert "Test CPU 9000" in text and "amx_bf16" in text and "torch AVX2" in text and "ONEDNN_MAX_CPU_ISA=AVX2" in text


def test_the_real_cpu_is_described():
    cpu = H.cpu_info()  # whatever this machine is: a name, a torch capability, cores
    assert cpu.model and cpu.capability and cpu.cores >= 1
    assert set(cpu.flags) <= set(H.CPU_FLAGS)


def test_auto_on_an_amx_cpu_is_bf16(fake_cpu):
    c = H.choose_precision("auto", "cpu", fake_cpu(SAPPHIRE_RAPIDS))
    assert c.precision == "bf16" and c.bf16 and "AMX" in c.reason and c.requested == "auto"
    assert "Test CPU 9000" in c.cpu


def test_auto_on_an_avx2_cpu_is_fp32_and_says_why(fake_cpu):
    c = H.choose_precision("auto", "cpu", fake_cpu(AVX2_ONLY, "AVX2"))
    assert c.precision == "fp32" and not c.bf16
    assert "emulated" in c.reason and H.EMULATED_BF16_COST in c.reason


def test_auto_on_avx512_bf16_without_amx_is_bf16_as_measured(fake_cpu):
    assert H.BF16_WITHOUT_AMX  # measured on AMD EPYC Zen 4: bf16 1.7x faster than fp32 (benchmarks/README.md)
    c = H.choose_precision("auto", "cpu", fake_cpu(ZEN4))
    assert c.precision == "bf16" and "AVX512-BF16" in c.reason and "measured" in c.reason


@pytest.mark.parametrize("pays", [False, True])
def test_auto_on_avx512_bf16_without_amx_follows_the_measurement(fake_cpu, monkeypatch, pays):
    monkeypatch.setattr(H, "BF16_WITHOUT_AMX", pays)
    c = H.choose_precision("auto", "cpu", fake_cpu(ZEN4))
    assert c.precision == ("bf16" if pays else "fp32")
    assert "no AMX" in c.reason


@pytest.mark.parametrize(
    "capability, env",
    [
        ("AVX2", {"ATEN_CPU_CAPABILITY": "avx2"}),  # ATen capped: torch reports AVX2
        ("DEFAULT", {"ATEN_CPU_CAPABILITY": "default"}),
        ("AVX512", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),  # oneDNN capped below its bf16 kernels
        ("AVX512", {"ONEDNN_MAX_CPU_ISA": "avx512_core"}),  # lower case is how users often write it
        ("AVX512", {"DNNL_MAX_CPU_ISA": "AVX512_CORE_VNNI"}),  # the older name of the same cap
    ],
)
def test_caps_a_user_set_switch_native_bf16_off(fake_cpu, monkeypatch, capability, env):
    monkeypatch.setattr(H, "BF16_WITHOUT_AMX", True)  # even where bf16 would pay, a cap wins
    cpu = fake_cpu(SAPPHIRE_RAPIDS, capability, **env)
    assert not cpu.native_bf16 and not cpu.amx
    c = H.choose_precision("auto", "cpu", cpu)
    assert c.precision == "fp32" and "switched off" in c.reason and next(iter(env.values())) in c.reason


def test_a_cap_below_amx_keeps_avx512_bf16(fake_cpu, monkeypatch):
    cpu = fake_cpu(SAPPHIRE_RAPIDS, ONEDNN_MAX_CPU_ISA="AVX512_CORE_BF16")
    assert cpu.native_bf16 and not cpu.amx
    monkeypatch.setattr(H, "BF16_WITHOUT_AMX", False)
    assert H.choose_precision("auto", "cpu", cpu).precision == "fp32"
    uncapped = fake_cpu(SAPPHIRE_RAPIDS, ONEDNN_MAX_CPU_ISA="ALL")
    assert uncapped.amx and H.choose_precision("auto", "cpu", uncapped).precision == "bf16"


@pytest.mark.parametrize("supported", [True, False])
def test_auto_on_cuda_follows_is_bf16_supported(fake_cpu, monkeypatch, supported):
    cpu = fake_cpu(AVX2_ONLY, "AVX2")  # the host CPU does not matter on a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    c = H.choose_precision("auto", torch.device("cuda", 0), cpu)
    assert c.precision == ("bf16" if supported else "fp32") and c.device == "cuda:0"


def test_explicit_fp32_is_kept_everywhere(fake_cpu):
    c = H.choose_precision("fp32", "cpu", fake_cpu(SAPPHIRE_RAPIDS))
    assert c.precision == "fp32" and "asked for" in c.reason


def test_explicit_bf16_without_native_support_runs_with_a_warning_naming_the_cost(fake_cpu, caplog):
    with caplog.at_level(logging.WARNING, logger="evorec.utils.hardware"):
        c = H.choose_precision("bf16", "cpu", fake_cpu(AVX2_ONLY, "AVX2"))
    assert c.precision == "bf16"  # still runs as asked
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "train.precision=bf16" in msg and H.EMULATED_BF16_COST in msg and "auto" in msg


def test_explicit_bf16_where_native_warns_nothing(fake_cpu, caplog):
    with caplog.at_level(logging.WARNING, logger="evorec.utils.hardware"):
        assert H.choose_precision("bf16", "cpu", fake_cpu(SAPPHIRE_RAPIDS)).precision == "bf16"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("bad", ["fp16", "float16", "half"])
def test_fp16_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="not supported") as exc:
        H.check_precision(bad)
    msg = str(exc.value)
    assert bad in msg and "CPU" in msg and "auto, fp32, bf16" in msg


def test_unknown_precision_lists_the_valid_values():
    with pytest.raises(ValueError, match=r"unknown precision 'fp8'; use one of auto, fp32, bf16"):
        H.check_precision("fp8")
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        H.choose_precision("int8", "cpu")


def test_config_default_is_auto_and_fp16_override_fails_clearly(tmp_path):
    assert TrainConfig().precision == "auto"
    base = {"data": {"path": "x.csv", "format": "s3rec"}, "model": {"name": "pop"}}
    with pytest.raises(ValueError) as exc:
        load_experiment(None, ["train.precision=fp16"], base=base)
    msg = str(exc.value)
    assert "train.precision" in msg and "fp16" in msg and "CPU" in msg and "auto, fp32, bf16" in msg


def test_cli_set_fp16_exits_with_the_message(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {path: x.csv, format: s3rec}\nmodel: {name: pop}\n")
    r = CliRunner().invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--set", "train.precision=fp16"])
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.split())  # the console wraps long lines
    assert "fp16" in flat and "CPU" in flat and "auto, fp32, bf16" in flat


def test_threads_above_the_usable_cores_warn(monkeypatch, caplog):
    monkeypatch.setattr(H, "usable_cores", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="evorec.utils.hardware"):
        assert H.check_threads(2, "train.threads") == 2
        assert H.check_threads(None, "train.threads") is None
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="evorec.utils.hardware"):
        assert H.check_threads(8, "train.threads") == 8  # kept: a warning, not a silent change
    (rec,) = caplog.records
    assert "train.threads=8" in rec.getMessage() and "only 2" in rec.getMessage()


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "current, usable, load, expected",
    [
        (2, 2, 0.2, 2),  # a quiet machine: torch's default kept
        (2, 2, 3.0, 1),  # both cores busy with other jobs: one thread
        (2, 2, 1.2, 1),
        (16, 16, 4.0, 12),  # the free cores of a larger machine
        (1, 2, 0.0, 1),  # never raised above what OMP_NUM_THREADS / set_num_threads chose
    ],
)
def test_default_threads_are_torchs_and_a_busy_machine_is_warned_about(monkeypatch, torch_threads, current, usable, load, expected, caplog):
    torch_threads(current)
    monkeypatch.setattr(H, "usable_cores", lambda: usable)
    monkeypatch.setattr(H.os, "getloadavg", lambda: (load, load, load))
    with caplog.at_level(logging.WARNING, logger="evorec.utils.hardware"):
        pick = H.choose_threads(None)
    assert pick.threads == current  # the same on every run, whatever the load
    assert f"{load:.1f}" in pick.reason
    warned = [r.getMessage() for r in caplog.records]
    assert bool(warned) == (expected < current)
    if warned:
        assert f"train.threads={expected}" in warned[0]


def test_explicit_threads_are_kept_whatever_the_load(monkeypatch, torch_threads, caplog):
    torch_threads(2)
    monkeypatch.setattr(H, "usable_cores", lambda: 2)
    monkeypatch.setattr(H.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert H.choose_threads(2).threads == 2 and not caplog.records
    with caplog.at_level(logging.WARNING, logger="evorec.utils.hardware"):
        assert H.choose_threads(4).threads == 4
    assert "only 2" in caplog.records[0].getMessage()


def test_machine_record_for_benchmarks(fake_cpu):
    fake_cpu(ZEN4)
    m = H.machine_record("fp32")
    doc = m.as_json()
    for key in ("cpu_model", "cpu_flags", "torch_cpu_capability", "cores", "auto_precision", "precision", "loadavg"):
        assert key in doc
    assert doc["cpu_model"] == "Test CPU 9000" and doc["torch_cpu_capability"] == "AVX512" and doc["precision"] == "fp32"
    assert "avx512_bf16" in m.line() and "auto picks" in m.line()
