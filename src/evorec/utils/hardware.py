"""What this machine runs fast, decided at run time: training precision, thread counts, and a
record of the CPU for logs and benchmark results.

Threads: :func:`choose_threads` keeps an explicit count (warning above the usable cores) and
otherwise torch's default, warning when the load says other jobs hold the cores (see its doc
for the measurements).

Configs never hard-code a hardware choice (DESIGN.md): ``train.precision: auto`` asks
:func:`choose_precision`, which picks bfloat16 autocast only where it is measured faster than
float32, and float32 everywhere else. On a CPU the rule is

- **AMX** (``amx_bf16`` + ``amx_tile``, Intel Sapphire Rapids and later): bfloat16;
- **AVX512-BF16 without AMX** (AMD Zen 4/5, Intel Cooper Lake): bfloat16 as well, because it was
  measured faster than float32 there (``BF16_WITHOUT_AMX``, ``NO_AMX_BF16_GAIN``);
- **anything else** (AVX2-only CPUs such as AMD Zen 2/3 or most laptops): float32, because
  bfloat16 is emulated there and slower (``EMULATED_BF16_COST``);

and caps the user set are respected: ``ATEN_CPU_CAPABILITY`` below ``avx512`` (torch then
reports a capability below ``AVX512``) or ``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16``
(``AVX512_CORE_AMX`` for AMX) count as "not native". A CUDA device gets bfloat16 when
``torch.cuda.is_bf16_supported()``. An explicit ``bf16`` is honoured everywhere, with a warning
that names the measured cost where it is not the fast choice.

The CPU flags are read from ``/proc/cpuinfo`` (what ``lscpu`` shows) by ``_read_cpuinfo``, the one
place tests replace.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from dataclasses import asdict, dataclass
from typing import Literal

from evorec.errors import InputError

log = logging.getLogger(__name__)

# The values ``train.precision`` accepts; ``auto`` resolves to one of the other two.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
Precision = Literal["fp32", "bf16"]

# Flags that decide speed here, in the order they are printed.
CPU_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")

# Measured (benchmarks/README.md, "CPU matrix": SASRec on S3-Rec Beauty, configs/beauty/sasrec.yaml,
# fp32 and bf16 autocast side by side, 1 thread each, on the project's 2-core AMD EPYC Zen 4, as is
# and with ATen/oneDNN/MKL capped to AVX2).
# Without native bf16 every bf16 matmul is emulated: capped to AVX2, SASRec trained at 217 targets/s
# in bf16 against 1,663 in fp32 (side by side), and a step took 611 ms against 80 ms
# (benchmarks/train_step.py, alternating rounds): 7.7x; issue 17 saw ~4x on a real AVX2-only AMD EPYC.
EMULATED_BF16_COST = ("about 7.7x slower than fp32 (SASRec on Beauty with ATen/oneDNN capped to AVX2; "
                      "~4x on a real AVX2-only AMD EPYC)")
# bf16 autocast pays on a CPU with AVX512-BF16 but no AMX: on AMD EPYC Zen 4 bf16 trained SASRec at
# 4,081 targets/s against fp32's 2,421 (1.7x; 30 s against 51 s per epoch, side by side).
BF16_WITHOUT_AMX = True
NO_AMX_BF16_GAIN = "measured 1.7x faster than fp32 (SASRec on Beauty, AMD EPYC Zen 4)"

# oneDNN's ISA names in increasing order (``ONEDNN_MAX_CPU_ISA`` / the older ``DNNL_MAX_CPU_ISA``).
_ONEDNN_ISAS = (
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
)


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as far as speed is concerned."""

    model: str  # lscpu's "Model name" (``model name`` in /proc/cpuinfo)
    flags: tuple[str, ...]  # those of CPU_FLAGS the CPU reports
    capability: str  # torch.backends.cpu.get_cpu_capability(): ATen's vector kernels (after ATEN_CPU_CAPABILITY)
    cores: int  # os.cpu_count()
    usable_cores: int  # the process's affinity mask (a container or taskset may allow fewer)
    aten_cpu_capability: str | None  # $ATEN_CPU_CAPABILITY, when set
    onednn_max_cpu_isa: str | None  # $ONEDNN_MAX_CPU_ISA (or $DNNL_MAX_CPU_ISA), when set
    mkl_enable_instructions: str | None = None  # $MKL_ENABLE_INSTRUCTIONS, when set (recorded, not decisive)

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def aten_avx512(self) -> bool:
        """ATen's kernels run AVX512 (not capped below it by ATEN_CPU_CAPABILITY or the CPU)."""
        return self.capability.upper().startswith("AVX512")

    def _onednn_allows(self, isa: str) -> bool:
        cap = (self.onednn_max_cpu_isa or "").upper()
        if cap in ("", "ALL", "DEFAULT") or cap not in _ONEDNN_ISAS:
            return True
        return _ONEDNN_ISAS.index(cap) >= _ONEDNN_ISAS.index(isa)

    @property
    def native_bf16(self) -> bool:
        """bfloat16 matmuls run in hardware: AVX512-BF16 or AMX, and neither ATen nor oneDNN capped below."""
        hw = self.has("avx512_bf16") or self.has("amx_bf16")
        return hw and self.aten_avx512 and self._onednn_allows("AVX512_CORE_BF16")

    @property
    def amx(self) -> bool:
        """AMX tiles usable for bfloat16 (and oneDNN not capped below them)."""
        return self.native_bf16 and self.has("amx_bf16") and self.has("amx_tile") and self._onednn_allows("AVX512_CORE_AMX")

    def caps(self) -> str:
        """The environment caps in effect, as text ("" when none)."""
        parts = [f"ATEN_CPU_CAPABILITY={self.aten_cpu_capability}" if self.aten_cpu_capability else "",
                 f"ONEDNN_MAX_CPU_ISA={self.onednn_max_cpu_isa}" if self.onednn_max_cpu_isa else "",
                 f"MKL_ENABLE_INSTRUCTIONS={self.mkl_enable_instructions}" if self.mkl_enable_instructions else ""]
        return " ".join(p for p in parts if p)

    def describe(self) -> str:
        """One line: model, flags, torch capability, cores (and caps)."""
        cores = f"{self.cores} cores" + (f", {self.usable_cores} usable" if self.usable_cores != self.cores else "")
        caps = self.caps()
        return (f"{self.model} [{' '.join(self.flags) or 'no AVX2/AVX512 flags'}; torch {self.capability}; {cores}"
                + (f"; {caps}" if caps else "") + "]")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses and why."""

    precision: Precision  # what autocast runs: fp32 (autocast off) or bf16
    requested: str  # what the config said: auto | fp32 | bf16
    reason: str
    device: str  # cpu | cuda | cuda:N
    cpu: str  # CpuInfo.describe()

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"


@dataclass(frozen=True)
class MachineRecord:
    """What a benchmark result says about the machine it ran on (see :func:`machine_record`)."""

    cpu_model: str
    cpu_flags: tuple[str, ...]
    torch_cpu_capability: str
    cores: int
    usable_cores: int
    torch_threads: int
    env_caps: str
    native_bf16: bool
    amx: bool
    auto_precision: str  # what train.precision=auto picks on this CPU
    auto_precision_reason: str
    precision: str | None  # the precision the benchmark ran with (None: it trains nothing)
    python: str
    torch: str
    loadavg: tuple[float, float, float]

    def as_json(self) -> dict[str, object]:
        """A JSON-ready mapping (tuples become lists when dumped)."""
        return asdict(self)

    def line(self) -> str:
        """One printable line for a benchmark's output."""
        used = f"precision {self.precision}, " if self.precision else ""
        prec = f"; {used}auto picks {self.auto_precision} ({self.auto_precision_reason})"
        caps = f"; {self.env_caps}" if self.env_caps else ""
        load = ", ".join(f"{x:.2f}" for x in self.loadavg)
        return (f"cpu: {self.cpu_model} [{' '.join(self.cpu_flags)}]; torch {self.torch_cpu_capability}; {self.cores} cores"
                f" ({self.usable_cores} usable), {self.torch_threads} torch threads{caps}{prec}; load {load}")


