"""evorec SASRec vs RecBole 1.2.1 SASRec on S3-Rec Amazon Beauty: time to the same validation NDCG@10.

Both train SASRec with the hyperparameters of ``configs/beauty/sasrec.yaml`` (or ``--config``; read
from it, not copied: hidden, layers, heads, dropout, attention dropout, FFN width, activation, max length 50,
CE loss over all items, batch size, learning rate, weight decay, gradient clipping, seed) on the
same leave-one-out split, and are validated after every epoch by full ranking over all items with
each user's history items excluded. Each runs in its own child process, one after the other
(evorec first), with a wall-clock budget and its peak RSS measured (``os.wait4``). Run from the
project root:

    .venv/bin/python benchmarks/peer_recbole.py                                  # 300 s evorec, 1200 s RecBole
    .venv/bin/python benchmarks/peer_recbole.py --evorec-budget 60 --only evorec  # quick check of one side
    .venv/bin/python benchmarks/peer_recbole.py --config configs/beauty/sasrec-best.yaml --results peer_recbole_best.json

RecBole lives in its own virtual environment, ``.peers/recbole`` (git-ignored); when
``.peers/recbole/bin/python`` is missing the script creates it (see ``shared/peers/recbole.md``;
the install recipe below keeps the CPU torch 2.13.0 wheel, which the documented one silently
replaces). RecBole is driven by this same file in runner mode (``--recbole-runner``, run by the
peer's interpreter): a subclassed ``recbole.trainer.Trainer`` that

* stops training once the budget (wall-clock seconds since training start, validations included)
  is spent, validates the partly trained epoch, and then tests the best checkpoint;
* timestamps every validation (seconds since training start, after the validation pass);
* excludes each user's whole history before the target from the ranking, as evorec does. Stock
  RecBole 1.2.1 does *not* do that for sequential models (its ``FullSortEvalDataLoader`` passes no
  history index when ``MODEL_TYPE`` is sequential; only the padding item is masked), so the stock
  numbers (no exclusion) are recorded beside them as ``valid_stock/...``.

Writes benchmarks/results/peer_recbole.json (or ``--results``; with ``--only``: benchmarks/scratch/peer_recbole/partial.json)
and prints the protocol, a markdown table and, for every quality RecBole reached (each new best
validation), the seconds each side took to first reach it and their ratio. Intermediate files: benchmarks/scratch/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT.parent / "shared" / "data" / "amazon_s3rec_seq" / "Beauty.txt"
CONFIG = ROOT / "configs" / "beauty" / "sasrec.yaml"
WORK = ROOT / "benchmarks" / "scratch"
RUN_WORK = WORK / "peer_recbole"
RB_DATA = WORK / "recbole_data"
RESULTS = ROOT / "benchmarks" / "results"
PEER = ROOT / ".peers" / "recbole"
PEER_PY = PEER / "bin" / "python"
THREADS = 2

# The recipe of shared/peers/recbole.md, with one fix: there `pip install recbole ... 'setuptools<70'`
# makes pip backtrack torch to 2.12.1 with ~4 GB of CUDA wheels (torch 2.13 wants setuptools>=77),
# so torch is pinned in the second step and setuptools<70 (ray imports pkg_resources) comes last.
PEER_INSTALL = [
    ["pip", "install", "torch==2.13.0"],
    ["pip", "install", "recbole==1.2.1", "numpy==1.26.4", "pandas==2.1.4", "scipy==1.11.4", "torch==2.13.0"],
    ["pip", "install", "--no-deps", "setuptools<70"],
]


# -------------------------------------------------------------------------------------------------
# Child processes


def run_child(label: str, argv: list[str], log: Path, *, cwd: Path | None = None, env: dict | None = None,
              kill_after: float | None = None) -> dict:
    """Run ``argv`` with stdout+stderr to ``log``; wall seconds and the child's peak RSS (MB).

    ``kill_after``: SIGKILL the child after that many seconds (a safety net; what it wrote stays)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    killed = False
    loads, next_sample = [], t0
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=f, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if now >= next_sample:  # the machine is shared: keep a trace of its load
                loads.append(os.getloadavg()[0])
                next_sample = now + 10
            if kill_after is not None and now - t0 > kill_after and not killed:
                proc.kill()
                killed = True
            time.sleep(0.5)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    return {"step": label, "exit_code": code, "killed_after_s": kill_after if killed else None,
            "process_seconds": round(wall, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "loadavg_1min_during": {"mean": round(sum(loads) / max(len(loads), 1), 2), "max": round(max(loads, default=0), 2)},
            "log": str(log.relative_to(ROOT))}


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -------------------------------------------------------------------------------------------------
# Setup and data


def ensure_peer() -> str:
    """Create .peers/recbole if missing; return RecBole's and torch's versions (fails clearly)."""
    log = WORK / "peer_recbole_install.log"
    if not PEER_PY.exists():
        print(f"setting up RecBole 1.2.1 in {PEER} (log: {log}) ...", flush=True)
        WORK.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            steps = [["python3", "-m", "venv", str(PEER)]]
            steps += [[str(PEER / "bin" / s[0]), *s[1:]] for s in PEER_INSTALL]
            for cmd in steps:
                f.write(f"$ {' '.join(cmd)}\n")
                f.flush()
                if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode != 0:
                    shutil.rmtree(PEER, ignore_errors=True)  # half-made: the next run starts clean
                    raise SystemExit(
                        f"could not set up the RecBole peer ({' '.join(cmd)} failed); see {log}.\n"
                        f"Fix the cause (it needs PyPI and python3-venv) and run again, or install it by "
                        f"hand as in shared/peers/recbole.md."
                    )
    probe = subprocess.run(
        [str(PEER_PY), "-c", ("import recbole, torch, numpy; from recbole.model.sequential_recommender import SASRec; "
                              "print(recbole.__version__, torch.__version__, numpy.__version__)")],
        capture_output=True, text=True, check=False,
    )
    if probe.returncode != 0:
        raise SystemExit(f"{PEER_PY} cannot import RecBole:\n{probe.stderr[-3000:]}\n"
                         f"Remove {PEER} and run again to reinstall it (log: {log}).")
    versions = probe.stdout.strip()
    if not versions.startswith("1.2.1 "):
        raise SystemExit(f"{PEER} has RecBole/torch/numpy {versions}, not RecBole 1.2.1: remove {PEER} and run again.")
    return versions


def write_atomic_files() -> dict:
    """Beauty.txt (``user item item ...`` per line) -> RecBole's beauty.inter; timestamp = position."""
    out_dir = RB_DATA / "beauty"
    out_dir.mkdir(parents=True, exist_ok=True)
    users = events = 0
    items: set[str] = set()
    tmp = out_dir / "beauty.inter.tmp"
    with open(BEAUTY) as src, open(tmp, "w") as dst:
        dst.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in src:
            parts = line.split()
            if len(parts) < 2:
                continue
            users += 1
            for pos, item in enumerate(parts[1:], start=1):
                dst.write(f"{parts[0]}\t{item}\t{pos}\n")
                items.add(item)
                events += 1
    tmp.replace(out_dir / "beauty.inter")
    return {"users": users, "items": len(items), "events": events, "path": str((out_dir / "beauty.inter").relative_to(ROOT))}


def shared_hyperparameters(config: Path = CONFIG) -> dict:
    """The effective SASRec + training settings of ``config`` (defaults resolved)."""
    from evorec.experiments.config import load_experiment
    from evorec.models.sasrec import SASRecConfig
    from evorec.utils.hardware import choose_precision

    cfg = load_experiment(config, [])
    m = SASRecConfig(**cfg.model.config)
    t = cfg.train
    assert cfg.model.name == "sasrec" and t.loss.kind == "ce", "the peer run mirrors SASRec with full CE loss"
    assert m.side.time == "none" and not m.side.use_category and not m.side.use_behavior, "RecBole SASRec: items only"
    return {
        "hidden": m.hidden, "layers": m.layers, "heads": m.heads, "dropout": m.dropout, "attn_dropout": m.attn_dropout,
        "ffn": m.ffn_mult * m.hidden, "activation": m.activation, "norm": m.norm, "max_len": m.max_len,
        "init_std": m.init_std, "ffn_dropout": m.dropout if m.ffn_dropout is None else m.ffn_dropout,
        "train_max_len": t.max_len, "batch_size": t.batch_size, "lr": t.lr, "weight_decay": t.weight_decay,
        "grad_clip": t.grad_clip, "betas": list(t.betas), "schedule": t.schedule, "epochs": t.epochs,
        "patience": t.patience, "seed": t.seed, "exclude_seen": t.exclude_seen, "loss": "ce", "windows": t.windows,
        "config": str(Path(config).resolve().relative_to(ROOT)),
        # train.precision as configured and what it resolves to on this CPU (evorec.utils.hardware)
        "precision": t.precision, "precision_here": choose_precision(t.precision, "cpu").precision,
    }


def recbole_config(hp: dict, budget: float) -> dict:
    return {
        "model": "SASRec", "dataset": "beauty", "data_path": str(RB_DATA),
        "checkpoint_dir": str(RUN_WORK / "recbole_run" / "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": hp["max_len"],
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["NDCG", "Hit"], "topk": [10], "valid_metric": "NDCG@10", "metric_decimal_place": 8,
        "n_layers": hp["layers"], "n_heads": hp["heads"], "hidden_size": hp["hidden"], "inner_size": hp["ffn"],
        "hidden_dropout_prob": hp["dropout"], "attn_dropout_prob": hp["attn_dropout"], "hidden_act": hp["activation"],
        "loss_type": "CE", "train_neg_sample_args": None,
        "train_batch_size": hp["batch_size"], "eval_batch_size": 2048, "learner": "adam",
        "learning_rate": hp["lr"], "weight_decay": hp["weight_decay"],
        "clip_grad_norm": {"max_norm": hp["grad_clip"]} if hp["grad_clip"] else None,
        "epochs": 100_000, "eval_step": 1, "stopping_step": 100_000,
        "use_gpu": False, "worker": 0, "seed": hp["seed"], "reproducibility": True, "show_progress": False,
        "log_wandb": False, "save_dataset": False, "save_dataloaders": False,
        # read by the runner, not by RecBole
        "_budget_s": budget, "_threads": THREADS, "_records": str(RUN_WORK / "recbole_run" / "validations.jsonl"),
        "_result": str(RUN_WORK / "recbole_run" / "result.json"),
    }


# -------------------------------------------------------------------------------------------------
# RecBole runner (runs under .peers/recbole/bin/python)


def recbole_runner(config_path: str) -> None:  # pragma: no cover - needs the peer environment
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import logging

    import numpy as np
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    t_process = time.perf_counter()
    cfg = json.loads(Path(config_path).read_text())
    budget, records_path, result_path = cfg.pop("_budget_s"), Path(cfg.pop("_records")), Path(cfg.pop("_result"))
    threads = cfg.pop("_threads")
    torch.set_num_threads(threads)
    records_path.parent.mkdir(parents=True, exist_ok=True)
    records_path.write_text("")

    config = Config(model="SASRec", dataset="beauty", config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = logging.getLogger()
    t_data = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    data_seconds = time.perf_counter() - t_data
    uid_f, iid_f, ts_f = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"], config["TIME_FIELD"]

    # Each user's whole sequence (internal ids, in order) to exclude seen items as evorec does. Read
    # from the atomic file: dataset.inter_feat is already augmented (one row per target, so it lacks
    # each user's first item).
    cols = np.loadtxt(Path(cfg["data_path"]) / "beauty" / "beauty.inter", dtype=str, delimiter="\t", skiprows=1)
    u = dataset.token2id(uid_f, cols[:, 0])
    it = dataset.token2id(iid_f, cols[:, 1])
    ts = cols[:, 2].astype(np.float64)
    assert len(u) == len(dataset.inter_feat) + dataset.user_num - 1, "every user's first item is in the history table"
    order = np.lexsort((ts, u))
    u, it, ts = u[order], it[order], ts[order]
    cuts = np.flatnonzero(np.diff(u)) + 1
    hist = {int(uu[0]): (ii, tt) for uu, ii, tt in zip(np.split(u, cuts), np.split(it, cuts), np.split(ts, cuts))}

    class BudgetReached(Exception):
        pass

    class BudgetTrainer(Trainer):
        """RecBole's Trainer + a wall-clock budget, timestamped validations, seen-item exclusion."""

        def __init__(self, config, model):
            super().__init__(config, model)
            self.t0 = None
            self.out_of_time = False
            self.epoch = 0
            self.train_seconds = 0.0
            self.train_samples = 0
            self.epoch_samples = 0
            self.epoch_seconds = 0.0
            self.stock = [0.0, 0.0, 0]
            self.records = []

        def fit(self, train_data, valid_data=None, **kw):
            self.t0 = time.perf_counter()
            try:
                return super().fit(train_data, valid_data, callback_fn=self._after_validation, **kw)
            except BudgetReached:
                logger.info("budget of %.0fs spent: stopping after epoch %d", budget, self.epoch)
                return self.best_valid_score, self.best_valid_result

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            t = time.perf_counter()
            self.epoch = epoch_idx + 1
            self.epoch_samples = 0

            def limited():
                for inter in train_data:
                    if time.perf_counter() - self.t0 >= budget:
                        self.out_of_time = True
                        return
                    self.epoch_samples += len(inter)
                    yield inter

            loss = super()._train_epoch(limited(), epoch_idx, loss_func, show_progress=False)
            self.epoch_seconds = time.perf_counter() - t
            self.train_seconds += self.epoch_seconds
            self.train_samples += self.epoch_samples
            return 0.0 if loss is None else loss

        def _after_validation(self, epoch_idx, valid_score):
            if self.out_of_time or time.perf_counter() - self.t0 >= budget:
                raise BudgetReached

        def _valid_epoch(self, valid_data, show_progress=False):
            t = time.perf_counter()
            score, result = super()._valid_epoch(valid_data, show_progress=False)
            now = time.perf_counter()
            rec = {
                "epoch": self.epoch, "partial_epoch": self.out_of_time, "wall_seconds": now - self.t0,
                "train_seconds": self.train_seconds, "eval_seconds": now - t, "epoch_seconds": self.epoch_seconds,
                "epoch_train_samples": self.epoch_samples, "train_samples": self.train_samples,
                "samples_per_s": self.epoch_samples / max(self.epoch_seconds, 1e-9),
                "valid/NDCG@10": float(result["ndcg@10"]), "valid/HR@10": float(result["hit@10"]),
                "valid_stock/NDCG@10": float(result["stock_ndcg@10"]), "valid_stock/HR@10": float(result["stock_hit@10"]),
            }
            self.records.append(rec)
            with open(records_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            return score, result

        def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
            self.stock = [0.0, 0.0, 0]
            result = super().evaluate(eval_data, load_best_model, model_file, show_progress=False)
            if result is not None and self.stock[2]:
                result["stock_ndcg@10"] = self.stock[0] / self.stock[2]
                result["stock_hit@10"] = self.stock[1] / self.stock[2]
            return result

        @torch.no_grad()
        def _full_sort_batch_eval(self, batched_data):
            interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
            # Stock RecBole 1.2.1 (sequential): only the padding item is masked. Metrics of that, too.
            target = scores[positive_u, positive_i]
            rank = (scores > target[:, None]).sum(1)
            hit = rank < 10
            self.stock[0] += float(torch.where(hit, 1.0 / torch.log2(rank.double() + 2), torch.zeros((), dtype=torch.float64)).sum())
            self.stock[1] += float(hit.sum())
            self.stock[2] += len(rank)
            # evorec's protocol: every item of the user's whole history before the target is removed
            # from the candidates, except the target itself.
            users = interaction[uid_f].cpu().numpy()
            times = interaction[ts_f].cpu().numpy()
            rows, cols = [], []
            for r, (uu, tt) in enumerate(zip(users, times)):
                items, stamps = hist[int(uu)]
                h = items[stamps < tt]
                rows.append(np.full(len(h), r))
                cols.append(h)
            # the model's own input (item_id_list, at most MAX_ITEM_LIST_LENGTH) is the tail of that history
            n_hist = np.array([len(c) for c in cols])
            seq_len = interaction[self.config["ITEM_LIST_LENGTH_FIELD"]].cpu().numpy()
            assert (np.minimum(n_hist, self.config["MAX_ITEM_LIST_LENGTH"]) == seq_len).all(), "history table mismatch"
            rows_t = torch.from_numpy(np.concatenate(rows)).long()
            cols_t = torch.from_numpy(np.concatenate(cols)).long()
            keep = cols_t != positive_i[positive_u[rows_t]].cpu()
            scores[rows_t[keep].to(scores.device), cols_t[keep].to(scores.device)] = -math.inf
            return interaction, scores, positive_u, positive_i

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    logger.info(model)
    trainer = BudgetTrainer(config, model)
    torch.set_num_threads(threads)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    t_test = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    test_seconds = time.perf_counter() - t_test
    best = max(trainer.records, key=lambda r: r["valid/NDCG@10"]) if trainer.records else None
    result = {
        "versions": {"recbole": __import__("recbole").__version__, "torch": torch.__version__, "numpy": np.__version__},
        "threads": torch.get_num_threads(),
        "dataset": {"users": dataset.user_num - 1, "items": dataset.item_num - 1, "interactions": len(dataset.inter_feat),
                    "train_samples_per_epoch": len(train_data._dataset), "valid_users": len(valid_data._dataset),
                    "test_users": len(test_data._dataset)},
        "data_prep_seconds": data_seconds, "budget_s": budget, "history": trainer.records,
        "best_epoch": best["epoch"] if best else None,
        "test": {"NDCG@10": float(test["ndcg@10"]), "HR@10": float(test["hit@10"]),
                 "stock_NDCG@10": float(test["stock_ndcg@10"]), "stock_HR@10": float(test["stock_hit@10"])},
        "test_eval_seconds": test_seconds, "process_seconds": time.perf_counter() - t_process,
    }
    result_path.write_text(json.dumps(result, indent=2) + "\n")


# -------------------------------------------------------------------------------------------------
# The two sides


def run_evorec(budget: float, config: Path = CONFIG) -> dict:
    evorec = str(Path(sys.executable).with_name("evorec"))
    out = RUN_WORK / "evorec_run"
    if out.exists():
        shutil.rmtree(out)
    argv = [evorec, "train", "--config", str(config), "--out", str(out), "--time-budget", str(budget),
            "--set", f"train.threads={THREADS}", "--json"]
    print(f"[{datetime.now():%H:%M:%S}] evorec train ({budget:g}s budget) ...", flush=True)
    r = run_child("evorec SASRec", argv, RUN_WORK / "evorec_train.log", cwd=ROOT)
    if r["exit_code"] != 0:
        raise SystemExit(f"evorec train failed ({r['exit_code']}):\n{tail(RUN_WORK / 'evorec_train.log')}")
    hist = json.loads((out / "history.json").read_text())
    ev = subprocess.run([evorec, "evaluate", str(out), "--json"], capture_output=True, text=True, cwd=ROOT, check=False)
    if ev.returncode != 0:
        raise SystemExit(f"evorec evaluate failed:\n{ev.stderr[-3000:]}")
    test = json.loads(ev.stdout)
    records = []
    for h in hist["history"]:
        if "valid/NDCG@10" not in h:
            continue
        records.append({
            "epoch": h["epoch"], "partial_epoch": bool(hist["stopped"].startswith("time budget")) and h is hist["history"][-1],
            "wall_seconds": h["wall_seconds"], "train_seconds": h["train_seconds"], "eval_seconds": h.get("eval_seconds"),
            "epoch_seconds": h.get("epoch_seconds"), "events_per_s": h.get("events_per_s"),
            "valid/NDCG@10": h["valid/NDCG@10"], "valid/HR@10": h["valid/HR@10"],
        })
    train_s = sum(h.get("epoch_seconds", 0.0) for h in hist["history"])
    events = sum(h.get("events_per_s", 0.0) * h.get("epoch_seconds", 0.0) for h in hist["history"])
    return {**r, "history": records, "stopped": hist["stopped"], "epochs": hist["epoch"],
            "precision": hist.get("precision"), "precision_reason": hist.get("precision_reason"),
            "train_seconds": train_s, "train_events": round(events), "targets_per_s": events / max(train_s, 1e-9),
            "test": {k: test["metrics"][k] for k in ("NDCG@10", "HR@10")}, "test_protocol": test.get("protocol")}


def run_recbole(hp: dict, budget: float) -> dict:
    rb_dir = RUN_WORK / "recbole_run"
    rb_dir.mkdir(parents=True, exist_ok=True)
    (rb_dir / "result.json").unlink(missing_ok=True)
    cfg_path = rb_dir / "config.json"
    cfg_path.write_text(json.dumps(recbole_config(hp, budget), indent=2))
    print(f"[{datetime.now():%H:%M:%S}] RecBole SASRec ({budget:g}s budget; log {rb_dir.relative_to(ROOT)}/recbole.log) ...", flush=True)
    r = run_child(
        "RecBole 1.2.1 SASRec", [str(PEER_PY), str(Path(__file__).resolve()), "--recbole-runner", str(cfg_path)],
        rb_dir / "recbole.log", cwd=rb_dir,
        env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)},
        kill_after=budget + 1200,  # data prep + the last epoch's validation + test take minutes, not 20
    )
    res_path = rb_dir / "result.json"
    if res_path.exists():
        res = json.loads(res_path.read_text())
    else:  # killed or crashed: keep what it timestamped
        recs = [json.loads(x) for x in (rb_dir / "validations.jsonl").read_text().splitlines() if x.strip()] \
            if (rb_dir / "validations.jsonl").exists() else []
        if not recs:
            raise SystemExit(f"RecBole failed ({r['exit_code']}) before its first validation:\n{tail(rb_dir / 'recbole.log')}")
        print(f"warning: RecBole ended with {r['exit_code']} before testing; using its {len(recs)} validations", flush=True)
        res = {"history": recs, "test": None}
    hist = res["history"]
    train_s = sum(h["epoch_seconds"] for h in hist)
    samples = sum(h["epoch_train_samples"] for h in hist)
    return {**r, **res, "train_seconds": train_s, "train_events": samples, "targets_per_s": samples / max(train_s, 1e-9)}


# -------------------------------------------------------------------------------------------------
# Report


def first_reaching(history: list[dict], target: float) -> dict | None:
    return next((h for h in history if h["valid/NDCG@10"] >= target), None)


def compare(ev: dict, rb: dict) -> dict:
    rb_best = max(rb["history"], key=lambda h: h["valid/NDCG@10"])
    target = rb_best["valid/NDCG@10"]
    rb_hit = first_reaching(rb["history"], target)
    ev_hit = first_reaching(ev["history"], target)
    ev_best = max(h["valid/NDCG@10"] for h in ev["history"])
    rb_reach_ev = first_reaching(rb["history"], ev_best)
    out = {
        "target_valid_NDCG@10": target, "target": "best validation NDCG@10 RecBole reached within its budget",
        "recbole_seconds": rb_hit["wall_seconds"], "recbole_epoch": rb_hit["epoch"],
        "evorec_reached": ev_hit is not None,
        "evorec_seconds": ev_hit["wall_seconds"] if ev_hit else None,
        "evorec_epoch": ev_hit["epoch"] if ev_hit else None,
        "evorec_value_then": ev_hit["valid/NDCG@10"] if ev_hit else None,
        "ratio_recbole_over_evorec_seconds": rb_hit["wall_seconds"] / ev_hit["wall_seconds"] if ev_hit else None,
        "evorec_best_valid_NDCG@10": ev_best,
        "evorec_seconds_to_its_best": first_reaching(ev["history"], ev_best)["wall_seconds"],
        "recbole_reached_evorec_best": rb_reach_ev is not None,
        "recbole_seconds_to_evorec_best": rb_reach_ev["wall_seconds"] if rb_reach_ev else None,
        "recbole_seconds_to_evorec_best_note": "RecBole validates once per epoch: an upper bound on when it got there",
        "throughput_ratio_evorec_over_recbole": ev["targets_per_s"] / max(rb["targets_per_s"], 1e-9),
    }
    # Every quality RecBole reached (each new best validation): seconds for each side to first get there.
    levels, best = [], -1.0
    for h in rb["history"]:
        if h["valid/NDCG@10"] > best:
            best = h["valid/NDCG@10"]
            e = first_reaching(ev["history"], best)
            levels.append({"valid_NDCG@10": best, "recbole_seconds": h["wall_seconds"], "recbole_epoch": h["epoch"],
                           "evorec_seconds": e["wall_seconds"] if e else None,
                           "ratio_recbole_over_evorec_seconds": h["wall_seconds"] / e["wall_seconds"] if e else None})
    out["levels"] = levels
    if ev_hit is None:
        out["note"] = (f"evorec did not reach {target:.4f} within its {ev['budget_s']:g}s budget "
                       f"(best {ev_best:.4f}); no ratio")
    return out


def protocol(hp: dict) -> dict:
    """What both sides did, with the shared hyperparameters and the remaining differences from ``hp``."""
    windows = hp["windows"]
    training = {
        "last": "one window per user (the last max_len training events), next-item CE at every position",
        "all": "every consecutive window of max_len events of each user's training history, next-item CE at every position",
        "prefixes": "one sample per training prefix (the max_len events before each training target), CE on its last position only",
    }[windows]
    ours = []
    if hp["norm"] == "pre":
        ours.append("pre-LayerNorm blocks + final LayerNorm (RecBole: post-LayerNorm, LayerNorm after the embedding)")
    if tuple(hp["betas"]) != (0.9, 0.999):
        ours.append(f"AdamW betas {tuple(hp['betas'])} (RecBole: Adam (0.9, 0.999))")
    if hp["schedule"] != "constant":
        ours.append(f"{hp['schedule']} lr schedule over {hp['epochs']} epochs (RecBole: constant lr)")
    differences = "; ".join(ours + [
        "positions right-aligned in evorec, left-aligned in RecBole (input padded to max_len)",
        (f"weights: evorec N(0, {hp['init_std']:g}) for items, positions and Linear layers, RecBole N(0, 0.02); LayerNorm eps 1e-5 (RecBole: 1e-12)"
         if hp.get("init_std") is not None else
         "weights: evorec item table N(0, 1/hidden) and PyTorch's default Linear init; RecBole N(0, 0.02) everywhere, LayerNorm eps 1e-12"),
        *([f"evorec also drops out inside the FFN (p={hp['ffn_dropout']:g}; RecBole: none)"] if hp.get("ffn_dropout") else []),
        (f"evorec trains with train.precision={hp['precision']}, here {hp['precision_here']}"
         + (" (bf16 autocast matmuls)" if hp["precision_here"] == "bf16" else "")
         + " (validation and test in fp32); RecBole in fp32"),
    ])
    shared = (
        f"hidden {hp['hidden']}, FFN {hp['ffn']}, {hp['layers']} layers, {hp['heads']} heads, {hp['activation']}, "
        f"dropout {hp['dropout']}, attention dropout {hp['attn_dropout']}, max length {hp['max_len']}, full CE, batch "
        f"{hp['batch_size']}, lr {hp['lr']:g}, weight decay {hp['weight_decay']:g}, gradient norm clipped at {hp['grad_clip']}, "
        f"seed {hp['seed']} (from {hp['config']})"
    )
    return {**PROTOCOL, "evorec_training": training, "shared_hyperparameters": shared, "differences_that_remain": differences}


PROTOCOL = {
    "data": "S3-Rec Amazon Beauty (Beauty.txt, order only): 22,363 users, 12,101 items, 198,502 events; no filtering",
    "split": "leave-one-out per user: last item = test, second-to-last = validation, the rest = training",
    "ranking": "full ranking over all items (no sampled negatives); NDCG@10 / HR@10 with one relevant item",
    "seen_items": (
        "both exclude every item of the user's whole history before the target (target kept). evorec: "
        "exclude_seen=true. RecBole 1.2.1 does NOT do this for sequential models (FullSortEvalDataLoader "
        "passes no history index; only padding item 0 is masked): the runner adds it in a Trainer subclass; "
        "stock RecBole numbers (no exclusion) are in valid_stock/ and test.stock_*"
    ),
    "recbole_training": "one sample per training prefix (data augmentation), CE on its last position only",
    "timing": (
        "seconds since training start (data loading/preparation excluded), validation passes included, "
        "stamped after each validation; both share the machine's 2 cores with other jobs, torch threads = 2"
    ),
    "budgets": (
        "evorec --time-budget counts training seconds (validation excluded) and validates the last, partial epoch; "
        "RecBole's budget counts wall seconds since training start (validations included), checked before each "
        "batch, then the partial epoch is validated and the best checkpoint tested"
    ),
}


def fmt(x, spec=".4f"):
    return "not measured" if x is None else format(x, spec)


def print_report(result: dict) -> None:
    ev, rb, cmp = result["evorec"], result["recbole"], result["comparison"]
    m = result.get("machine", {})
    if "cpu_model" in m:  # results written before the CPU was recorded lack it
        print(f"\ncpu: {m['cpu_model']} [{' '.join(m['cpu_flags'])}]; torch {m['torch_cpu_capability']}; {m['cores']} cores; "
              f"evorec precision {ev.get('precision') or m.get('precision')} ({ev.get('precision_reason') or m.get('auto_precision_reason')})")
    print("\nprotocol:")
    for k, v in result["protocol"].items():
        print(f"  {k}: {v}")
    print(f"\nhyperparameters ({result['hyperparameters'].get('config', 'configs/beauty/sasrec.yaml')} resolved; "
          "RecBole gets every one it has a setting for):", json.dumps(result["hyperparameters"]))
    for name, side in (("evorec", ev), ("RecBole", rb)):
        curve = ", ".join(f"{h['wall_seconds']:.0f}s: {h['valid/NDCG@10']:.4f}{'*' if h.get('partial_epoch') else ''}" for h in side["history"])
        print(f"\n{name} validation NDCG@10 curve (seconds since training start: value; * = partial last epoch): {curve}")
    print(f"\n| {'':34} | evorec | RecBole 1.2.1 |")
    print("|---|---:|---:|")
    rows = [
        ("wall-clock budget (s)", f"{ev['budget_s']:g}", f"{rb['budget_s']:g}"),
        ("validations (epochs, last partial)", str(len(ev["history"])), str(len(rb["history"]))),
        ("best valid NDCG@10", fmt(max(h["valid/NDCG@10"] for h in ev["history"])), fmt(max(h["valid/NDCG@10"] for h in rb["history"]))),
        ("best valid HR@10", fmt(max(h["valid/HR@10"] for h in ev["history"])), fmt(max(h["valid/HR@10"] for h in rb["history"]))),
        ("test NDCG@10 (best checkpoint)", fmt(ev["test"]["NDCG@10"]), fmt((rb.get("test") or {}).get("NDCG@10"))),
        ("test HR@10 (best checkpoint)", fmt(ev["test"]["HR@10"]), fmt((rb.get("test") or {}).get("HR@10"))),
        (f"seconds to valid NDCG@10 >= {cmp['target_valid_NDCG@10']:.4f}",
         fmt(cmp["evorec_seconds"], ".0f") if cmp["evorec_reached"] else "not reached", f"{cmp['recbole_seconds']:.0f}"),
        ("training targets/s", f"{ev['targets_per_s']:,.0f}", f"{rb['targets_per_s']:,.0f}"),
        ("peak RSS of the training process (MB)", f"{ev['peak_rss_mb']:,.0f}", f"{rb['peak_rss_mb']:,.0f}"),
        ("training process wall / CPU seconds", f"{ev['process_seconds']:.0f} / {ev['cpu_seconds']:.0f}",
         f"{rb['process_seconds']:.0f} / {rb['cpu_seconds']:.0f}"),
        ("machine load (1-min loadavg, mean / max)", "{mean} / {max}".format(**ev["loadavg_1min_during"]),
         "{mean} / {max}".format(**rb["loadavg_1min_during"])),
    ]
    rb_test = rb.get("test") or {}
    rows[6:6] = [
        ("RecBole stock (no seen-item exclusion): best valid / test NDCG@10", "-",
         f"{max(h['valid_stock/NDCG@10'] for h in rb['history']):.4f} / {fmt(rb_test.get('stock_NDCG@10'))}"),
    ]
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    if cmp["evorec_reached"]:
        print(f"\nmatched: RecBole reached its best valid NDCG@10 {cmp['target_valid_NDCG@10']:.4f} after {cmp['recbole_seconds']:.0f}s; "
              f"evorec first reached >= that after {cmp['evorec_seconds']:.0f}s -> {cmp['ratio_recbole_over_evorec_seconds']:.1f}x less time")
    else:
        print(f"\nmatched: {cmp['note']}")
    reverse = (f"reached it by its validation at {cmp['recbole_seconds_to_evorec_best']:.0f}s (evorec: {cmp['evorec_seconds_to_its_best']:.0f}s)"
               if cmp["recbole_reached_evorec_best"] else "did not reach it within its budget")
    print(f"evorec's best valid NDCG@10 {cmp['evorec_best_valid_NDCG@10']:.4f}: RecBole {reverse}; evorec's training throughput is "
          f"{cmp['throughput_ratio_evorec_over_recbole']:.2f}x RecBole's (next-item targets per training second)")
    if cmp.get("levels"):
        print("\nseconds to first reach each quality RecBole reached (its new bests; both wall seconds since training start):")
        print("| valid NDCG@10 | RecBole s (epoch) | evorec s | RecBole s / evorec s |")
        print("|---:|---:|---:|---:|")
        for lv in cmp["levels"]:
            print(f"| {lv['valid_NDCG@10']:.4f} | {lv['recbole_seconds']:.0f} ({lv['recbole_epoch']}) | "
                  f"{fmt(lv['evorec_seconds'], '.0f') if lv['evorec_seconds'] is not None else 'not reached'} | "
                  f"{fmt(lv['ratio_recbole_over_evorec_seconds'], '.1f')}{'x' if lv['ratio_recbole_over_evorec_seconds'] else ''} |")
    print(f"\n{RESULTS.relative_to(ROOT) / result.get('results_file', 'peer_recbole.json')}" if result.get("complete") else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evorec-budget", type=float, default=300.0, help="evorec --time-budget in seconds (default 300)")
    ap.add_argument("--peer-budget", type=float, default=1200.0, help="RecBole wall-clock training budget in seconds (default 1200)")
    ap.add_argument("--only", choices=("evorec", "recbole"), help="run one side only (debugging; writes work/peer_recbole/partial.json)")
    ap.add_argument("--config", type=Path, default=CONFIG, help="evorec SASRec config both sides mirror (default configs/beauty/sasrec.yaml)")
    ap.add_argument("--results", default="peer_recbole.json", help="results file name in benchmarks/results (default peer_recbole.json)")
    ap.add_argument("--report", action="store_true",
                    help="run nothing: recompute the comparison from benchmarks/results/<--results> and print the report")
    ap.add_argument("--recbole-runner", metavar="CONFIG_JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.recbole_runner:
        recbole_runner(args.recbole_runner)
        return
    if args.report:
        path = RESULTS / args.results
        result = json.loads(path.read_text())
        result["comparison"] = compare(result["evorec"], result["recbole"])
        path.write_text(json.dumps(result, indent=2) + "\n")
        print_report(result)
        return
    if not BEAUTY.exists():
        raise SystemExit(f"{BEAUTY} not found: the benchmark needs ../shared/data")
    RUN_WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    hp = shared_hyperparameters(args.config)
    versions = ensure_peer() if args.only != "evorec" else None
    data = write_atomic_files()
    print(f"RecBole atomic file: {data}", flush=True)
    from evorec.utils.hardware import machine_record

    machine = machine_record(hp["precision_here"])  # the CPU both sides ran on; evorec's precision here
    print(machine.line(), flush=True)
    result = {
        "benchmark": "peer_recbole", "when": datetime.now(timezone.utc).isoformat(),
        "machine": {**machine.as_json(), "shared": True, "torch_threads": THREADS, "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in load_before]},
        "command": " ".join([".venv/bin/python", "benchmarks/peer_recbole.py", *sys.argv[1:]]),
        "protocol": protocol(hp), "hyperparameters": hp, "results_file": args.results, "recbole_data": data, "recbole_versions": versions,
    }
    if args.only != "recbole":
        ev = run_evorec(args.evorec_budget, args.config)
        ev["budget_s"] = args.evorec_budget
        result["evorec"] = ev
        print(f"[{datetime.now():%H:%M:%S}] evorec: " + ", ".join(f"{h['wall_seconds']:.0f}s {h['valid/NDCG@10']:.4f}" for h in ev["history"])
              + f"; test {ev['test']}; peak RSS {ev['peak_rss_mb']:.0f} MB", flush=True)
    if args.only != "evorec":
        rb = run_recbole(hp, args.peer_budget)
        rb["budget_s"] = args.peer_budget
        result["recbole"] = rb
        print(f"[{datetime.now():%H:%M:%S}] RecBole: " + ", ".join(f"{h['wall_seconds']:.0f}s {h['valid/NDCG@10']:.4f}" for h in rb["history"])
              + f"; test {rb.get('test')}; peak RSS {rb['peak_rss_mb']:.0f} MB", flush=True)
    result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.only:
        path = RUN_WORK / "partial.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"partial run ({args.only} only): {path.relative_to(ROOT)}")
        return
    result["comparison"] = compare(result["evorec"], result["recbole"])
    result["complete"] = True
    (RESULTS / args.results).write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)


if __name__ == "__main__":
    main()
