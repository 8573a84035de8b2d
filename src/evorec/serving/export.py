"""Export a trained recommender's scoring function to ONNX or TorchScript, for serving stacks
without Python or evorec (onnxruntime, Triton, LibTorch).

What is exported is ``model.score`` for one fixed history length ``T`` (the run's training
``max_len``) and any batch size, as a function of six tensors (left-padded, as in
:class:`evorec.types.SequenceBatch`):

==============  ===========  =====================================================
``items``       (B, T) int64  item index, 0 = padding
``categories``  (B, T) int64  category index, 0 = padding/unknown
``behaviors``   (B, T) int64  behaviour index (``evorec.types.BEHAVIOR_INDEX``)
``timestamps``  (B, T) int64  unix seconds, 0 at padding
``mask``        (B, T) bool   True where there is an event
``query_ts``    (B,)   int64  when the next item is asked for
==============  ===========  =====================================================

-> ``scores`` (B, n_items) float32, column 0 (padding) = -inf. Histories shorter than ``T`` are
left-padded to ``T``; longer ones keep their latest ``T`` events.

The file is written atomically (temp + rename), with a JSON sidecar (``FILE.json``) that names
the inputs, ``max_len``, ``n_items``, the model and the vocabulary fingerprint of the checkpoint,
so a consumer can check that its item indices mean the same items. Before the file is kept, the
exported function is run on a second, differently-sized batch and compared with the eager model
(``max_abs_diff`` in the result and the sidecar): a model whose scoring is not a traceable tensor
function fails here rather than in production.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from evorec.errors import InputError, MissingPathError
from evorec.experiments.runs import TrainingRun
from evorec.models.base import Recommender
from evorec.types import BEHAVIORS, SequenceBatch
from evorec.utils.io import atomic_file, atomic_write_text

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAMES = ("items", "categories", "behaviors", "timestamps", "mask", "query_ts")
OUTPUT_NAME = "scores"
ONNX_OPSET = 18
TOLERANCE = 1e-4  # max |exported - eager| on the check batch; float32 reassociation stays far below


class ExportError(InputError):
    """The run, the format or the model cannot be exported (the message says which and why)."""


class ScoringModule(nn.Module):
    """``model.score`` as a function of plain tensors (what ONNX and TorchScript can name)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, items: Tensor, categories: Tensor, behaviors: Tensor, timestamps: Tensor, mask: Tensor,
                query_ts: Tensor) -> Tensor:
        users = torch.zeros_like(query_ts)  # (B,) scoring never needs the user row; 0 keeps it in range
        batch = SequenceBatch(items, categories, behaviors, timestamps, mask, query_ts, users)
        return self.model.score(batch)  # (B, n_items)


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    format: str
    model_name: str
    max_len: int
    n_items: int
    max_abs_diff: float  # exported vs eager on the check batch (finite scores only)


def example_inputs(n_items: int, max_len: int, batch_size: int, *, item_category: np.ndarray | None = None,
                   seed: int = 0) -> tuple[Tensor, ...]:
    """A plausible left-padded batch: random histories of random lengths 1..max_len (one of each
    length extreme), known items, increasing timestamps. Tracing records the ops these inputs
    take, so every row has at least one event (an all-padding row is not a request)."""
    g = np.random.default_rng(seed)
    B, T = batch_size, max_len
    lengths = g.integers(1, T + 1, size=B)
    lengths[0], lengths[-1] = T, 1
    mask = np.arange(T)[None, :] >= (T - lengths)[:, None]  # (B, T) left padding
    items = np.where(mask, g.integers(1, max(n_items, 2), size=(B, T)), 0)
    ic = np.zeros(max(n_items, 2), np.int64) if item_category is None else np.asarray(item_category, np.int64)
    cats = np.where(mask, ic[np.minimum(items, len(ic) - 1)], 0)
    behs = np.where(mask, g.integers(1, len(BEHAVIORS) + 1, size=(B, T)), 0)
    ts = np.where(mask, 1_600_000_000 + np.cumsum(g.integers(60, 86_400 * 30, size=(B, T)), axis=1), 0)
    query = ts.max(axis=1) + g.integers(0, 86_400 * 60, size=B)
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (
        items.astype(np.int64), cats.astype(np.int64), behs.astype(np.int64), ts.astype(np.int64), mask, query.astype(np.int64)))


def _max_abs_diff(a: Tensor, b: Tensor) -> float:
    """Max |a - b| over entries finite in both; inf if the -inf pattern differs."""
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb):
        return float("inf")
    return float((a[fa] - b[fb]).abs().max()) if fa.any() else 0.0


