"""Cost of the whole evaluation protocol on a trained run: ranking alone vs everything.

Times, on a run directory's best checkpoint and its own split (default: SASRec on S3-Rec Beauty,
22,363 users x 12,101 items):

- ``rank_targets`` alone (full ranking, seen items excluded, top-k lists kept);
- ``evaluate_model`` without CIs (adds next-category scores, AUC impressions, groups, list metrics);
- ``evaluate_model`` with 1,000 bootstrap resamples for every CI (the default protocol).

Run from the project root (train the run first, e.g. with benchmarks/train_beauty.py or
``evorec train --config configs/beauty/sasrec.yaml --out runs/sasrec``)::

    .venv/bin/python benchmarks/eval_protocol.py --run runs/sasrec

Prints a table and writes benchmarks/results/eval_protocol.json (best of --repeats).
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

from evorec.data.batches import eval_set
from evorec.evaluation.protocols import EvalConfig, TrainingPart, evaluate_model
from evorec.evaluation.ranking import rank_targets
from evorec.experiments.config import ExperimentConfig
from evorec.experiments.runs import TrainingRun
from evorec.experiments.training import prepared_data, train_key
from evorec.utils.hardware import machine_record

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = TrainingRun.open(args.run).checkpoint
    cfg = ExperimentConfig.model_validate(ck.experiment)
    seq, split = prepared_data(cfg)
    model = ck.build_model()
    key = train_key(split)
    training = TrainingPart(end=np.asarray(split.train_ends[key]), key=key, cut=split.train_cuts.get(key))
    es = eval_set(seq, split, cfg.eval.fold)
    load = os.getloadavg()[0]
    machine = machine_record("fp32")
    print(machine.line(), flush=True)
    rows = []
    t_rank = best_of(lambda: rank_targets(model, seq, es, max_len=cfg.train.max_len, batch_size=256, ks=(5, 10, 20)), args.repeats)
    rows.append({"step": "rank_targets (full ranking, seen excluded, top-k kept)", "seconds": round(t_rank, 3)})
    for boot in (0, 1000):
        ecfg = EvalConfig(**{**cfg.eval.model_dump(), "bootstrap": boot})
        t = best_of(lambda ecfg=ecfg: evaluate_model(model, seq, split, [cfg.eval.fold], ecfg, training, max_len=cfg.train.max_len), args.repeats)
        label = "evaluate_model, no CIs (+ categories, AUC, groups, list metrics)" if boot == 0 else "evaluate_model, 1000-resample bootstrap CIs (default)"
        rows.append({"step": label, "seconds": round(t, 3)})
    res = {
        "benchmark": "eval_protocol",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": str(args.run),
        "model": ck.model_name,
        "dataset": cfg.data.dataset,
        "users": int(len(es.users)),
        "items": int(seq.items.size - 1),
        "protocol": f"{split.kind}, full ranking over all items, exclude_seen={cfg.eval.exclude_seen}, fold {cfg.eval.fold}",
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": machine.as_json(),  # the CPU (model, flags, torch capability, cores); evaluation runs fp32
        "load_avg_1m_before": load,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "eval_protocol.json").write_text(json.dumps(res, indent=2))
    print(f"{res['model']} on {res['dataset']}: {res['users']:,} users x {res['items']:,} items; {res['protocol']}; "
          f"{args.threads} threads; load {load:.1f}")
    for r in rows:
        print(f"  {r['step']:<70} {r['seconds']:7.3f} s")


if __name__ == "__main__":
    main()
