"""Next-basket and next-period evaluation: every item of the user's next basket (or window) is
relevant, and every metric is split into repeat and explore items.

The protocol of Li et al., "A Next Basket Recommendation Reality Check" (TOIS 2023), on evorec's
time-respecting folds (``eval.protocol``):

- ``next_basket``: the targets of a fold user are the distinct items of the user's first basket
  after the fold's cut (``SequenceData.basket``: the log's basket ids, else a user's day, said in
  the log when the data were prepared).
- ``next_period``: the distinct items the user bought in ``[cut, cut + period_days)``.
- A target is a **repeat** if the user had the item in the history (everything before the cut),
  else an **explore** item.
- Each user's top-K list is ranked over the candidates (``known``: items that existed at the cut;
  index 0 never). With ``exclude_seen`` the history items are not candidates, so a repeat target
  could never be hit: repeat targets are then **dropped from the evaluation**, counted, and a
  warning names the count (users left with no target are not scored).
- Per user, with ``n`` targets and ``h@K`` of them in the top K: ``Recall@K = h/n``,
  ``NDCG@K = DCG@K / IDCG(min(n, K))``, ``PHR@K = [h > 0]`` (share of users with a hit),
  ``Precision@K = h/K``; the same with ``repeat`` / ``explore`` in front of the name over the
  user's repeat / explore targets only (NaN, so not averaged, for users without such targets).
- Means over users, percentile-bootstrap CIs (users resampled), and the per-user table that
  paired differences between models are taken on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from evorec.data.batches import EvalSet, eval_batches_by_length, eval_set, expand_ranges, history_items
from evorec.data.sequences import SequenceData
from evorec.data.splits import Fold, Split, check_no_leakage, item_first_ts
from evorec.errors import InputError
from evorec.evaluation import metrics as M
from evorec.utils.timeutil import DAY

logger = logging.getLogger(__name__)

SCORES_PER_BATCH = 1 << 25
SPLITS = ("repeat", "explore")


@dataclass
class BasketTargets:
    """The relevant items of one fold: distinct (row, item) pairs, rows into ``es``."""

    es: EvalSet  # one row per fold user with a target (es.target_* is the first target)
    rows: np.ndarray  # (P,) int64
    items: np.ndarray  # (P,) int64
    repeat: np.ndarray  # (P,) bool: the user had the item before the cut
    repeat_dropped: int  # repeat targets dropped because seen items are excluded
    users_left_without_target: int

    def take(self, idx: np.ndarray) -> BasketTargets:
        """The EvalSet rows ``idx`` (sorted, unique) with their targets, rows renumbered."""
        idx = np.asarray(idx, np.int64)
        new_row = np.full(len(self.es.users), -1, np.int64)
        new_row[idx] = np.arange(len(idx))
        keep = new_row[self.rows] >= 0
        return BasketTargets(self.es.take(idx), new_row[self.rows[keep]], self.items[keep], self.repeat[keep],
                             self.repeat_dropped, self.users_left_without_target)


def in_history(seq: SequenceData, es: EvalSet, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(P,) bool: whether item ``items[p]`` is in the history of EvalSet row ``rows[p]``."""
    n = np.int64(max(seq.items.size, 1))
    h_rows, h_items = history_items(seq, es.hist_start, es.hist_end)
    seen = np.unique(h_rows * n + h_items)
    key = np.asarray(rows, np.int64) * n + np.asarray(items, np.int64)
    if not len(seen):
        return np.zeros(len(key), bool)
    return seen[np.minimum(np.searchsorted(seen, key), len(seen) - 1)] == key


def basket_targets(
    seq: SequenceData, split: Split, fold: str, protocol: str, *, period_days: float = 7.0, exclude_seen: bool = False,
) -> BasketTargets:
    """The next basket's (or period's) distinct items of every user of ``fold`` (module docstring)."""
    f: Fold = split.folds[fold]
    if f.cut is None:
        raise InputError(
            f"eval.protocol={protocol} needs folds with a time cut (prepare.split.kind: time or backtest); "
            f"fold {fold!r} of this {split.kind!r} split has none"
        )
    es = eval_set(seq, split, fold)
    counts = np.diff(np.asarray(f.tgt_offsets))
    has = counts > 0
    rows = np.repeat(np.arange(int(has.sum()), dtype=np.int64), counts[has])  # (P,) EvalSet row of every target position
    pos = np.asarray(f.tgt_pos, dtype=np.int64)
    if protocol == "next_basket":
        b = np.asarray(seq.basket)
        keep = b[pos] == b[es.target_pos][rows]
    elif protocol == "next_period":
        keep = np.asarray(seq.ts)[pos] < f.cut + int(round(period_days * DAY))
    else:
        raise InputError(f"unknown protocol {protocol!r}; known: next_basket, next_period (next_item: evaluate_model)")
    n = np.int64(seq.items.size)
    keys = np.unique(rows[keep] * n + np.asarray(seq.item)[pos[keep]].astype(np.int64))
    rows, items = keys // n, keys % n
    rep = in_history(seq, es, rows, items)
    dropped, no_target = 0, 0
    if exclude_seen and rep.any():
        dropped = int(rep.sum())
        before = np.unique(rows)
        rows, items, rep = rows[~rep], items[~rep], rep[~rep]
        no_target = int(len(before) - len(np.unique(rows)))
        logger.warning(
            "eval.exclude_seen: %d of %d target items of fold %r (%.1f%%) were bought before by their user (repeat targets); "
            "seen items are not ranked, so these targets are dropped from the evaluation and %d user(s) left without a target "
            "are not scored. Set eval.exclude_seen=false to score repeats",
            dropped, dropped + len(rows), fold, 100.0 * dropped / max(dropped + len(rows), 1), no_target,
        )
    return BasketTargets(es, rows, items, rep, dropped, no_target)


