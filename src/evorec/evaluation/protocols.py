"""Evaluation protocols: which folds, which candidates, which metrics -- with confidence
intervals, per-user vectors, cold-start groups, per-horizon results and a leakage guard.

:func:`evaluate_model` scores a trained model on folds of a split and returns an
:class:`Evaluation`: one row per (fold, user) in ``table`` (the per-user vectors behind every
aggregate) and a JSON-ready ``summary``. The protocol is code with safe defaults:

- **Guard first.** :func:`check_model_training` (plus :func:`evorec.data.splits.check_no_leakage`
  on the split) refuses to evaluate when the model's training data reaches a fold's target, or,
  for folds with a time cut, when any training event is at or after the cut.
- **Candidates.** All items (``candidates: all``), or, on folds with a time cut, only the items
  that existed before the cut (``known``, the default): an item first seen after the cut cannot
  be recommended at the cut. Seen items are excluded (``exclude_seen``); a user whose target
  is a repeat (in the history) is then dropped from the evaluation, counted in the protocol
  (``repeat_targets_dropped``) and warned about: ranking it among candidates that exclude every
  other history item would hand any scorer favouring the user's own items a free hit.
- ``eval.protocol`` ``next_basket`` / ``next_period`` (purchase logs): every item of the next
  basket / period is relevant, metrics split into repeat and explore items
  (:mod:`evorec.evaluation.nextbasket`).
- **Next item** metrics (HR/Recall/NDCG/MRR/MAP@K) of each user's first target; **window**
  metrics (``W-HR@K``, ``W-Recall@K``, ``W-Precision@K``, ``W-NDCG@K``) against every distinct
  item of a backtest fold's window (with ``exclude_seen``, window items already in the history
  are not targets -- except the first target, which stays a candidate).
- **Backtest** results are reported per horizon ("next event", then each window) pooled over
  the cutoffs, and per fold.
- **Groups.** Cold-start users (history < ``cold_user_history`` events) and cold-start items
  (target seen < ``cold_item_count`` times in the model's training data) are reported apart.
- **Next category** (accuracy, macro/micro P/R/F1, confusion) from the item scores summed per
  category, and AUC: ``GAUC`` (per-user AUC of the target against all candidates, averaged) and
  a pooled ``AUC (sampled-uniform-N)`` over fixed sampled impressions.
- Every aggregate carries a bootstrap CI (users resampled, ``bootstrap`` resamples).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field

from evorec.data.batches import EvalSet, eval_set, history_items
from evorec.data.sequences import SequenceData
from evorec.data.splits import LeakageError, Split, check_no_leakage, item_first_ts
from evorec.errors import InputError
from evorec.evaluation import metrics as M
from evorec.evaluation.classification import category_scores, classification_metrics, per_user_auc, pooled_auc
from evorec.evaluation.ranking import rank_targets, sample_negatives
from evorec.evaluation.stats import summarize
from evorec.utils.timeutil import duration_label

logger = logging.getLogger(__name__)

SCORES_PER_BATCH = 1 << 25  # bound on batch x n_items scores held at once (128 MB of float32)


class EvalConfig(BaseModel):
    """The evaluation protocol (a field of ``ExperimentConfig``: ``eval``)."""

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["next_item", "next_basket", "next_period"] = Field(
        "next_item", description="next_item: each user's first target; next_basket: every item of the user's next basket; "
        "next_period: every item bought in period_days after the cut (evorec.evaluation.nextbasket; repeat/explore split)",
    )
    period_days: float = Field(7.0, gt=0, description="next_period: the window after the cut, in days")
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    exclude_seen: bool = Field(
        True, description="items in the user's history are not ranked; a target the user had before (a repeat) can then "
        "never be hit, so repeat targets are dropped from the evaluation and counted (a warning says how many). "
        "The one setting: training's early stopping reads it too",
    )
    fold: str = Field("test", description="fold of loo / time splits; backtest evaluates every fold")
    batch_size: int = Field(256, ge=1, description="users per scoring batch (capped so batch x items stays bounded)")
    candidates: Literal["all", "known"] = Field(
        "known", description="'known': on folds with a time cut, rank only items that existed before the cut"
    )
    cold_user_history: int = Field(5, ge=1, description="users with fewer history events are cold-start")
    cold_item_count: int = Field(5, ge=1, description="targets seen fewer times in training are cold-start items")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the CIs (0: no CIs)")
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    auc_negatives: int = Field(100, ge=1, description="sampled negatives per user for the pooled AUC")
    sampled_negatives: int | None = Field(
        None, ge=1, description="also report sampled metrics with this many negatives per user, named "
        "e.g. 'NDCG@10 (sampled-uniform-100)' (never instead of full ranking)",
    )
    negative_sampling: Literal["uniform", "popularity"] = Field(
        "uniform", description="sampled metrics: uniform, or in proportion to training popularity"
    )


@dataclass
class TrainingPart:
    """What the evaluated model was trained on: per user row, events ``offsets[u]:end[u]``."""

    end: np.ndarray  # (n_users,) int64 global end positions
    key: str = "train"
    cut: int | None = None  # the training set's time cut, when it has one


@dataclass
class Evaluation:
    table: pa.Table  # one row per (fold, user): ranks, per-user metrics, groups, categories
    summary: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Leakage guard for the model


def check_model_training(seq: SequenceData, split: Split, folds: list[str], training: TrainingPart) -> None:
    """Raise :class:`LeakageError` if the model's training data reaches into an evaluated fold:
    a user's training events at or after that user's first target, or (folds with a cut) any
    training event, of any user, at or after the cut."""
    off = np.asarray(seq.offsets, dtype=np.int64)
    ts = np.asarray(seq.ts)
    end = np.asarray(training.end, dtype=np.int64)
    if len(end) != len(off) - 1:
        raise LeakageError(f"the model's training set has {len(end)} users, the sequences {len(off) - 1}")
    has = end > off[:-1]
    last = np.where(has, ts[np.clip(end - 1, 0, max(len(ts) - 1, 0))], np.iinfo(np.int64).min) if len(ts) else end
    latest = int(last.max()) if has.any() else None
    problems = []
    for name in folds:
        f = split.folds[name]
        users = np.asarray(f.users, dtype=np.int64)
        if not len(users):
            continue
        first = np.minimum.reduceat(np.asarray(f.tgt_pos, dtype=np.int64), np.asarray(f.tgt_offsets)[:-1])
        bad = np.flatnonzero(end[users] > first)
        if len(bad):
            u = int(users[bad[0]])
            problems.append(
                f"fold {name!r}: the model trained on {len(bad)} user(s)' events at or after their target, e.g. user "
                f"{seq.users.id_of(u + 1)!r}: training runs to position {int(end[u])}, the target is position {int(first[bad[0]])}"
            )
        if f.cut is not None and latest is not None and latest >= f.cut:
            u = int(np.argmax(last))
            problems.append(
                f"fold {name!r}: the model's training ({training.key}) has events up to {latest} (user {seq.users.id_of(u + 1)!r}), "
                f"at or after the fold's cut {f.cut}: it saw the evaluation period. Train with a split whose cut precedes it "
                f"(prepare.split.kind=time or backtest)"
            )
    if problems:
        raise LeakageError("refusing to evaluate:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------
# One fold


def _fold_rows(
    model, seq: SequenceData, split: Split, name: str, cfg: EvalConfig, train_counts: np.ndarray, first_seen: np.ndarray | None,
    item_category: torch.Tensor | None, n_categories: int, window: bool, max_len: int,
) -> tuple[dict[str, np.ndarray], dict[str, Any], np.ndarray | None]:
    """Per-user columns of one fold, its protocol, and its top-k lists."""
    f = split.folds[name]
    es = eval_set(seq, split, name)
    kept, n_repeat = None, 0
    if cfg.exclude_seen:
        es, kept, n_repeat = drop_repeat_targets(seq, es, f"fold {name!r}")
    N = len(es.users)
    n_items = int(model.n_items)
    ks = sorted(set(cfg.ks))
    exclude = None
    if f.cut is not None and cfg.candidates == "known" and first_seen is not None:
        exclude = first_seen >= f.cut
    neg = sample_negatives(es.users, es.target_item, n_items, cfg.auc_negatives, seed=cfg.seed) if N else np.zeros((0, cfg.auc_negatives), np.int64)
    neg_t = torch.from_numpy(neg)
    tgt_t = torch.from_numpy(es.target_item)
    imp_pos = np.zeros(N, np.float64)
    imp_neg = np.zeros((N, cfg.auc_negatives), np.float64)
    pred_cat = np.zeros(N, np.int64)

    def hook(rows: np.ndarray, scores: torch.Tensor) -> None:
        s = scores.float()
        r = torch.from_numpy(rows)
        imp_pos[rows] = s.gather(1, tgt_t[r].unsqueeze(1).to(s.device)).squeeze(1).cpu().numpy()
        imp_neg[rows] = s.gather(1, neg_t[r].to(s.device)).cpu().numpy()
        if item_category is not None:
            probs = category_scores(s, item_category, n_categories)  # (B, n_categories)
            probs[:, 0] = -1.0  # "unknown category" is never a prediction
            pred_cat[rows] = probs.argmax(1).cpu().numpy()

    batch = max(1, min(cfg.batch_size, SCORES_PER_BATCH // max(n_items, 1)))
    res = rank_targets(
        model, seq, es, max_len=max_len, batch_size=batch, exclude_seen=cfg.exclude_seen, ks=ks,
        exclude_items=exclude, score_hook=hook,
    )
    sampled: dict[str, np.ndarray] = {}
    if cfg.sampled_negatives:
        res_s = rank_targets(
            model, seq, es, max_len=max_len, batch_size=batch, exclude_seen=cfg.exclude_seen, ks=ks, exclude_items=exclude,
            negatives=cfg.sampled_negatives, negative_sampling=cfg.negative_sampling, seed=cfg.seed, item_counts=train_counts,
        )
        sampled = M.per_user_columns(res_s.rank, ks, res_s.suffix)
    cols: dict[str, np.ndarray] = {
        "fold": np.full(N, name, dtype=object),
        "user_row": es.users,
        "target_item_index": es.target_item,
        "target_pos": es.target_pos,
        "history_length": (es.hist_end - es.hist_start).astype(np.int64),
        "target_train_count": train_counts[es.target_item].astype(np.int64),
        "rank": res.rank,
        "n_candidates": res.n_candidates,
        **M.per_user_columns(res.rank, ks),
        "AUC": per_user_auc(res.rank, res.n_candidates),
        **sampled,
    }
    if item_category is not None:
        cols["category_true"] = np.asarray(seq.category)[es.target_pos].astype(np.int64)
        cols["category_pred"] = pred_cat
    if window:
        n_t, wcols = _window(seq, f, es, res.topk, n_items, ks, cfg.exclude_seen, kept)
        cols["window_targets"] = n_t
        cols.update(wcols)
    protocol = {**res.protocol, "fold": name, "cut": f.cut, "end": f.end, **f.info}
    if cfg.exclude_seen:
        protocol["target_in_history"] = "dropped: users whose target is a repeat are not evaluated (seen items excluded)"
        protocol["repeat_targets_dropped"] = n_repeat
    cols["_imp_pos"], cols["_imp_neg"] = imp_pos, imp_neg
    return cols, protocol, res.topk


def drop_repeat_targets(seq: SequenceData, es: EvalSet, where: str) -> tuple[EvalSet, np.ndarray, int]:
    """With seen items excluded: (the rows of ``es`` whose target is not in the history, their
    indices into ``es``, the number dropped); a warning names the count and what was done."""
    from evorec.evaluation.nextbasket import in_history

    rep = in_history(seq, es, np.arange(len(es.users)), es.target_item)
    kept = np.flatnonzero(~rep)
    if rep.any():
        logger.warning(
            "eval.exclude_seen: %d of %d users of %s have a repeat target (an item they had before); seen items are not ranked, "
            "so these users are dropped from the evaluation. Set eval.exclude_seen=false to rank repeats "
            "(and eval.protocol=next_basket on purchase logs)", int(rep.sum()), len(rep), where,
        )
    return es.take(kept), kept, int(rep.sum())


def _window(seq, f, es, topk, n_items, ks, exclude_seen, kept=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Distinct window items per user (minus history items unless the first target) and metrics;
    ``kept``: the fold users (with a target) that ``es`` still holds, in order."""
    counts = np.diff(np.asarray(f.tgt_offsets))
    has = counts > 0
    rows = np.repeat(np.arange(int(has.sum())), counts[has])
    items = np.asarray(seq.item)[np.asarray(f.tgt_pos)].astype(np.int64)
    if kept is not None:
        new = np.full(int(has.sum()), -1, np.int64)
        new[kept] = np.arange(len(kept))
        rows = new[rows]
        rows, items = rows[rows >= 0], items[rows >= 0]
    if exclude_seen:
        h_rows, h_items = history_items(seq, es.hist_start, es.hist_end)
        seen = np.unique(h_rows * np.int64(n_items) + h_items)
        key = rows * np.int64(n_items) + items
        pos = np.minimum(np.searchsorted(seen, key), max(len(seen) - 1, 0))
        in_hist = (seen[pos] == key) if len(seen) else np.zeros(len(key), bool)
        keep = ~in_hist | (items == es.target_item[rows])
        rows, items = rows[keep], items[keep]
    keys = np.unique(rows * np.int64(n_items) + items)
    rows, items = keys // n_items, keys % n_items
    n_t = np.bincount(rows, minlength=len(es.users))[: len(es.users)].astype(np.int64)
    return n_t, M.window_columns(topk, rows, items, n_items, ks)