@functools.lru_cache(maxsize=1)
def _read_cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo (Linux); elsewhere the platform's processor string
    and no flags (then ``auto`` picks fp32 on a CPU: slower at worst, never emulated)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU", frozenset()
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_info() -> CpuInfo:
    """The CPU this process runs on, with the caps set in its environment."""
    import torch

    model, flags = _read_cpuinfo()
    return CpuInfo(
        model=model,
        flags=tuple(f for f in CPU_FLAGS if f in flags),
        capability=str(torch.backends.cpu.get_cpu_capability()),
        cores=os.cpu_count() or 1,
        usable_cores=usable_cores(),
        aten_cpu_capability=os.environ.get("ATEN_CPU_CAPABILITY") or None,
        onednn_max_cpu_isa=os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or None,
        mkl_enable_instructions=os.environ.get("MKL_ENABLE_INSTRUCTIONS") or None,
    )


def check_precision(value: object) -> str:
    """``value`` if it is one of PRECISIONS, else a ValueError that lists them (fp16 explained)."""
    if value in PRECISIONS:
        return str(value)
    valid = ", ".join(PRECISIONS)
    if isinstance(value, str) and value.lower() in ("fp16", "float16", "half"):
        raise InputError(
            f"precision {value!r} is not supported: float16 autocast has no fast kernels on a CPU (it is "
            f"emulated there) and on a GPU would need loss scaling, which the trainer does not do; "
            f"use one of {valid} (auto picks bf16 where the device runs it natively)"
        )
    raise InputError(f"unknown precision {value!r}; use one of {valid}")


