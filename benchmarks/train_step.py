"""Cost of one training step with evorec's fast CPU ops vs their plain references, same run.

On the prefix batches of a config (default ``configs/beauty/sasrec-best.yaml``: SASRec, S3-Rec
Beauty, batch 256, bf16 autocast), times:

- the dropout mask alone, ``evorec.ops.dropout.dropout`` vs ``F.dropout``, on a (256, 9, hidden)
  tensor (a typical prefix batch: mean trimmed length ~9);
- the full-softmax CE alone, forward + backward on (256, n_items) bf16 logits,
  ``softmax_cross_entropy`` vs ``F.cross_entropy`` (``reference_softmax_cross_entropy``);
- the same CE on float32 logits (what a float32 run computes);
- a whole training step (forward, backward, clipping, Adam) with the fast ops, and with the
  references patched in for both (``F.dropout`` everywhere, ``F.cross_entropy`` as the loss);
- the training step with the fast ops in bfloat16 autocast against float32 (does bf16 pay on
  this CPU? ``train.precision: auto`` relies on that measurement, see evorec.utils.hardware).

The steps run in ``--precision`` (default ``auto``: what a training run on this CPU would pick).
To see the figures an AVX2-only CPU gives, cap the instruction sets (an emulation on a newer CPU)::

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 .venv/bin/python benchmarks/train_step.py

Every pair alternates in rounds over the same batches, so a noisy machine hits both alike;
each figure is the median of the rounds. Run from the project root::

    .venv/bin/python benchmarks/train_step.py
    .venv/bin/python benchmarks/train_step.py --config configs/beauty/sasrec.yaml --steps 100

Prints a table and the CPU it ran on, and writes both to benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import evorec.ops.attention as attention_ops
import evorec.ops.dropout as dropout_ops
import evorec.training.losses as losses
from evorec.data.batches import TrainView, training_batches
from evorec.experiments.config import load_experiment
from evorec.experiments.training import data_sizes, prepared_data, train_key
from evorec.models.registry import build_model
from evorec.ops.cross_entropy import reference_softmax_cross_entropy, softmax_cross_entropy
from evorec.training.losses import make_loss
from evorec.utils.hardware import choose_precision, machine_record

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def timed(fn, n: int) -> float:
    """Seconds per call of ``fn`` (mean of ``n`` calls after 5 warm-up calls)."""
    for _ in range(5):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


@contextlib.contextmanager
def reference_ops(dropout: bool = True, ce: bool = True):
    """Patch the plain references in for the fast dropout mask and/or the fused CE."""
    saved = (dropout_ops.dropout, attention_ops.dropout, losses.softmax_cross_entropy)

    def plain(x, p, training=True, generator=None):  # untyped: same signature as dropout
        return F.dropout(x, p, training)

    if dropout:
        dropout_ops.dropout = attention_ops.dropout = plain
    if ce:
        losses.softmax_cross_entropy = reference_softmax_cross_entropy
    try:
        yield
    finally:
        dropout_ops.dropout, attention_ops.dropout, losses.softmax_cross_entropy = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/beauty/sasrec-best.yaml")
    ap.add_argument("--steps", type=int, default=60, help="steps per variant per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default="train_step.json")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16: the precision of the step rows")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. train.batch_size=64 (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load0 = os.getloadavg()[0]
    choice = choose_precision(args.precision, "cpu")

    cfg = load_experiment(args.config, args.set)
    seq, split = prepared_data(cfg)
    view = TrainView.from_split(seq, split, train=train_key(split))
    model = build_model(cfg.model.name, cfg.model.config, data_sizes(seq))
    model.train()
    t = cfg.train
    counts = torch.from_numpy(np.bincount(np.asarray(seq.item), minlength=model.n_items)).float()
    loss_fn = make_loss(t.loss, model.n_items, counts)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=t.betas, fused=True)
    batches = list(training_batches(view, t.max_len, t.batch_size, np.random.default_rng(0), mode=t.windows))
    bf16 = choice.bf16

    def step(b, low: bool | None = None) -> None:  # untyped: SequenceBatch
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 if low is None else low):
            loss = model.training_loss(b, loss_fn, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()

    def run_steps(first: int, low: bool | None = None) -> float:
        chunk = batches[first : first + args.steps]
        t0 = time.perf_counter()
        for b in chunk:
            step(b, low)
        return (time.perf_counter() - t0) / len(chunk)

    # Op level, alternating in rounds as the steps below (large fresh buffers make single timings noisy).
    x = torch.randn(256, 9, getattr(model.config, "hidden", 64))
    logits32 = torch.randn(256, model.n_items)
    logits16 = logits32.bfloat16()
    targets = torch.randint(1, model.n_items, (256,))

    def ce(fn, logits) -> None:
        lg = logits.clone().requires_grad_()
        fn(lg, targets).backward()

    keys = ("drop_fast", "drop_ref", "ce_fast", "ce_ref", "ce32_fast", "ce32_ref")
    op_times: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(args.rounds):
        op_times["drop_fast"].append(timed(lambda: dropout_ops.dropout(x, 0.5), 200))
        op_times["drop_ref"].append(timed(lambda: F.dropout(x, 0.5, True), 200))
        op_times["ce_fast"].append(timed(lambda: ce(softmax_cross_entropy, logits16), 30))
        op_times["ce_ref"].append(timed(lambda: ce(reference_softmax_cross_entropy, logits16), 30))
        op_times["ce32_fast"].append(timed(lambda: ce(softmax_cross_entropy, logits32), 30))
        op_times["ce32_ref"].append(timed(lambda: ce(reference_softmax_cross_entropy, logits32), 30))
    drop_fast, drop_ref, ce_fast, ce_ref, ce32_fast, ce32_ref = (statistics.median(op_times[k]) for k in keys)

    # Step level: alternate variants per round over the same batches.
    fast, ref, ref_ce, other = [], [], [], []
    run_steps(0)  # warm-up
    run_steps(0, not bf16)
    for r in range(args.rounds):
        first = (r * args.steps) % max(1, len(batches) - args.steps)
        fast.append(run_steps(first))
        with reference_ops():
            ref.append(run_steps(first))
        with reference_ops(dropout=False):
            ref_ce.append(run_steps(first))
        other.append(run_steps(first, not bf16))  # the other precision, fast ops
    step_fast, step_ref, step_ref_ce, step_other = (statistics.median(v) for v in (fast, ref, ref_ce, other))
    step_bf16, step_fp32 = (step_fast, step_other) if bf16 else (step_other, step_fast)

    prec = choice.precision
    rows = [
        ("dropout mask (256, 9, D), p=0.5", drop_fast, drop_ref),
        (f"full-softmax CE fwd+bwd (256, {model.n_items}) bf16", ce_fast, ce_ref),
        (f"full-softmax CE fwd+bwd (256, {model.n_items}) fp32", ce32_fast, ce32_ref),
        (f"training step {prec} ({cfg.model.name}, {t.windows}, batch {t.batch_size}); reference: F.cross_entropy only", step_fast, step_ref_ce),
        (f"training step {prec} ({cfg.model.name}, {t.windows}, batch {t.batch_size}); reference: both", step_fast, step_ref),
        ("training step, fast ops: bf16 autocast (evorec column) vs fp32 (reference column)", step_bf16, step_fp32),
    ]
    machine = machine_record(prec)
    protocol = (
        f"{args.config}: {cfg.model.name} on {cfg.data.dataset or cfg.data.path}, train.windows={t.windows}, "
        f"batch {t.batch_size}, precision {prec} ({args.precision}: {choice.reason}); {args.threads} torch threads; "
        f"step = forward + backward + clip + AdamW; reference = F.dropout everywhere and F.cross_entropy as the loss; "
        f"median of {args.rounds} alternating rounds of {args.steps} steps"
    )
    print(machine.line())
    print(f"protocol: {protocol}")
    print("| what | evorec ms | reference ms | reference / evorec |")
    print("|---|---:|---:|---:|")
    for name, a, b in rows:
        print(f"| {name} | {a * 1e3:.2f} | {b * 1e3:.2f} | {b / a:.2f}x |")
    out = {
        "benchmark": "train_step",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": (f"{machine.env_caps + ' ' if machine.env_caps else ''}.venv/bin/python benchmarks/train_step.py "
                    f"--config {args.config} --steps {args.steps} --rounds {args.rounds} --threads {args.threads} "
                    f"--precision {args.precision} --results {args.results}"
                    + "".join(f" --set {s}" for s in args.set)),
        "protocol": protocol,
        "precision": {"requested": choice.requested, "chosen": choice.precision, "reason": choice.reason},
        "machine": {**machine.as_json(), "loadavg_before": load0, "loadavg_after": os.getloadavg()[0]},
        "rows": [{"what": n, "evorec_ms": a * 1e3, "reference_ms": b * 1e3, "ratio": b / a} for n, a, b in rows],
        "step_rounds_ms": {"evorec": [v * 1e3 for v in fast], "reference": [v * 1e3 for v in ref],
                           "reference_ce_only": [v * 1e3 for v in ref_ce], "other_precision": [v * 1e3 for v in other]},
        "op_rounds_ms": {k: [v * 1e3 for v in vs] for k, vs in op_times.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / args.results
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, path)
    print(f"-> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
