"""Quality, time to quality, throughput and memory of every model on S3-Rec Amazon Beauty.

Protocol (printed with every result): leave-one-out, full ranking over all 12,101 items, items
already in the user's history excluded (the target kept), histories cut to the last max_len
events: the protocol of the published full-ranking tables (S3-Rec authors' table).

Each model trains in its own child process (`evorec train --config configs/beauty/<model>.yaml
--time-budget S`), then `evorec evaluate` scores the test fold. Run from the project root:

    .venv/bin/python benchmarks/train_beauty.py                      # all models, 300 s each
    .venv/bin/python benchmarks/train_beauty.py --models sasrec --budget 120
    .venv/bin/python benchmarks/train_beauty.py --scaling             # SASRec/HSTU size x max_len table
    .venv/bin/python benchmarks/train_beauty.py --models sasrec --precisions fp32 bf16 --budget 90 --results cpu_matrix.json

Writes benchmarks/results/train_beauty.json (or train_beauty_scaling.json) and prints a table,
each with the CPU it ran on (model, flags, torch's capability, cores) and every run's precision.
The CPU matrix of benchmarks/README.md is this script with ``--set train.precision=fp32|bf16``,
once as is and once under ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2`` (an AVX2-only CPU, emulated).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from _child import run_child  # benchmarks/_child.py (the script's folder is on sys.path)

from evorec.utils.hardware import machine_record

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "scratch" / "train_beauty"
EVOREC = str(Path(sys.executable).with_name("evorec"))

# S3-Rec authors' all-item table on this exact file (HR@10, NDCG@10).
PUBLISHED = {
    "pop": (0.0152, 0.0068),
    "gru4rec": (0.0283, 0.0137),
    "caser": (0.0347, 0.0176),
    "sasrec": (0.0605, 0.0318),
    "bert4rec": (0.0347, 0.0170),
}
BEST_PUBLISHED = ("BSARec", 0.1008, 0.0611)
ALL = ["pop", "itemknn", "markov", "gru4rec", "caser", "sasrec", "bert4rec", "hstu", "dien", "multvae"]
PROTOCOL = "leave-one-out; full ranking over all items; history items excluded (target kept); max_len 50; test fold"


def child(argv: list[str]) -> tuple[str, float, float]:
    out, err, wall, peak_mb, code = run_child(argv, {"EVOREC_SECRET": "benchmark"})
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err[-3000:]}")
    return out, wall, peak_mb


def first_reach(history: list[dict], key: str, threshold: float) -> float | None:
    for h in history:
        if h.get(key) is not None and h[key] >= threshold:
            return h["wall_seconds"]
    return None


def _full_epochs(state: dict) -> int:
    return state["epoch"] - 1 if str(state.get("stopped", "")).startswith("time budget") else state["epoch"]


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 2) if xs else None


def run_model(model: str, budget: float, sets: list[str], tag: str | None = None) -> dict:
    run_dir = WORK / (tag or model)
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = ROOT / "configs" / "beauty" / f"{model}.yaml"
    argv = [EVOREC, "train", "--config", str(cfg), "--out", str(run_dir), "--time-budget", str(budget), "--json"]
    for s in sets:
        argv += ["--set", s]
    out, wall, rss = child(argv)
    state = json.loads(out)
    ev, _, _ = child([EVOREC, "evaluate", str(run_dir), "--json"])
    test = json.loads(ev)
    hist = state["history"]
    eps = [h["events_per_s"] for h in hist if h.get("events_per_s")]
    row = {
        "model": model,
        "tag": tag or model,
        "settings": sets,
        "budget_s": budget,
        "precision": state.get("precision"),  # what the run's train.precision resolved to on this CPU
        "precision_reason": state.get("precision_reason"),
        "torch_threads": state.get("threads"),
        "epochs": state["epoch"],
        "train_seconds": round(state["train_seconds"], 1),
        "wall_seconds": round(state["wall_seconds"], 1),
        "stopped": state["stopped"],
        "best_valid_ndcg10": state["best_metric"],
        "test": {k: test["metrics"][k] for k in ("HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR")},
        "test_ci95": {k: test["ci"][k] for k in ("HR@10", "NDCG@10") if k in test.get("ci", {})},
        "events_per_s": round(sum(eps) / len(eps)) if eps else None,
        "seconds_per_epoch": round(state["train_seconds"] / max(state["epoch"], 1), 2),
        # an epoch cut by the time budget is partial: the median of the whole ones (None if none finished)
        "seconds_per_full_epoch": _median([h["epoch_seconds"] for h in hist if h.get("epoch_seconds")][: _full_epochs(state)]),
        "peak_rss_mb": round(rss, 0),
        "valid_curve": [(round(h["wall_seconds"], 1), h.get("valid/NDCG@10")) for h in hist],
        "protocol": test["protocol"],
    }
    if model in PUBLISHED:
        row["published_hr10"], row["published_ndcg10"] = PUBLISHED[model]
        row["valid_seconds_to_published_ndcg10"] = first_reach(hist, "valid/NDCG@10", PUBLISHED[model][1])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=ALL)
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per model")
    ap.add_argument("--set", action="append", default=[], help="extra --set for every run")
    ap.add_argument("--precisions", nargs="*", default=None,
                    help="train each model once per precision (auto | fp32 | bf16), e.g. --precisions fp32 bf16 (the CPU matrix)")
    ap.add_argument("--scaling", action="store_true", help="SASRec/HSTU: hidden x max_len table instead")
    ap.add_argument("--results", default=None, help="results file name (default train_beauty.json / train_beauty_scaling.json)")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    machine = machine_record()
    print(machine.line(), flush=True)
    rows = []
    if args.scaling:
        for model in ("sasrec", "hstu"):
            for hidden in (64, 128):
                for max_len in (50, 200):
                    sets = [f"model.config.hidden={hidden}", f"model.config.max_len={max_len}", f"train.max_len={max_len}", *args.set]
                    row = run_model(model, args.budget, sets, tag=f"{model}-h{hidden}-L{max_len}")
                    row.update(hidden=hidden, max_len=max_len)
                    rows.append(row)
                    print(json.dumps({k: row[k] for k in ("tag", "epochs", "seconds_per_epoch", "test")}), flush=True)
        name = "train_beauty_scaling.json"
    else:
        for model in args.models:
            for prec in args.precisions or [None]:
                sets = list(args.set) + ([f"train.precision={prec}"] if prec else [])
                row = run_model(model, args.budget, sets, tag=f"{model}-{prec}" if prec else None)
                rows.append(row)
            print(json.dumps({k: row[k] for k in ("model", "precision", "epochs", "train_seconds", "test")}), flush=True)
        name = "train_beauty.json"
    result = {
        "benchmark": "train_beauty" + ("_scaling" if args.scaling else ""),
        "when": datetime.now(timezone.utc).isoformat(),
        "machine": {**machine.as_json(), "load_avg_before": machine.loadavg, "load_avg_after": os.getloadavg()},
        "command": " ".join(x for x in (machine.env_caps, ".venv/bin/python benchmarks/train_beauty.py", *sys.argv[1:]) if x),
        "protocol": PROTOCOL,
        "best_published": BEST_PUBLISHED,
        "rows": rows,
    }
    name = args.results or name
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nprotocol: {PROTOCOL}")
    print(f"{machine.line()}\n")
    print("| model | settings | precision | epochs | train s | s/epoch | events/s | peak RSS MB | test HR@10 [95% CI] | test NDCG@10 [95% CI] "
          "| published HR@10 / NDCG@10 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")

    def with_ci(r: dict, k: str) -> str:
        ci = r["test_ci95"].get(k)
        return f"{r['test'][k]:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")

    for r in rows:
        pub = f"{r['published_hr10']} / {r['published_ndcg10']}" if "published_hr10" in r else "-"
        print(
            f"| {r['tag']} | {' '.join(r['settings']) or '-'} | {r['precision'] or '-'} | {r['epochs']} | {r['train_seconds']} | {r['seconds_per_epoch']} | "
            f"{r['events_per_s'] or '-'} | {r['peak_rss_mb']:.0f} | {with_ci(r, 'HR@10')} | {with_ci(r, 'NDCG@10')} | {pub} |"
        )
    print(f"best published on this file: {BEST_PUBLISHED[0]} HR@10 {BEST_PUBLISHED[1]} / NDCG@10 {BEST_PUBLISHED[2]}")


if __name__ == "__main__":
    main()
