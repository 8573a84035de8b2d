"""Ingest and sequence-building speed, with DuckDB's raw read_csv and pandas.read_csv of the same
file as the baselines.

Every row runs in its own child process (so peak RSS is that step's own), one after another,
on the same files, in the same run. Run from the project root:

    .venv/bin/python benchmarks/ingest.py                 # >= 10M Taobao rows, 10M simulated events
    .venv/bin/python benchmarks/ingest.py --rows 2000000 --sim-events 2000000   # quicker

Writes benchmarks/results/ingest.json (or --results NAME) and prints a markdown table. The
headline ratio is evorec's ingest speed over DuckDB's ``read_csv`` of the same file into an
in-memory table (same run, one child process each).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from _child import run_child  # benchmarks/_child.py (the script's folder is on sys.path)

from evorec.utils.hardware import machine_record

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TAOBAO = SHARED / "taobao_userbehavior_head84k" / "UserBehavior_head.csv"
WORK = ROOT / "benchmarks" / "scratch" / "ingest"  # only this benchmark's files: others share benchmarks/scratch
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable
EVOREC = str(Path(sys.executable).with_name("evorec"))


def run(label: str, argv: list[str], env: dict | None = None) -> dict:
    """Run one step as a child process; return wall seconds and the child's peak RSS (MB)."""
    out, err, wall, peak_mb, code = run_child(argv, env)
    if code != 0:
        raise SystemExit(f"{label} failed ({code}):\n{err}\n{out}")
    return {"step": label, "seconds": round(wall, 3), "peak_rss_mb": round(peak_mb, 1), "stdout": out.strip()}