# ---------------------------------------------------------------------------------------------
# The whole evaluation


def evaluate_model(
    model, seq: SequenceData, split: Split, folds: list[str], cfg: EvalConfig, training: TrainingPart, *, max_len: int,
) -> Evaluation:
    """Guard, then score ``folds`` and summarise (see the module docstring). Histories are cut to
    the last ``max_len`` events (the model's training length). ``cfg.protocol`` next_basket /
    next_period: :func:`evorec.evaluation.nextbasket.evaluate_baskets`."""
    if cfg.protocol != "next_item":
        from evorec.evaluation.nextbasket import evaluate_baskets

        return evaluate_baskets(model, seq, split, folds, cfg, training, max_len=max_len)
    check_no_leakage(split, seq)
    check_model_training(seq, split, folds, training)
    n_items = int(model.n_items)
    if n_items != seq.items.size:
        raise InputError(f"the model ranks {n_items - 1} items but the data has {seq.items.size - 1}: vocabularies differ")
    if max(cfg.ks) > n_items - 1:
        raise InputError(f"K={max(cfg.ks)} is larger than the catalogue of {n_items - 1} items")
    off = np.asarray(seq.offsets, dtype=np.int64)
    t_rows, t_items = history_items(seq, off[:-1], np.asarray(training.end, dtype=np.int64))
    train_counts = np.bincount(t_items, minlength=n_items)[:n_items].astype(np.float64)
    train_counts[0] = 0
    first_seen = item_first_ts(seq) if any(split.folds[n].cut is not None for n in folds) else None
    n_cat = seq.categories.size
    item_category = None
    if n_cat > 2:  # a dataset without categories has only padding + "unknown"
        item_category = torch.from_numpy(seq.item_category())
    window = split.kind == "backtest"

    parts, protocols, topks = [], {}, []
    for name in folds:
        cols, proto, topk = _fold_rows(model, seq, split, name, cfg, train_counts, first_seen, item_category, n_cat, window, max_len)
        parts.append(cols)
        protocols[name] = proto
        topks.append(topk)
    table_cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    imp_pos, imp_neg = table_cols.pop("_imp_pos"), table_cols.pop("_imp_neg")

    ks = sorted(set(cfg.ks))
    metric_names = [k for k in M.per_user_columns(np.zeros(1, np.int64), ks)] + ["AUC"]
    if cfg.sampled_negatives:
        suffix = f" (sampled-{cfg.negative_sampling}-{cfg.sampled_negatives})"
        metric_names += list(M.per_user_columns(np.zeros(1, np.int64), ks, suffix))
    summary: dict[str, Any] = {
        "protocol": _protocol(split, folds, protocols, cfg, training),
        "users": int(len(table_cols["rank"])),
    }
    primary = _primary_rows(split, folds, table_cols)
    agg = _aggregate({m: table_cols[m][primary] for m in metric_names}, cfg)
    agg["metrics"]["GAUC"] = agg["metrics"].pop("AUC")
    agg["ci"]["GAUC"] = agg["ci"].pop("AUC", None)
    if len(imp_pos[primary]):
        name = f"AUC (sampled-uniform-{cfg.auc_negatives})"
        agg["metrics"][name] = pooled_auc(_finite(imp_pos[primary]), _finite(imp_neg[primary]))
    summary.update(agg)
    summary["groups"] = _groups(table_cols, primary, metric_names, cfg)
    topk_all = np.concatenate([t for t in topks]) if topks and topks[0] is not None else None
    if topk_all is not None:
        summary["list_metrics"] = _list_metrics(topk_all[primary], n_items, train_counts, ks)
    if item_category is not None:
        names = ["(unknown)"] + [str(x) for x in seq.categories.ids.to_pylist()]  # index i -> ids[i - 1]
        summary["classification"] = {
            "next category": classification_metrics(
                table_cols["category_true"][primary], table_cols["category_pred"][primary], label_names=names
            )
        }
    if window:
        summary["horizons"] = _horizons(split, folds, table_cols, cfg)
        summary["folds"] = {
            n: {"users": int((table_cols["fold"] == n).sum()), **_aggregate(
                {m: table_cols[m][table_cols["fold"] == n] for m in metric_names + _window_names(ks)}, cfg, ci=False)["metrics"]}
            for n in folds
        }
    table_cols["user"] = np.array(seq.users.reverse(table_cols["user_row"] + 1), dtype=object)  # row r has index r + 1
    table_cols["target_item"] = np.array(seq.items.reverse(table_cols["target_item_index"]), dtype=object)
    if item_category is not None:
        cat_ids = seq.categories
        table_cols["category_true"] = np.array(cat_ids.reverse(table_cols["category_true"]), dtype=object)
        table_cols["category_pred"] = np.array(cat_ids.reverse(table_cols["category_pred"]), dtype=object)
    table = pa.table({k: pa.array(v) for k, v in table_cols.items()})
    return Evaluation(table=table, summary=summary)


