"""Full-ranking evaluation speed: users ranked per second over ALL items, Beauty-sized.

A random-embedding model (item table n_items x dim, user state = mean of the history's item
vectors, scores = one matmul per batch) is ranked with ``evorec.evaluation.ranking.rank_targets``
on Beauty-sized data: 22,363 users, 12,101 items, leave-one-out targets, and whole-history
exclusion of seen items. Histories are the real Amazon-Beauty (S3-Rec) sequences when the shared
data folder is there (so history sizes and item overlap are realistic), else synthetic ones with
the same user/item counts and a similar length distribution (5-core, mean ~8.9).

Run from the project root::

    .venv/bin/python benchmarks/eval_speed.py                  # 1 and 2 threads, batch sizes 128..1024
    .venv/bin/python benchmarks/eval_speed.py --threads 2 --batch-sizes 256 --repeats 5

Prints a table and writes benchmarks/results/eval_speed.json. The machine may be shared: the
table reports the best of ``--repeats`` runs and the load average before the run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from evorec.data.batches import EvalSet, eval_batches
from evorec.evaluation.ranking import rank_targets
from evorec.models.base import NEG_INF, DataSizes, ModelConfig, Recommender
from evorec.utils.hardware import machine_record

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT.parent / "shared" / "data" / "amazon_s3rec_seq" / "Beauty.txt"
RESULTS = ROOT / "benchmarks" / "results"
N_USERS, N_ITEMS = 22_363, 12_101


class ArraySequences:
    """In-memory stand-in for ``SequenceData`` (the attributes batching reads)."""

    def __init__(self, lengths: np.ndarray, items: np.ndarray):
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.item = items.astype(np.int32)
        self.category = np.zeros(len(items), np.int32)
        self.behavior = np.ones(len(items), np.int8)
        self.ts = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])


def load_sequences(rng: np.random.Generator) -> tuple[ArraySequences, str]:
    if BEAUTY.exists():
        lengths, items = [], []
        for line in BEAUTY.read_text().splitlines():
            parts = line.split()
            if len(parts) > 1:
                lengths.append(len(parts) - 1)
                items.extend(int(x) for x in parts[1:])
        return ArraySequences(np.array(lengths), np.array(items)), "real Amazon-Beauty (S3-Rec) histories"
    lengths = 5 + rng.geometric(1 / 4.9, N_USERS) - 1  # 5-core, mean ~8.9
    pop = rng.zipf(1.3, N_ITEMS).astype(np.float64)
    items = rng.choice(np.arange(1, N_ITEMS + 1), size=int(lengths.sum()), p=pop / pop.sum())
    return ArraySequences(lengths, items), "synthetic histories (Beauty.txt not found)"


class RandomEmbeddingConfig(ModelConfig):
    dim: int = 64


class RandomEmbedding(Recommender):
    """User state = mean item vector of the history; scores = state @ table.T (one matmul)."""

    trainable = False

    def __init__(self, config: RandomEmbeddingConfig, sizes: DataSizes, seed: int = 0):
        super().__init__(config, sizes)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(sizes.n_items, config.dim, generator=g))

    def encode(self, batch):
        m = batch.mask.unsqueeze(-1).float()  # (B, T, 1)
        return (self.table[batch.items] * m).sum(1) / m.sum(1).clamp(min=1)  # (B, D)

    def score(self, batch):
        s = self.encode(batch) @ self.table.T  # (B, n_items)
        s[:, 0] = NEG_INF
        return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to run")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    seq, source = load_sequences(rng)
    n_items = int(seq.item.max()) + 1
    start = seq.offsets[:-1]
    end = seq.offsets[1:]
    es = EvalSet(  # leave-one-out: the last event is the target, everything before is history
        users=np.arange(len(start), dtype=np.int64),
        hist_start=start.copy(),
        hist_end=end - 1,
        target_item=seq.item[end - 1].astype(np.int64),
        target_ts=seq.ts[end - 1],
        target_pos=end - 1,
    )
    model = RandomEmbedding(RandomEmbeddingConfig(dim=args.dim), DataSizes(n_items=n_items, n_categories=1))
    hist = es.hist_end - es.hist_start
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    machine = machine_record("fp32")
    print(machine.line(), flush=True)
    rows = []

    def best_of(fn) -> tuple[float, float]:
        """Best wall seconds and best process CPU seconds (all threads) over the repeats."""
        walls, cpus = [], []
        for _ in range(args.repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        return min(walls), min(cpus)

    for threads, bs in ((t, b) for t in args.threads for b in args.batch_sizes):
        torch.set_num_threads(threads)
        score_only, _ = best_of(lambda bs=bs: [model.score(b) for _, b in eval_batches(seq, es, args.max_len, bs)])
        for label, kw in (
            ("full, exclude_seen", {"exclude_seen": True}),
            ("full, no exclusion", {"exclude_seen": False}),
            ("sampled-uniform-100", {"exclude_seen": True, "negatives": 100}),
        ):
            if label != "full, exclude_seen" and bs != 256:
                continue
            res = {}

            def run(kw=kw, bs=bs, res=res):
                res["r"] = rank_targets(model, seq, es, max_len=args.max_len, batch_size=bs, ks=(5, 10, 20), **kw)

            sec, cpu = best_of(run)
            rows.append(
                {
                    "protocol": label,
                    "threads": threads,
                    "batch_size": bs,
                    "users": len(es.users),
                    "items": n_items - 1,
                    "seconds": round(sec, 3),
                    "users_per_s": round(len(es.users) / sec),
                    "cpu_seconds": round(cpu, 3),
                    "users_per_cpu_s": round(len(es.users) / cpu),
                    "score_only_s": round(score_only, 3),
                    "HR@10": round(res["r"].aggregate()[f"HR@10{res['r'].suffix}"], 4),
                }
            )
    out = {
        "benchmark": "eval_speed",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": source,
        "users": len(es.users),
        "items": n_items - 1,
        "dim": args.dim,
        "max_len": args.max_len,
        "history_len": {"mean": round(float(hist.mean()), 2), "p50": int(np.median(hist)), "max": int(hist.max())},
        "torch": torch.__version__,
        "machine": machine.as_json(),  # the CPU (model, flags, torch capability, cores); scoring runs fp32
        "load_avg_1m_before": load,
        "repeats": args.repeats,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "eval_speed.json").write_text(json.dumps(out, indent=2))
    print(f"data: {source}; {len(es.users)} users x {n_items - 1} items, dim {args.dim}, "
          f"history mean {out['history_len']['mean']}, load {load}")
    print(machine.line())
    print("| protocol | threads | batch | wall s | users/s | CPU s (all threads) | score only, wall s | HR@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['protocol']} | {r['threads']} | {r['batch_size']} | {r['seconds']} | {r['users_per_s']:,} | "
            f"{r['cpu_seconds']} | {r['score_only_s']} | {r['HR@10']} |"
        )


if __name__ == "__main__":
    main()