def _check_exportable(model: nn.Module, name: str) -> None:
    if not getattr(model, "trainable", True):
        raise ExportError(
            f"model {name!r} is count-based (trainable=False): its scores are a lookup over fitted counts, not a "
            "network, and it is not exported; serve it with `evorec serve` (ONNX/TorchScript export is for neural models)"
        )
    if not isinstance(model, Recommender) or type(model).score is Recommender.score:
        raise ExportError(f"model {name!r} has no score() to export")


def _require_onnx() -> None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'evorec[export]'")


def _trace(module: ScoringModule, inputs: tuple[Tensor, ...], check: tuple[Tensor, ...], name: str) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            # TracerWarnings name every Python int read from a tensor shape; T is fixed by design.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return torch.jit.trace(module, inputs, check_trace=True, check_inputs=[check], strict=True)
    except Exception as exc:  # any tracing failure is "this model cannot be exported"
        raise ExportError(f"model {name!r} cannot be traced to TorchScript: {type(exc).__name__}: {exc}") from exc


def _onnx(module: ScoringModule, inputs: tuple[Tensor, ...], path: Path, name: str) -> None:
    """torch.onnx.export with the dynamo (torch.export) exporter, torch's default since 2.9, and
    a dynamic batch dimension (T stays fixed: positions are learned per slot)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    shapes = {k: {0: batch} for k in INPUT_NAMES}
    noisy = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed" x N
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's FutureWarnings and progress notes
            program = torch.onnx.export(
                module, inputs, dynamo=True, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                dynamic_shapes=shapes, opset_version=ONNX_OPSET, external_data=False, verbose=False,
            )
        program.save(str(path), external_data=False)
    except Exception as exc:  # torch.export / onnxscript raise many types
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))[:2000]  # the exporter colours its messages
        raise ExportError(f"model {name!r} cannot be exported to ONNX: {type(exc).__name__}: {detail}") from exc
    finally:
        noisy.setLevel(level)


class ExportedScorer:
    """An exported model (ONNX through onnxruntime, or TorchScript) behind the ``score(batch)``
    interface the service uses. Histories are left-padded or cut to the exported ``max_len``."""

    trainable = False
    training = False

    def __init__(self, path: str | Path, fmt: str, max_len: int, n_items: int, threads: int | None = None):
        self.path, self.fmt, self.max_len, self._n_items = Path(path), fmt, int(max_len), int(n_items)
        if fmt == "onnx":
            import onnxruntime as ort

            # ONNX Runtime's own pool: as many threads as the torch forward would get (the service's
            # torch_threads, 1 by default; see serving.settings.apply_threads), not ORT's one per core
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(threads or torch.get_num_threads())
            logger.info("ONNX Runtime session for %s: %d intra-op thread(s)", Path(path).name, opts.intra_op_num_threads)
            self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        elif fmt == "torchscript":
            self._jit = torch.jit.load(str(path), map_location="cpu").eval()
        else:
            raise ExportError(f"unknown export format {fmt!r}")

    @property
    def n_items(self) -> int:
        return self._n_items

    def eval(self) -> ExportedScorer:
        return self

    def _fit(self, x: Tensor) -> Tensor:  # (B, T) -> (B, max_len), keeping the latest events
        B, T = x.shape
        if T >= self.max_len:
            return x[:, T - self.max_len :]
        out = torch.zeros((B, self.max_len), dtype=x.dtype)
        out[:, self.max_len - T :] = x
        return out

    def score(self, batch) -> Tensor:  # untyped: SequenceBatch
        xs = [self._fit(getattr(batch, k)) for k in INPUT_NAMES[:-1]] + [batch.query_ts]
        if self.fmt == "onnx":
            return torch.from_numpy(self._sess.run([OUTPUT_NAME], {k: v.numpy() for k, v in zip(INPUT_NAMES, xs)})[0])
        with torch.no_grad():
            return self._jit(*xs)


def run_onnx(path: str | Path, inputs: dict[str, np.ndarray] | tuple[Tensor, ...]) -> np.ndarray:
    """Score with onnxruntime (CPU): (B, n_items) float32. ``inputs`` by name, or in INPUT_NAMES order."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if not isinstance(inputs, dict):
        inputs = {k: (v.numpy() if isinstance(v, Tensor) else np.asarray(v)) for k, v in zip(INPUT_NAMES, inputs)}
    return sess.run([OUTPUT_NAME], inputs)[0]