def _finite(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(x, neginf=-1e30, posinf=1e30)


def _window_names(ks: list[int]) -> list[str]:
    return [f"W-{m}@{k}" for k in ks for m in ("HR", "Recall", "Precision", "NDCG")]


def _primary_rows(split: Split, folds: list[str], cols: dict[str, np.ndarray]) -> np.ndarray:
    """Rows behind the headline metrics: every row for loo/time; for a backtest, per cutoff the
    fold with the longest horizon (the most users; every user's first event after the cut)."""
    if split.kind != "backtest":
        return np.ones(len(cols["rank"]), dtype=bool)
    best: dict[Any, str] = {}
    for n in folds:
        f = split.folds[n]
        c = f.info.get("cutoff")
        if c not in best or split.folds[best[c]].n_users < f.n_users:
            best[c] = n
    return np.isin(cols["fold"], list(best.values()))


def _aggregate(columns: dict[str, np.ndarray], cfg: EvalConfig, ci: bool = True) -> dict[str, Any]:
    """Means (NaN rows ignored per column) and bootstrap CIs; columns without NaN share one
    bootstrap (the same resampled users for every metric)."""
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    metrics: dict[str, float] = {}
    for name, v in cols.items():
        v = v[~np.isnan(v)]
        metrics[name] = float(v.mean()) if len(v) else float("nan")
    if not ci:
        return {"metrics": metrics}
    cis: dict[str, list[float] | None] = {k: None for k in cols}
    if cfg.bootstrap:
        whole = {k: v for k, v in cols.items() if len(v) >= 2 and not np.isnan(v).any()}
        groups = [whole] + [{k: v[~np.isnan(v)]} for k, v in cols.items() if k not in whole]
        for g in groups:
            g = {k: v for k, v in g.items() if len(v) >= 2}
            if g:
                for k, r in summarize(g, n_boot=cfg.bootstrap, alpha=1 - cfg.confidence, seed=cfg.seed).items():
                    cis[k] = [r["lo"], r["hi"]]
    return {"metrics": metrics, "ci": cis}


def _groups(cols: dict[str, np.ndarray], primary: np.ndarray, names: list[str], cfg: EvalConfig) -> dict[str, Any]:
    hl, tc = cols["history_length"], cols["target_train_count"]
    groups = {
        f"cold users (history < {cfg.cold_user_history})": hl < cfg.cold_user_history,
        f"warm users (history >= {cfg.cold_user_history})": hl >= cfg.cold_user_history,
        "new items (not in training)": tc == 0,
        f"cold items (1..{cfg.cold_item_count - 1} training events)": (tc > 0) & (tc < cfg.cold_item_count),
        f"warm items (>= {cfg.cold_item_count} training events)": tc >= cfg.cold_item_count,
    }
    key = [n for n in names if n.startswith(("HR@", "NDCG@"))] + ["MRR"]
    out = {}
    for label, mask in groups.items():
        m = mask & primary
        entry: dict[str, Any] = {"users": int(m.sum())}
        if m.sum():
            entry.update(_aggregate({n: cols[n][m] for n in key}, cfg))
        out[label] = entry
    return out


def _list_metrics(topk: np.ndarray, n_items: int, counts: np.ndarray, ks: list[int]) -> dict[str, float]:
    out = {}
    for k in ks:
        out[f"Coverage@{k}"] = M.item_coverage(topk, n_items, k)
        out[f"PopBias@{k}"] = float(np.nanmean(M.popularity_bias(topk, counts, k))) if len(topk) else float("nan")
        out[f"Novelty@{k}"] = float(np.nanmean(M.novelty(topk, counts, k))) if len(topk) else float("nan")
    return out


def _horizons(split: Split, folds: list[str], cols: dict[str, np.ndarray], cfg: EvalConfig) -> dict[str, Any]:
    """"next event" (first target, pooled over cutoffs) and one entry per horizon (window metrics
    pooled over cutoffs)."""
    ks = sorted(set(cfg.ks))
    primary = _primary_rows(split, folds, cols)
    nxt = [n for n in M.per_user_columns(np.zeros(1, np.int64), ks) if n.startswith(("HR@", "NDCG@"))] + ["MRR"]
    out: dict[str, Any] = {"next event": {"users": int(primary.sum()), **_aggregate({n: cols[n][primary] for n in nxt}, cfg)}}
    by_h: dict[str, list[str]] = {}
    for n in folds:
        f = split.folds[n]
        by_h.setdefault(_horizon_label(f.info.get("horizon"), f.info.get("horizon_unit")), []).append(n)
    for label, names in by_h.items():
        m = np.isin(cols["fold"], names)
        out[label] = {
            "users": int(m.sum()),
            "targets_per_user": float(cols["window_targets"][m].mean()) if m.any() else float("nan"),
            **_aggregate({n: cols[n][m] for n in _window_names(ks)}, cfg),
        }
    return out


def _horizon_label(h: int | None, unit: str | None) -> str:
    """A backtest fold's horizon as metrics.json names it ("30d", "next 5 events", "window")."""
    if h is None:
        return "window"
    return f"next {h} events" if unit == "events" else duration_label(h)


def _protocol(split: Split, folds: list[str], protocols: dict[str, dict], cfg: EvalConfig, training: TrainingPart) -> dict[str, Any]:
    first = protocols[folds[0]]
    return {
        "split": split.kind,
        "split_config": split.config,
        "folds": folds,
        "ranking": first.get("ranking", "full"),
        "exclude_seen": cfg.exclude_seen,
        "repeat_targets_dropped": sum(int(p.get("repeat_targets_dropped", 0)) for p in protocols.values()),
        "candidates": "all items" if cfg.candidates == "all" or split.kind == "loo" else "items that existed before the fold's cut",
        "ties": first.get("ties"),
        "target_in_history": first.get("target_in_history"),
        "max_len": first.get("max_len"),
        "model_training": {"set": training.key, "cut": training.cut},
        "confidence_intervals": f"{cfg.confidence:.0%} percentile bootstrap over users, {cfg.bootstrap} resamples, seed {cfg.seed}",
        "per_fold": {n: {k: v for k, v in p.items() if k not in ("ranking", "ties", "target_in_history", "name")} for n, p in protocols.items()},
    }


# ---------------------------------------------------------------------------------------------
# Splits for a protocol other than the run's own

PROTOCOLS = ("loo", "time", "backtest")


def default_split_config(seq: SequenceData, run_split: Split, kind: str) -> dict[str, Any]:
    """A split config of ``kind`` that fits a model trained on ``run_split``.

    ``loo``: the published-table protocol. ``time``: the run's own cuts if it has them, else the
    80% / 90% quantiles of event time. ``backtest``: three cutoffs from the run's test cut (or
    the 80% quantile) to the end of the log, horizons 1, 7 and 30 days (1, 5 and 20 events on
    order-only data)."""
    if kind not in PROTOCOLS:
        raise InputError(f"unknown protocol {kind!r}; known: {', '.join(PROTOCOLS)}")
    base = {"target_behaviors": run_split.config.get("target_behaviors")}
    if kind == run_split.kind:
        return dict(run_split.config)
    ts = np.asarray(seq.ts)
    if not len(ts):
        raise InputError("the dataset has no events")
    if kind == "loo":
        return {**base, "kind": "loo"}
    if kind == "time":
        q8, q9 = (int(x) for x in np.quantile(ts, [0.8, 0.9]))
        return {**base, "kind": "time", "valid_start": q8, "test_start": max(q9, q8 + 1)}
    start = run_split.report.get("test_start") if run_split.kind == "time" else None  # resolved to an int
    start = int(start) if start is not None else int(np.quantile(ts, 0.8))
    t_max = int(ts.max())
    cutoffs = sorted({start + (t_max - start) * i // 3 for i in range(3)})
    ordinal = seq.time_kind.value == "ordinal"
    horizons: list[int | str] = [1, 5, 20] if ordinal else ["1d", "7d", "30d"]
    return {**base, "kind": "backtest", "cutoffs": cutoffs, "horizons": horizons, "min_history": 1}
