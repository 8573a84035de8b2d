"""How long `evorec data sniff` takes on the event file of every dataset in ../shared/data.

Run from the project root:

    .venv/bin/python benchmarks/sniff.py

Best of 3 per file in one process after a warm-up (the library call: a bounded prefix read, DuckDB's
sniff_csv, every reader's layouts), plus one whole `evorec data sniff` command (start-up and
imports included). Writes benchmarks/results/sniff.json and prints a markdown table.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _child import run_child  # benchmarks/_child.py

from evorec.data.sniff import sniff
from evorec.utils.hardware import machine_record

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


def main() -> None:
    if not SHARED.exists():
        raise SystemExit(f"{SHARED} not found: the benchmark needs ../shared/data")
    sniff(SHARED / FILES[0])  # imports and DuckDB warm
    rows = []
    for rel in FILES:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            r = sniff(SHARED / rel)
            times.append(time.perf_counter() - t0)
        rows.append({"file": rel, "format": r.recognised.format if r.certain else None,
                     "layout": r.recognised.layout if r.certain else r.summary(), "seconds": round(min(times), 4)})
    evorec = str(Path(sys.executable).with_name("evorec"))
    _, _, wall, peak, code = run_child([evorec, "data", "sniff", str(SHARED / FILES[0])])
    machine = machine_record()
    result = {"benchmark": "sniff", "when": datetime.now(timezone.utc).isoformat(), "machine": machine.as_json(),
              "rows": rows, "cli_wall_seconds": round(wall, 3), "cli_exit_code": code}
    (ROOT / "benchmarks" / "results" / "sniff.json").write_text(json.dumps(result, indent=2) + "\n")
    print(machine.line())
    print("\n| file | format | layout | seconds |\n|---|---|---|---:|")
    for r in rows:
        print(f"| `{r['file']}` | {r['format']} | {r['layout']} | {r['seconds']:.3f} |")
    print(f"\nwhole command `evorec data sniff` (start-up included): {wall:.2f} s")


if __name__ == "__main__":
    main()