def recommend_topk(
    model, seq: SequenceData, es: EvalSet, *, k: int, max_len: int, batch_size: int = 256, exclude_seen: bool = False,
    exclude_items: np.ndarray | None = None,
) -> np.ndarray:
    """(N, k) int64 each EvalSet row's top-k items by ``model.score`` (0 = empty slot), without
    index 0, the ``exclude_items`` (n_items,) and, with ``exclude_seen``, the history's items."""
    n_items = int(model.n_items)
    N = len(es.users)
    topk = np.zeros((N, k), np.int64)
    h_rows, h_items = history_items(seq, es.hist_start, es.hist_end)
    order = np.argsort(h_rows, kind="stable")
    h_rows, h_items = h_rows[order], h_items[order]
    h_off = np.searchsorted(h_rows, np.arange(N + 1))
    gone = torch.from_numpy(np.flatnonzero(exclude_items)) if exclude_items is not None else None
    batch_size = max(1, min(batch_size, SCORES_PER_BATCH // max(n_items, 1)))
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for rows, batch in eval_batches_by_length(seq, es, max_len, batch_size):
                scores = model.score(batch).float()  # (B, n_items)
                if scores.shape != (batch.size, n_items):
                    raise ValueError(f"{type(model).__name__}.score gave shape {tuple(scores.shape)}, expected ({batch.size}, {n_items})")
                if torch.isnan(scores).any():
                    raise ValueError(f"{type(model).__name__}.score produced NaN scores")
                scores = scores.clone()
                scores[:, 0] = float("-inf")
                if gone is not None:
                    scores[:, gone] = float("-inf")
                if exclude_seen:
                    b, p = expand_ranges(h_off[rows], h_off[rows + 1] - h_off[rows])  # (P,) batch row, (P,) pair index
                    scores[torch.from_numpy(b), torch.from_numpy(h_items[p])] = float("-inf")
                vals, idx = torch.topk(scores, min(k, n_items), dim=1)  # (B, k)
                idx[torch.isneginf(vals)] = 0
                topk[rows, : idx.shape[1]] = idx.numpy()
    finally:
        model.train(was)
    return topk


def basket_columns(topk: np.ndarray, t: BasketTargets, n_items: int, ks: list[int]) -> dict[str, np.ndarray]:
    """Per-user Recall/NDCG/PHR/Precision@K over all, repeat and explore targets (module docstring)."""
    out: dict[str, np.ndarray] = {}
    N = len(topk)
    for name, sel in (("", np.ones(len(t.rows), bool)), ("repeat ", t.repeat), ("explore ", ~t.repeat)):
        cols = M.window_columns(topk, t.rows[sel], t.items[sel], n_items, ks, prefix=name)
        for k in ks:
            cols[f"{name}PHR@{k}"] = cols.pop(f"{name}HR@{k}")
        out.update(cols)
        out[f"{name}targets".strip()] = np.bincount(t.rows[sel], minlength=N)[:N].astype(np.int64)
    return out


def validation_metrics(
    model, seq: SequenceData, t: BasketTargets, *, ks: tuple[int, ...], max_len: int, batch_size: int, exclude_seen: bool,
) -> dict[str, float]:
    """Mean Recall/NDCG/PHR/Precision@K (all, repeat, explore) over the users of ``t`` with a
    target: what the trainer early-stops on under ``eval.protocol`` next_basket / next_period, the
    same numbers :func:`evaluate_baskets` gives for that fold (all items are candidates)."""
    topk = recommend_topk(model, seq, t.es, k=max(ks), max_len=max_len, batch_size=batch_size, exclude_seen=exclude_seen)
    cols = basket_columns(topk, t, int(model.n_items), list(ks))
    scored = cols["targets"] > 0
    out = {}
    for m in metric_names(list(ks)):
        v = cols[m][scored]
        v = v[np.isfinite(v)]  # repeat/explore metrics of users without such targets are NaN
        out[m] = float(v.mean()) if len(v) else float("nan")
    return out


def metric_names(ks: list[int]) -> list[str]:
    return [f"{s}{m}@{k}" for s in ("", "repeat ", "explore ") for k in ks for m in ("Recall", "NDCG", "PHR", "Precision")]


def evaluate_baskets(model, seq: SequenceData, split: Split, folds: list[str], cfg, training, *, max_len: int):
    """:class:`~evorec.evaluation.protocols.Evaluation` of ``model`` under ``cfg.protocol``
    (``next_basket`` | ``next_period``): guard, targets, top-K lists, per-user table, summary."""
    from evorec.evaluation.protocols import Evaluation, _aggregate, check_model_training

    check_no_leakage(split, seq)
    check_model_training(seq, split, folds, training)
    n_items = int(model.n_items)
    if n_items != seq.items.size:
        raise InputError(f"the model ranks {n_items - 1} items but the data has {seq.items.size - 1}: vocabularies differ")
    ks = sorted(set(cfg.ks))
    first_seen = item_first_ts(seq)
    parts, per_fold = [], {}
    for name in folds:
        t = basket_targets(seq, split, name, cfg.protocol, period_days=cfg.period_days, exclude_seen=cfg.exclude_seen)
        f = split.folds[name]
        gone = first_seen >= f.cut if cfg.candidates == "known" else None
        topk = recommend_topk(
            model, seq, t.es, k=max(ks), max_len=max_len, batch_size=cfg.batch_size, exclude_seen=cfg.exclude_seen, exclude_items=gone,
        )
        cols = {"fold": np.full(len(t.es.users), name, dtype=object), "user_row": t.es.users, **basket_columns(topk, t, n_items, ks)}
        parts.append(cols)
        per_fold[name] = {
            "cut": f.cut, "users": int(len(t.es.users)), "users_scored": int((cols["targets"] > 0).sum()),
            "target_items": int(len(t.rows)), "repeat_targets": int(t.repeat.sum()), "explore_targets": int((~t.repeat).sum()),
            "repeat_share": float(t.repeat.mean()) if len(t.rows) else float("nan"),
            "repeat_targets_dropped": t.repeat_dropped, "users_left_without_target": t.users_left_without_target,
            "candidates": int(n_items - 1 - (int(gone[1:].sum()) if gone is not None else 0)),
        }
    table = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    names = metric_names(ks)
    scored = table["targets"] > 0
    agg = _aggregate({m: table[m][scored] for m in names}, cfg)
    summary: dict[str, Any] = {
        "protocol": {
            "name": cfg.protocol,
            "targets": "every distinct item of the user's first basket after the cut" if cfg.protocol == "next_basket"
            else f"every distinct item the user bought in the {cfg.period_days:g} days after the cut",
            "baskets": getattr(seq, "basket_source", "basket_id"),
            "split": split.kind, "split_config": split.config, "folds": folds, "ranking": "full", "exclude_seen": cfg.exclude_seen,
            "repeat_targets": "dropped from the evaluation (seen items are not ranked)" if cfg.exclude_seen else "kept and ranked",
            "candidates": "all items" if cfg.candidates == "all" else "items that existed before the fold's cut",
            "max_len": max_len, "model_training": {"set": training.key, "cut": training.cut},
            "confidence_intervals": f"{cfg.confidence:.0%} percentile bootstrap over users, {cfg.bootstrap} resamples, seed {cfg.seed}",
            "per_fold": per_fold,
        },
        "users": int(scored.sum()),
        **agg,
    }
    table["user"] = np.array(seq.users.reverse(table["user_row"] + 1), dtype=object)
    return Evaluation(table=pa.table({k: pa.array(v) for k, v in table.items()}), summary=summary)


def tune_on_validation(
    candidates: list[tuple[str, Callable[[], Any]]], seq: SequenceData, split: Split, cfg, training, *, max_len: int,
    metric: str = "NDCG@10", fold: str = "valid",
) -> tuple[str, dict[str, float]]:
    """(label of the best candidate, {label: validation metric}): each candidate is a label and a
    function giving a fitted model; all are scored on ``fold`` under ``cfg`` (no bootstrap)."""
    quick = cfg.model_copy(update={"bootstrap": 0})
    scores: dict[str, float] = {}
    for label, make in candidates:
        ev = evaluate_baskets(make(), seq, split, [fold], quick, training, max_len=max_len)
        scores[label] = float(ev.summary["metrics"][metric])
        logger.info("validation %s %s: %.4f", label, metric, scores[label])
    best = max(scores, key=lambda k: scores[k])
    return best, scores
