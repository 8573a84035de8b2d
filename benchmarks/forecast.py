"""Interest forecasts: the learned forecaster vs every baseline, per horizon, on each dataset.

Runs ``evorec.forecast_pipeline.forecast_backtest`` on the configs in ``configs/forecast/``
(rolling-origin backtest: model trained on windows before the validation cutoff, baselines tuned
and everything calibrated on the validation cutoff, scored at several later test cutoffs; 95%
bootstrap CIs over (user, cutoff) samples). On the simulator it also scores an *oracle* that
forecasts with the planted true interest (the mean of the simulator's daily interest over the
window): no forecaster can expect to beat it, so it bounds the reachable lift.

    .venv/bin/python benchmarks/forecast.py                         # all four datasets
    .venv/bin/python benchmarks/forecast.py --datasets simulated grocery

Prints a table per dataset and writes benchmarks/results/forecast.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evorec.forecast_pipeline import _experiment, forecast_backtest, forecast_data, load_forecast_experiment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = {
    "simulated": ROOT / "configs" / "forecast" / "simulated.yaml",
    "grocery": ROOT / "configs" / "forecast" / "grocery.yaml",
    "ml-latest-small": ROOT / "configs" / "forecast" / "ml-latest-small.yaml",
    "taobao": ROOT / "configs" / "forecast" / "taobao.yaml",
}
SHOWN = ("NDCG@10", "Recall@5", "JSD", "Brier", "ECE", "EmergingRecall@10", "FadingPrecision")


def oracle(cfg) -> dict[str, dict[str, float]]:  # noqa: ANN001
    """NDCG@10 / JSD of forecasting with the simulator's true interest, per horizon."""
    import pyarrow.parquet as pq

    from evorec.data.simulate import sidecar_paths
    from evorec.forecasting.backtest import _resolve, horizon_label
    from evorec.forecasting.metrics import per_user_forecast_metrics
    from evorec.forecasting.windows import build_samples, history_features

    seq = forecast_data(cfg)
    r = _resolve(seq, cfg.forecast)
    test = build_samples(seq, r["tests"], r["horizons"], min_history=cfg.forecast.min_history)
    truth = pq.read_table(sidecar_paths(Path(_experiment(cfg).data.path))["truth"]).to_pandas()
    cats = {c: i + 1 for i, c in enumerate(seq.categories.ids.to_pylist())}
    truth["c"] = truth.category_id.map(cats)
    row_of = {u: i for i, u in enumerate(seq.users.ids.to_pylist())}
    truth["row"] = truth.user_id.map(row_of)
    feats = history_features(seq, test, [30 * 86400])
    out = {}
    for j, h in enumerate(r["horizons"]):
        dist = np.zeros(test.counts[:, j].shape)
        for cut in np.unique(test.cutoff):
            period = 86400 * 7  # truth periods are weeks: those overlapping the window
            w = truth[(truth.period_start > cut - period) & (truth.period_start < cut + h)]
            g = w.groupby(["row", "c"]).prob.mean().reset_index()
            sel = np.flatnonzero(test.cutoff == cut)
            pos = {int(u): s for s, u in zip(sel, test.users[sel])}
            g = g[g.row.isin(pos)]
            dist[g.row.map(pos).to_numpy(), g.c.to_numpy()] = g.prob.to_numpy()
        m = per_user_forecast_metrics(dist, dist, test.counts[:, j], feats.past, feats.last[j] > 0)
        out[horizon_label(h, r["unit"])] = {"NDCG@10": float(np.nanmean(m["NDCG@10"])), "JSD": float(np.nanmean(m["JSD"]))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="overrides for every config, e.g. forecast.bootstrap=200")
    args = ap.parse_args()
    results = {"benchmark": "forecast", "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.machine()} {os.cpu_count()} cpus", "datasets": {}}
    prev = RESULTS / "forecast.json"
    if prev.exists():
        results["datasets"] = json.loads(prev.read_text()).get("datasets", {})
    for name in args.datasets:
        cfg = load_forecast_experiment(CONFIGS[name], args.overrides)
        t0 = time.perf_counter()
        res = forecast_backtest(cfg)
        seconds = time.perf_counter() - t0
        entry = {"config": str(CONFIGS[name].relative_to(ROOT)), "seconds": round(seconds, 1), "protocol": res["protocol"],
                 "unit": res["unit"], "horizons": res["horizons"], "tuned": res.get("tuned")}
        if name == "simulated":
            entry["oracle"] = oracle(cfg)
        results["datasets"][name] = entry
        print(f"\n== {name} ({entry['config']}, {seconds:.0f} s; {res['protocol']['samples']['test']:,} test samples; "
              f"{res['protocol']['confidence_intervals']})")
        for label, e in res["horizons"].items():
            print(f"  horizon {label}: {e['active_samples']:,} samples with events")
            print(f"    {'':<12}" + "".join(f"{c:>19}" for c in SHOWN))
            for who, m in [("model", e["model"])] + list(e["baselines"].items()):
                print(f"    {who:<12}" + "".join(f"{m.get(c, float('nan')):>19.4f}" for c in SHOWN))
            ci = e["model_ci"]["NDCG@10"]
            vs = e["vs_best_baseline"]
            bci = e["baselines_ci"][vs["baseline"]]["NDCG@10"]
            lift = vs["NDCG@10_lift"]
            print(f"    model NDCG@10 95% CI {ci}; best baseline {vs['baseline']} CI {bci}; lift {lift:+.1%}; CIs overlap {vs['cis_overlap']}")
            if "oracle" in entry and label in entry["oracle"]:
                o = entry["oracle"][label]
                best = e["baselines"][vs["baseline"]]["NDCG@10"]
                print(f"    oracle (true interest) NDCG@10 {o['NDCG@10']:.4f}: at most {o['NDCG@10'] / best - 1:+.1%} over the best baseline")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "forecast.json").write_text(json.dumps(results, indent=2, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


if __name__ == "__main__":
    main()