def export_model(model: nn.Module, fmt: str, out: str | Path, *, max_len: int, meta: dict[str, Any] | None = None,
                 trace_batch: int = 2, check_batch: int = 5) -> ExportResult:
    """Export ``model.score`` for histories of ``max_len`` to ``out`` (ONNX or TorchScript).

    Traced on a batch of ``trace_batch`` rows, then checked on ``check_batch`` other rows (a
    different batch size, so the batch dimension is known to be free): max |exported - eager|
    must stay within ``TOLERANCE``, else :class:`ExportError` and no file is left behind.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if max_len < 1:
        raise ExportError(f"max_len must be at least 1, got {max_len}")
    meta = dict(meta or {})
    name = str(meta.get("model_name") or getattr(model, "name", type(model).__name__))
    _check_exportable(model, name)
    if fmt == "onnx":
        _require_onnx()
    out = Path(out)
    model = model.eval()
    module = ScoringModule(model).eval()
    n_items = int(model.sizes.n_items)
    ic = np.asarray(model.sizes.item_category, np.int64) if model.sizes.item_category else None
    inputs = example_inputs(n_items, max_len, trace_batch, item_category=ic, seed=0)
    check = example_inputs(n_items, max_len, check_batch, item_category=ic, seed=1)
    with torch.no_grad():
        try:
            expected = module(*check).float()
        except Exception as exc:
            raise ExportError(f"model {name!r} cannot score a (B, {max_len}) batch: {type(exc).__name__}: {exc}") from exc
        if tuple(expected.shape) != (check_batch, n_items):
            raise ExportError(f"model {name!r} scores have shape {tuple(expected.shape)}, expected ({check_batch}, {n_items})")

        if fmt == "torchscript":
            traced = _trace(module, inputs, check, name)
            got = traced(*check).float()

            def write(tmp: Path) -> None:
                torch.jit.save(traced, str(tmp))
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, staged_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".staged.onnx", dir=out.parent)
            os.close(fd)
            staged = Path(staged_name)  # exported and checked here, then copied in atomically
            try:
                _onnx(module, inputs, staged, name)
                got = torch.from_numpy(run_onnx(staged, check)).float()
                data = staged.read_bytes()
            finally:
                staged.unlink(missing_ok=True)

            def write(tmp: Path) -> None:
                tmp.write_bytes(data)

    diff = _max_abs_diff(got, expected)
    if not diff <= TOLERANCE:
        raise ExportError(
            f"model {name!r}: the exported {fmt} scores differ from the model's by up to {diff:g} (> {TOLERANCE:g}) on a "
            "check batch; its score() is probably not a pure tensor function of the inputs (Python/numpy values get "
            "frozen into a trace)"
        )
    with atomic_file(out, fsync=True) as tmp:
        write(tmp)
    sidecar = out.with_name(out.name + ".json")
    doc = {
        "format": fmt,
        "model_name": name,
        "max_len": int(max_len),
        "n_items": n_items,
        "inputs": [{"name": k, "dtype": "bool" if k == "mask" else "int64", "shape": ["batch"] if k == "query_ts" else ["batch", max_len]}
                   for k in INPUT_NAMES],
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", n_items], "padding_column": 0},
        "left_padded": True,
        "onnx_opset": ONNX_OPSET if fmt == "onnx" else None,
        "torch_version": torch.__version__,
        "max_abs_diff": diff,
        **{k: v for k, v in meta.items() if k not in {"model_name"}},
    }
    atomic_write_text(sidecar, json.dumps(doc, indent=2, default=str) + "\n", fsync=True)
    logger.info("exported %s (%s, T=%d, %d items) to %s; max |diff| %.2g", name, fmt, max_len, n_items, out, diff)
    return ExportResult(out, sidecar, fmt, name, int(max_len), n_items, diff)


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> ExportResult:
    """Export the best checkpoint of ``run_dir`` (default file: ``RUN_DIR/export/model.onnx|.pt``)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    run = TrainingRun(run_dir)
    if not run.dir.is_dir():
        raise MissingPathError(f"run directory not found: {run.dir}")
    ck = TrainingRun.open(run.dir).checkpoint
    vocabs = ck.vocabs
    meta = {
        "model_name": ck.model_name,
        "run": str(run.dir),
        "checkpoint": str(run.best_checkpoint),
        "vocab_fingerprint": vocabs.sequence_fingerprint,
        "n_categories": len(vocabs.categories) + 1,
        # what a service needs to answer with ids, without the checkpoint (evorec.serving.state)
        "vocab": {"items": list(vocabs.items), "categories": list(vocabs.categories)},
        "item_category": list(ck.sizes.item_category or []),
        "item_popularity": ck.item_popularity,
    }
    model = ck.build_model()
    target = Path(out) if out is not None else run.dir / "export" / f"model{SUFFIX[fmt]}"
    return export_model(model, fmt, target, max_len=ck.max_len, meta=meta)


def result_dict(res: ExportResult) -> dict[str, Any]:
    d = asdict(res)
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}