def make_taobao(rows: int) -> Path:
    """The real Taobao head file repeated until it has at least ``rows`` rows."""
    data = TAOBAO.read_bytes()
    per = data.count(b"\n")
    reps = -(-rows // per)
    out = WORK / f"taobao_x{reps}.csv"
    if not out.exists() or out.stat().st_size != len(data) * reps:
        tmp = out.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for _ in range(reps):
                f.write(data)
        tmp.replace(out)
    return out


PANDAS = (
    "import pandas as pd, sys; n = 0\n"
    "df = pd.read_csv(sys.argv[1], header=None, names=['u','i','c','b','t'])\n"
    "print(len(df))"
)
# DuckDB's own CSV reader with its defaults (auto-detection), the file loaded into an in-memory table.
DUCKDB = (
    "import duckdb, sys\n"
    "con = duckdb.connect()\n"
    "con.execute('SET enable_progress_bar = false')\n"
    "con.execute('CREATE TABLE t AS SELECT * FROM read_csv(?)', [sys.argv[1]])\n"
    "print(con.execute('SELECT count(*) FROM t').fetchall()[0][0])"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="Taobao rows to ingest (file repeated)")
    ap.add_argument("--sim-events", type=int, default=10_000_000, help="simulated events (approx.)")
    ap.add_argument("--keep", action="store_true", help="keep benchmarks/scratch afterwards")
    ap.add_argument("--results", default="ingest.json", help="file name under benchmarks/results/")
    ap.add_argument("--no-sniffed-row", dest="sniffed_row", action="store_false",
                    help="skip the ingest without --format (for evorec versions without the sniffer)")
    args = ap.parse_args()
    if not TAOBAO.exists():
        raise SystemExit(f"{TAOBAO} not found: the benchmark needs ../shared/data")
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {"EVOREC_SECRET": "benchmark-secret"}
    rows_out = []

    big = make_taobao(args.rows)
    n_rows = big.read_bytes().count(b"\n") if big.stat().st_size < 2**31 else None
    quarter = make_taobao(max(args.rows // 4, 1))
    n_quarter = quarter.read_bytes().count(b"\n")
    for path, n in ((quarter, n_quarter), (big, n_rows)):
        store = WORK / "bench.duckdb"
        store.unlink(missing_ok=True)
        r = run(
            f"evorec ingest taobao CSV ({n:,} rows, pseudonymised)",
            [EVOREC, "data", "ingest", str(path), "--format", "taobao", "--store", str(store), "--dataset", "tb", "--json"],
            env,
        )
        res = json.loads(r.pop("stdout"))
        assert res["rows_ingested"] + res["rows_quarantined"] == res["rows_read"] == n
        r.update(rows=n, rows_per_s=round(n / r["seconds"]), mb=round(path.stat().st_size / 2**20, 1))
        rows_out.append(r)
        if args.sniffed_row and path == big:  # the same file without --format: sniffed first
            store.unlink(missing_ok=True)
            r = run(
                f"evorec ingest same file, no --format (sniffed) ({n:,} rows)",
                [EVOREC, "data", "ingest", str(path), "--store", str(store), "--dataset", "tb", "--json"],
                env,
            )
            res = json.loads(r.pop("stdout"))
            assert res["format"] == "taobao" and res["rows_ingested"] + res["rows_quarantined"] == res["rows_read"] == n
            r.update(rows=n, rows_per_s=round(n / r["seconds"]), mb=round(path.stat().st_size / 2**20, 1))
            rows_out.append(r)
        r = run(f"duckdb read_csv same file ({n:,} rows)", [PY, "-c", DUCKDB, str(path)])
        assert int(r.pop("stdout")) == n
        r.update(rows=n, rows_per_s=round(n / r["seconds"]), mb=round(path.stat().st_size / 2**20, 1))
        rows_out.append(r)
        r = run(f"pandas.read_csv same file ({n:,} rows)", [PY, "-c", PANDAS, str(path)])
        r.pop("stdout")
        r.update(rows=n, rows_per_s=round(n / r["seconds"]), mb=round(path.stat().st_size / 2**20, 1))
        rows_out.append(r)

    # Simulator at ~N events -> store -> cleaned sequences + splits.
    users = max(int(args.sim_events / 285), 10)  # ~285 events per user-year with the default config
    sim = WORK / "sim.parquet"
    r = run(
        f"evorec simulate ({users:,} users x 365 days)",
        [EVOREC, "data", "simulate", "--users", str(users), "--days", "365", "--seed", "1", "--out", str(sim), "--json"],
    )
    n_sim = json.loads(r.pop("stdout"))["events"]
    r.update(rows=n_sim, rows_per_s=round(n_sim / r["seconds"]))
    rows_out.append(r)
    store = WORK / "sim.duckdb"
    store.unlink(missing_ok=True)
    r = run(
        f"evorec ingest simulated Parquet ({n_sim:,} events)",
        [EVOREC, "data", "ingest", str(sim), "--format", "parquet", "--option", f"items={WORK / 'sim.items.parquet'}",
         "--store", str(store), "--dataset", "sim", "--json"],
        env,
    )
    r.pop("stdout")
    r.update(rows=n_sim, rows_per_s=round(n_sim / r["seconds"]))
    rows_out.append(r)
    out_dir = WORK / "sim_prepared"
    shutil.rmtree(out_dir, ignore_errors=True)
    r = run(
        f"evorec prepare simulated -> sequences + LOO split ({n_sim:,} events)",
        [EVOREC, "data", "prepare", "--store", str(store), "--dataset", "sim", "--config",
         str(ROOT / "configs" / "prepare" / "simulated.yaml"), "--out", str(out_dir), "--json"],
    )
    r.pop("stdout")
    r.update(rows=n_sim, rows_per_s=round(n_sim / r["seconds"]))
    rows_out.append(r)

    ingest_rows = [r for r in rows_out if r["step"].startswith("evorec ingest taobao")]
    pandas_rows = [r for r in rows_out if r["step"].startswith("pandas")]
    duck_rows = [r for r in rows_out if r["step"].startswith("duckdb")]
    summary = {
        "ratio_evorec_ingest_over_duckdb_read_csv_speed": round(ingest_rows[-1]["rows_per_s"] / duck_rows[-1]["rows_per_s"], 3),
        "ratio_evorec_ingest_over_pandas_read_csv_speed": round(ingest_rows[-1]["rows_per_s"] / pandas_rows[-1]["rows_per_s"], 2),
        "peak_rss_growth_mb_from_quarter_to_full_file": round(ingest_rows[-1]["peak_rss_mb"] - ingest_rows[0]["peak_rss_mb"], 1),
    }
    machine = machine_record()
    result = {
        "benchmark": "ingest",
        "when": datetime.now(timezone.utc).isoformat(),
        "machine": machine.as_json(),  # the CPU (model, flags, torch capability, cores); no training here
        "protocol": (
            "Taobao UserBehavior head (84,475 real rows) repeated to the row count; evorec ingest = parse + validate "
            "+ quarantine + HMAC pseudonymisation + one-transaction load into DuckDB; pandas = read_csv only (no "
            "validation, no storage); duckdb = read_csv with auto-detection into an in-memory table. "
            "Each step a separate child process; peak RSS of that process."
        ),
        "rows": rows_out,
        "summary": summary,
    }
    (RESULTS / args.results).write_text(json.dumps(result, indent=2) + "\n")
    print(f"protocol: {result['protocol']}")
    print(f"{machine.line()}\n")
    print("| step | rows | seconds | rows/s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for r in rows_out:
        print(f"| {r['step']} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,} | {r['peak_rss_mb']:,.0f} |")
    print(f"\n{json.dumps(summary)}")
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