def _cpu_bf16_fast(cpu: CpuInfo) -> tuple[bool, str]:
    """(bf16 pays on this CPU, why)."""
    capped = f" (capped by {cpu.caps()})" if cpu.caps() else ""
    if cpu.amx:
        return True, "AMX bf16 tiles: bf16 matmuls run natively and faster than fp32"
    if cpu.native_bf16:
        if BF16_WITHOUT_AMX:
            return True, f"AVX512-BF16 (no AMX): bf16 matmuls run natively, {NO_AMX_BF16_GAIN}"
        return False, "AVX512-BF16 but no AMX: bf16 not measured faster than fp32 on such a CPU"
    if cpu.has("avx512_bf16") or cpu.has("amx_bf16"):
        return False, f"the CPU has bf16 instructions but they are switched off{capped}: bf16 would be emulated, {EMULATED_BF16_COST}"
    return False, f"no AVX512-BF16 or AMX: bf16 would be emulated, {EMULATED_BF16_COST}"


def choose_precision(requested: str, device: object = "cpu", cpu: CpuInfo | None = None) -> PrecisionChoice:
    """The precision a run on ``device`` (a torch.device or its name) uses for ``requested``
    (auto | fp32 | bf16), with the reason; an explicit bf16 where it is slow logs a warning."""
    requested = check_precision(requested)
    dev = str(device)
    cpu = cpu or cpu_info()
    if dev.startswith("cuda"):
        import torch

        fast = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        why = "the CUDA device supports bf16" if fast else "the CUDA device has no native bf16 (pre-Ampere)"
    else:
        fast, why = _cpu_bf16_fast(cpu)
    if requested == "fp32":
        choice = PrecisionChoice("fp32", requested, "asked for in the config (train.precision=fp32)", dev, cpu.describe())
    elif requested == "bf16":
        if not fast:
            log.warning("train.precision=bf16 on %s: %s. Set train.precision=auto (or fp32) to train faster.", dev, why)
        choice = PrecisionChoice("bf16", requested, "asked for in the config (train.precision=bf16)" + ("" if fast else f"; {why}"),
                                 dev, cpu.describe())
    else:
        choice = PrecisionChoice("bf16" if fast else "fp32", requested, why, dev, cpu.describe())
    return choice


def check_threads(threads: int | None, what: str = "threads") -> int | None:
    """``threads`` unchanged; a warning when it exceeds the cores this process may use (more
    threads than cores only contend: a slowdown, not a speed-up)."""
    n = usable_cores()
    if threads is not None and threads > n:
        log.warning(
            "%s=%d but this process may use only %d CPU core(s) (os.cpu_count()=%s, affinity %d): the extra "
            "threads contend with each other and slow the run down; use at most %d",
            what, threads, n, os.cpu_count(), n, n,
        )
    return threads


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count a run uses and why."""

    threads: int
    reason: str


def choose_threads(requested: int | None, what: str = "train.threads") -> ThreadChoice:
    """``requested`` when set (warned about above the usable cores); else torch's current count
    (one per core, or what OMP_NUM_THREADS / torch.set_num_threads made it), kept whatever the
    load: the choice is the same on every run of a machine. When the 1-minute load average says
    other jobs hold the cores, a warning says so and names the override: on the shared 2-core
    machine at load ~3, SASRec trained at 6,741 targets/s with 1 thread and 2,098 with 2
    (benchmarks/README.md, CPU matrix), while on the same machine idle 2 threads trained 10
    epochs in 120 s against 7 with 1 (emulated AVX2). Lowering by the load was tried and dropped:
    the load average lags, so a run started just after another job ended got 1 thread on an
    idle machine."""
    if requested is not None:
        check_threads(requested, what)
        return ThreadChoice(requested, f"{what}={requested}")
    import torch

    current = torch.get_num_threads()
    usable = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return ThreadChoice(current, f"torch's default ({current})")
    free = int(usable - load + 0.5)
    if current > 1 and free < current:
        log.warning(
            "%s: the 1-minute load average %.1f says other jobs hold about %.1f of %d usable cores; %d threads "
            "will wait on each other if that lasts: set %s=%d to use only the free ones",
            what, load, min(load, usable), usable, current, what, max(1, free),
        )
    return ThreadChoice(current, f"torch's default ({current}; load average {load:.1f} on {usable} usable cores)")


def machine_record(precision: str | None = None) -> MachineRecord:
    """The machine a benchmark ran on, for its printed table and its JSON: the CPU, torch's
    capability, cores, threads, the caps in effect, what ``auto`` picks here and ``precision``
    (what the benchmark itself ran with, when it trains or scores in a chosen precision)."""
    import torch

    cpu = cpu_info()
    auto = choose_precision("auto", "cpu", cpu)
    return MachineRecord(
        cpu_model=cpu.model, cpu_flags=cpu.flags, torch_cpu_capability=cpu.capability, cores=cpu.cores,
        usable_cores=cpu.usable_cores, torch_threads=torch.get_num_threads(), env_caps=cpu.caps(),
        native_bf16=cpu.native_bf16, amx=cpu.amx, auto_precision=auto.precision, auto_precision_reason=auto.reason,
        precision=precision, python=platform.python_version(), torch=torch.__version__, loadavg=os.getloadavg(),
    )
