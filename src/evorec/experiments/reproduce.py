"""Reproduce a paper's table on the same file: ``evorec benchmark reproduce s3rec-beauty``.

Each row of a published table is trained and evaluated with evorec under the table's protocol,
then printed beside the published number with its bootstrap confidence interval and whether the
published number lies inside it. Runs live in ``OUT/<model>`` and are reused when their config
is unchanged (a killed reproduction resumes where it stopped).

The tables (hyperparameters included) are package data (``evorec/experiments/tables/*.yaml``,
read by :mod:`evorec.experiments.tables`) rather than ``configs/``, so the command works from an
installed package (a test keeps them equal to ``configs/beauty/<model>.yaml``); the data file is
found with ``--data``, ``$EVOREC_DATA_DIR`` or the project's ``../shared/data`` layout.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import numpy as np

from evorec.errors import MissingPathError, NotFoundError
from evorec.experiments.config import ExperimentConfig, load_experiment
from evorec.experiments.runs import TrainingRun
from evorec.experiments.tables import Row, Table, tables
from evorec.experiments.training import data_sizes, evaluate_run, prepared_data, train
from evorec.types import JSONDoc

logger = logging.getLogger(__name__)

def find_data(table: Table, data: str | Path | None = None) -> Path:
    """The table's data file: ``data`` if given, else under ``$EVOREC_DATA_DIR``, else the first
    ``shared/data`` found walking up from the working directory."""
    if data is not None:
        p = Path(data)
        if not p.exists():
            raise MissingPathError(f"--data {p}: no such file")
        return p
    candidates = []
    if os.environ.get("EVOREC_DATA_DIR"):
        candidates.append(Path(os.environ["EVOREC_DATA_DIR"]) / table.relative_path)
    here = Path.cwd().resolve()
    for base in [here, *here.parents]:
        candidates.append(base / "shared" / "data" / table.relative_path)
    for c in candidates:
        if c.exists():
            return c
    raise MissingPathError(
        f"{table.name} needs {table.relative_path}; pass --data FILE or set EVOREC_DATA_DIR (looked in: "
        + ", ".join(str(c.parent) for c in candidates[:3]) + ", ...)"
    )


def row_experiment(table: Table, row: Row, data_path: Path, budget_s: float | None, seed: int = 0) -> JSONDoc:
    t = copy.deepcopy(row.train)
    t.setdefault("seed", seed)
    t["progress"] = False
    if budget_s is not None:
        t["time_budget_s"] = float(budget_s)
    return {
        "name": f"{table.name}/{row.model}",
        "data": {"path": str(data_path), **table.data},
        "prepare": copy.deepcopy(table.prepare),
        "model": {"name": row.model, "config": copy.deepcopy(row.config)},
        "train": t,
        "eval": copy.deepcopy(table.eval),
    }


def reproduce(
    name: str, out_dir: str | Path, *, data: str | Path | None = None, budget_s: float | None = 300.0,
    models: list[str] | None = None, bootstrap: int = 1000,
) -> JSONDoc:
    """Train and evaluate every row of table ``name``; returns the side-by-side table as a dict."""
    known = tables()
    if name not in known:
        raise NotFoundError(f"unknown table {name!r}; known: {', '.join(known)}")
    table = known[name]
    rows = table.rows if not models else [r for r in table.rows if r.model in models or r.label in models]
    if models and len(rows) != len(set(models)):
        known = [r.model for r in table.rows]
        raise NotFoundError(f"{name} has rows {known}; got {models}")
    data_path = find_data(table, data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for row in rows:
        run = TrainingRun(out / row.model)
        doc = row_experiment(table, row, data_path, budget_s)
        cfg = load_experiment(None, base=doc)
        if _finished(run, cfg):
            logger.info("%s: reusing the finished run in %s", row.label, run.dir)
        else:
            logger.info("%s: training (%s)", row.label, f"budget {budget_s:.0f}s" if budget_s else "no time budget")
            train(cfg, run.dir, resume=run.last_checkpoint.exists() and run.config_file.exists())
        ev = evaluate_run(run.dir, eval_overrides=[f"bootstrap={bootstrap}"])
        entry = {"label": row.label, "model": row.model, "run": str(run.dir), "train_seconds": ev["train_state"]["train_seconds"],
                 "epochs": ev["train_state"]["epoch"], "metrics": {}}
        for metric, pub in row.published.items():
            lo, hi = ev["ci"][metric]
            entry["metrics"][metric] = {
                "evorec": ev["metrics"][metric], "ci": [lo, hi], "published": pub, "published_inside_ci": bool(lo <= pub <= hi),
            }
        results.append(entry)
    explanation = _poprec_explanation(table, data_path) if any(r.model == "pop" for r in rows) else None
    return {
        "table": table.name,
        "title": table.title,
        "source": table.source,
        "data": os.path.relpath(data_path),  # relative: results files travel between machines
        "protocol": table.protocol,
        "budget_s_per_model": budget_s,
        "confidence": f"95% percentile bootstrap over users ({bootstrap} resamples)",
        "rows": results,
        "poprec_explanation": explanation,
    }


def _finished(run: TrainingRun, cfg: ExperimentConfig) -> bool:
    """A run whose saved config equals ``cfg`` and whose training stopped (not killed)."""
    if not (run.finished and run.config_file.exists() and run.history_file.exists()):
        return False
    if run.saved_config() != cfg.model_dump(mode="json"):
        return False
    return bool((run.history() or {}).get("stopped"))


def _poprec_explanation(table: Table, data_path: Path) -> JSONDoc:
    """PopRec is deterministic, so a truly identical protocol must land on the published number.
    Counting popularity over the *whole* file -- the validation and test items included --
    reproduces it; counting over the training part (the leak-free protocol) does not."""
    from evorec.data.batches import TrainView, eval_set
    from evorec.evaluation.ranking import rank_targets
    from evorec.models.registry import build_model

    row = next(r for r in table.rows if r.model == "pop")
    cfg = load_experiment(None, base=row_experiment(table, row, data_path, None))
    seq, split = prepared_data(cfg)
    es = eval_set(seq, split, "test")
    out = {}
    for label, end in (
        ("training part only (evorec, leak-free)", np.asarray(split.train_ends["train"])),
        ("whole file, test items included (leaks the targets)", np.asarray(seq.offsets[1:], dtype=np.int64)),
    ):
        model = build_model("pop", {}, data_sizes(seq))
        model.fit(TrainView(seq, end))
        res = rank_targets(model, seq, es, max_len=50, exclude_seen=True, ks=(10,), return_topk=False)
        m = res.aggregate((10,))
        out[label] = {"HR@10": m["HR@10"], "NDCG@10": m["NDCG@10"]}
    pub = row.published
    leaky = out["whole file, test items included (leaks the targets)"]
    out["published"] = dict(pub)
    out["conclusion"] = (
        "the published PopRec counted popularity over the whole file, test targets included"
        if abs(leaky["HR@10"] - pub["HR@10"]) < 5e-5 and abs(leaky["NDCG@10"] - pub["NDCG@10"]) < 5e-5
        else "no counting scope tried here reproduces the published PopRec"
    )
    return out
