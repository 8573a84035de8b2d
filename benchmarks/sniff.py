"""How long `evorec data sniff` takes on the event file of every dataset in ../shared/data.

Run from the project root:

    .venv/bin/python benchmarks/sniff.py
    # the whole command of another source tree in the same run, alternating with this one:
    git archive COMMIT src | tar -x -C benchmarks/scratch/before
    .venv/bin/python benchmarks/sniff.py --before-src benchmarks/scratch/before/src

Per file: the library call (best of 3 in one process after a warm-up: a bounded prefix read,
DuckDB's sniff_csv, every reader's layouts) and the whole `evorec data sniff FILE` command, as a
user runs it (a fresh interpreter: start-up and imports included; best and median wall time of
--runs, and the median CPU time, user + system, which a loaded machine hardly changes).
With --before-src the same command of that tree (PYTHONPATH) runs alternately with this one, so
both see the same load. Writes benchmarks/results/sniff.json (the CPU, torch's CPU capability and
the 1-minute load average before and after) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _child import run_child  # benchmarks/_child.py

from evorec.data.sniff import sniff

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FILES = (
    "taobao_userbehavior_head84k/UserBehavior_head.csv", "tianchi_mobile2014_sample2k/sample_user_behavior.csv",
    "taobao_userbehavior_enriched_tianchi216549/UserBehavior_enriched.csv", "amazon_grocery_rechorus/train.csv",
    "amazon_s3rec_seq/Beauty.txt", "dunnhumby_completejourney_sample/transactions_sample.csv",
    "movielens_100k_recbole/ml-100k.inter", "movielens_latest_small/ratings.csv", "sasrec_bert4rec_benchmarks/SASRec_Video.txt",
    "sasrec_bert4rec_benchmarks/BERT4Rec_beauty.txt", "diginetica_sample_srgnn/sample_train-item-views.csv",
    "yoochoose_100k_sessionrec/yoochoose-clicks-100k_train_full.txt",
)


def _command(path: Path, src: Path | None) -> tuple[float, float, int]:
    """(wall s, CPU s = user + system of the child, exit code) of one `evorec data sniff PATH`.

    The CPU time hardly moves with the load of a shared machine; the wall time does."""
    evorec = str(Path(sys.executable).with_name("evorec"))
    env = {"PYTHONPATH": str(src.resolve())} if src is not None else None
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    _, _, wall, _, code = run_child([evorec, "data", "sniff", str(path)], env=env)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), code


def _stats(name: str, runs: list[tuple[float, float, int]]) -> dict[str, object]:
    walls, cpus = [w for w, _, _ in runs], [c for _, c, _ in runs]
    return {f"{name}_best": round(min(walls), 3), f"{name}_median": round(statistics.median(walls), 3),
            f"{name}_cpu_median": round(statistics.median(cpus), 3), f"{name}_exit_codes": sorted({c for _, _, c in runs})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="whole-command runs per file (best and median reported)")
    ap.add_argument("--before-src", type=Path, default=None, help="another tree's src/ to time the same command of")
    ap.add_argument("--results", default="sniff.json", help="file name under benchmarks/results/")
    args = ap.parse_args()
    if not SHARED.exists():
        raise SystemExit(f"{SHARED} not found: the benchmark needs ../shared/data")
    load_before = os.getloadavg()
    sniff(SHARED / FILES[0])  # imports and DuckDB warm
    _command(SHARED / FILES[0], None)  # page cache warm for the interpreter, the venv and the file
    rows = []
    for rel in FILES:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            r = sniff(SHARED / rel)
            times.append(time.perf_counter() - t0)
        cli: list[tuple[float, float, int]] = []
        before: list[tuple[float, float, int]] = []
        for _ in range(args.runs):  # alternate, so that both trees see the same load
            if args.before_src is not None:
                before.append(_command(SHARED / rel, args.before_src))
            cli.append(_command(SHARED / rel, None))
        row = {"file": rel, "format": r.recognised.format if r.certain else None,
               "layout": r.recognised.layout if r.certain else r.summary(), "seconds": round(min(times), 4),
               **_stats("command", cli)}
        if before:
            row.update(_stats("before", before))
        rows.append(row)
    load_after = os.getloadavg()
    from evorec.utils.hardware import machine_record  # imports torch: only after the timed commands

    machine = machine_record()
    result = {"benchmark": "sniff", "when": datetime.now(timezone.utc).isoformat(), "machine": machine.as_json(),
              "load_before": load_before, "load_after": load_after, "runs": args.runs,
              "before_src": str(args.before_src) if args.before_src else None, "rows": rows}
    (ROOT / "benchmarks" / "results" / args.results).write_text(json.dumps(result, indent=2) + "\n")
    print(machine.line())
    print(f"1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} cores")
    extra = " before: wall best / median s | before: CPU s |" if args.before_src else ""
    print(f"\n| file | format | library s | command: wall best / median s | command: CPU s |{extra}\n"
          f"|---|---|---:|---:|---:|{'---:|---:|' if extra else ''}")
    for r in rows:
        b = f" {r['before_best']:.2f} / {r['before_median']:.2f} | {r['before_cpu_median']:.2f} |" if extra else ""
        print(f"| `{r['file']}` | {r['format']} | {r['seconds']:.3f} | "
              f"{r['command_best']:.2f} / {r['command_median']:.2f} | {r['command_cpu_median']:.2f} |{b}")


if __name__ == "__main__":
    main()
