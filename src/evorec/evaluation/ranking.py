"""Full-ranking evaluation: rank every fold user's target among ALL items, batched and vectorised.

Protocol (the defaults are the safe ones; every choice is written into ``RankingResult.protocol``):

- **Candidates.** Every item ``1..n_items-1`` (index 0 is padding and never a candidate).
- **Seen items** (``exclude_seen=True``, the S3-Rec / RecBole protocol): every item anywhere in
  the user's *whole* history before the target (not just the last ``max_len`` events the model
  sees) is removed from the candidates -- **except the target itself**, which always stays a
  candidate with the model's own score, even when the user had consumed it before (a repeat
  purchase is a legitimate next item; dropping it would silently make such users unrankable).
- **Ties are pessimistic.** ``rank = #{candidates c != target : score(c) >= score(target)}``
  (0-based). A model cannot gain from ties: constant scores put the target last, not first. A
  target scored ``-inf`` is ranked last among its candidates. NaN scores are an error.
- **Sampled metrics** (option, never the default): with ``negatives=N`` the target is ranked
  among N negatives per user only. They are drawn from a counter-based hash of
  ``(seed, user row, draw number)``, so they are identical for every model given the seed and
  do not depend on batch size or on which other users are evaluated. Negatives are distinct,
  never the target, never index 0 and, with ``exclude_seen``, never a history item.
  ``negative_sampling="popularity"`` draws in proportion to ``item_counts`` (default: occurrences
  in the evaluated histories, which lie before the targets, so nothing from the future leaks).
  Every metric name then carries the protocol, e.g. ``"NDCG@10 (sampled-uniform-100)"``.

Speed: one ``model.score`` per batch (a single matmul for embedding models), exclusion by an
index-put of ``-inf``, ranks by ``(scores >= target_score).sum(1)``, top-k by ``torch.topk``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from evorec.data.batches import EvalSet, eval_batches_by_length, expand_ranges, history_items
from evorec.errors import InputError, StateError
from evorec.evaluation import metrics as M

logger = logging.getLogger(__name__)

NEG_INF = float("-inf")
TIES = "pessimistic"
Sampling = Literal["uniform", "popularity"]


@dataclass
class RankingResult:
    """Per-user ranks of one fold's targets, plus the protocol that produced them."""

    users: np.ndarray  # (N,) user rows (SequenceData rows)
    target_item: np.ndarray  # (N,) item index of each target
    rank: np.ndarray  # (N,) int64 0-based pessimistic rank among the candidates
    n_candidates: np.ndarray  # (N,) int64 candidates per user, the target included
    topk: np.ndarray | None  # (N, max(ks)) int64 recommended items, best first (full ranking; 0 = empty)
    ks: tuple[int, ...]
    n_items: int  # item vocabulary incl. padding 0
    protocol: dict[str, Any]
    negatives: np.ndarray | None = None  # (N, negatives) the sampled negatives (sampled metrics)
    seconds: float = 0.0  # wall time of the whole call (sampling negatives included)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def suffix(self) -> str:
        """Appended to every metric name: empty for full ranking, ``" (sampled-uniform-100)"`` else."""
        name = self.protocol.get("name", "full")
        return "" if name == "full" else f" ({name})"

    def __len__(self) -> int:
        return len(self.rank)

    def per_user(self, metric: str, k: int | None = None) -> np.ndarray:
        """(N,) values of ``HR``, ``Recall``, ``NDCG``, ``MRR`` or ``MAP`` (at cut-off ``k``)."""
        return M.per_user(metric, self.rank, k)

    def aggregate(self, ks: Iterable[int] | None = None) -> dict[str, float]:
        """``{"HR@10": ..., "NDCG@10": ..., "MRR": ...}`` (means over users), names carry the
        sampling protocol when there is one."""
        return M.summarize(self.rank, self.ks if ks is None else tuple(ks), self.suffix)

    def list_metrics(self, item_counts: np.ndarray, ks: Iterable[int] | None = None) -> dict[str, float]:
        """``Coverage@K``, ``PopBias@K`` and ``Novelty@K`` of the full-ranking top-k lists."""
        if self.topk is None:
            raise InputError("list metrics need a full ranking (sampled metrics keep no top-k lists)")
        out: dict[str, float] = {}
        for k in self.ks if ks is None else ks:
            out[f"Coverage@{k}"] = M.item_coverage(self.topk, self.n_items, k)
            out[f"PopBias@{k}"] = float(np.nanmean(M.popularity_bias(self.topk, item_counts, k))) if len(self) else float("nan")
            out[f"Novelty@{k}"] = float(np.nanmean(M.novelty(self.topk, item_counts, k))) if len(self) else float("nan")
        return out


def _check_ks(ks: Iterable[int], n_candidates: int, what: str) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out:
        raise InputError("ks must name at least one cut-off")
    if any(k < 1 or int(k) != k for k in out):
        raise InputError(f"cut-offs must be positive integers, got {out}")
    if max(out) > n_candidates:
        raise InputError(f"K={max(out)} is larger than the {n_candidates} candidates of {what}; every metric @K would be trivial")
    return out


def seen_pairs(seq, es: EvalSet, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (eval row, item) pairs of each user's whole history, minus index 0 and minus the
    user's own target; sorted by row. Also returns (n_items,) history occurrence counts."""
    rows, items = history_items(seq, es.hist_start, es.hist_end)
    counts = np.bincount(items, minlength=n_items)[:n_items].astype(np.float64) if len(items) else np.zeros(n_items)
    counts[0] = 0.0
    keep = (items > 0) & (items != es.target_item[rows])
    keys = np.unique(rows[keep] * np.int64(n_items) + items[keep])  # sorted: by row, then item
    return keys // n_items, keys % n_items, counts


# ---------------------------------------------------------------------------------------------
# Sampled negatives: a counter-based hash stream per (seed, user row)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, elementwise on uint64 (wrap-around arithmetic is intended)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _uniform01(seed: int, users: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(R, M) floats in [0, 1), a pure function of (seed, user row, draw number)."""
    base = _splitmix64(_splitmix64(np.array([seed], dtype=np.uint64)) ^ _splitmix64(users.astype(np.uint64)))  # (R,)
    with np.errstate(over="ignore"):
        h = _splitmix64(base[:, None] + draws.astype(np.uint64)[None, :])  # (R, M)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sample_negatives(
    users: np.ndarray,
    target_item: np.ndarray,
    n_items: int,
    n_negatives: int,
    *,
    sampling: Sampling = "uniform",
    seed: int = 0,
    forbidden_rows: np.ndarray | None = None,
    forbidden_items: np.ndarray | None = None,
    item_counts: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    max_rounds: int = 1000,
) -> np.ndarray:
    """(N, n_negatives) distinct negative items per row ``j`` (user row ``users[j]``).

    Row j's negatives are the first ``n_negatives`` valid, distinct draws of the stream
    ``hash(seed, users[j], 0), hash(seed, users[j], 1), ...``; a draw is invalid if it is the
    target, or a (``forbidden_rows == j``, ``forbidden_items``) pair (the history). Draws are
    uniform over items 1..n_items-1, or proportional to ``item_counts`` with ``popularity``;
    ``allowed`` (n_items,) bool restricts the draws to those items (e.g. the items that existed at
    a time cut; with every item allowed the stream is the same as without).
    """
    users = np.asarray(users, dtype=np.int64)
    target_item = np.asarray(target_item, dtype=np.int64)
    n = np.int64(n_items)
    N = len(users)
    if sampling == "uniform":
        weight = np.ones(n_items, dtype=np.float64)
    elif sampling == "popularity":
        if item_counts is None:
            raise ValueError("popularity sampling needs item_counts")
        weight = np.asarray(item_counts, dtype=np.float64).copy()
        if len(weight) != n_items or (weight < 0).any():
            raise ValueError(f"item_counts must be (n_items={n_items},) and >= 0")
    else:
        raise InputError(f"negative_sampling must be 'uniform' or 'popularity', got {sampling!r}")
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != (n_items,):
            raise ValueError(f"allowed must be ({n_items},) bool")
        weight = np.where(allowed, weight, 0.0)
    weight[0] = 0.0
    if weight.sum() <= 0:
        raise InputError("no item can be sampled as a negative (all weights are 0)")
    pool_items = np.flatnonzero(weight > 0) if sampling == "uniform" else None  # uniform: index into these
    cdf = np.cumsum(weight[1:]) / weight[1:].sum()  # (n_items-1,) over items 1..n-1

    # Forbidden (row, item) keys: the history pairs plus each row's target.
    f_rows = np.zeros(0, np.int64) if forbidden_rows is None else np.asarray(forbidden_rows, dtype=np.int64)
    f_items = np.zeros(0, np.int64) if forbidden_items is None else np.asarray(forbidden_items, dtype=np.int64)
    fkeys = np.unique(np.concatenate([f_rows * n + f_items, np.arange(N, dtype=np.int64) * n + target_item]))
    # Every row needs enough drawable items left.
    drawable = weight[fkeys % n] > 0 if len(fkeys) else np.zeros(0, bool)
    lost = np.bincount((fkeys // n)[drawable], minlength=N) if N else np.zeros(0, np.int64)
    pool = int((weight > 0).sum()) - lost
    if N and pool.min() < n_negatives:
        j = int(pool.argmin())
        raise InputError(
            f"user row {int(users[j])} has only {int(pool[j])} items left to draw {n_negatives} negatives from"
        )

    def forbidden(keys: np.ndarray) -> np.ndarray:
        if len(fkeys) == 0:
            return np.zeros(keys.shape, bool)
        pos = np.minimum(np.searchsorted(fkeys, keys), len(fkeys) - 1)
        return fkeys[pos] == keys

    chosen = np.zeros((N, n_negatives), dtype=np.int64)
    filled = np.zeros(N, dtype=np.int64)
    active = np.arange(N, dtype=np.int64)
    block = n_negatives + max(16, n_negatives // 2)
    drawn = 0
    for _ in range(max_rounds):
        if len(active) == 0:
            return chosen
        u01 = _uniform01(seed, users[active], np.arange(drawn, drawn + block))  # (R, block)
        drawn += block
        if sampling == "uniform":
            cand = pool_items[np.minimum((u01 * len(pool_items)).astype(np.int64), len(pool_items) - 1)]
        else:
            cand = 1 + np.minimum(np.searchsorted(cdf, u01, side="right"), n_items - 2)
        keys = active[:, None] * n + cand  # (R, block)
        bad = forbidden(keys)
        have = filled[active]
        if have.any():  # already chosen in an earlier round
            taken = np.arange(n_negatives)[None, :] < have[:, None]  # (R, n_neg)
            prev = (active[:, None] * n + chosen[active])[taken]
            bad |= np.isin(keys, prev)
        first = np.unique(keys.ravel(), return_index=True)[1]  # first draw of each (row, item)
        dup = np.ones(keys.size, bool)
        dup[first] = False
        bad |= dup.reshape(keys.shape)
        good = ~bad
        need = n_negatives - have
        cum = good.cumsum(1)  # (R, block)
        take = good & (cum <= need[:, None])
        r, c = np.nonzero(take)  # row-major: each row's draws in stream order
        chosen[active[r], have[r] + cum[r, c] - 1] = cand[r, c]
        filled[active] += take.sum(1)
        active = active[filled[active] < n_negatives]
    raise StateError(f"could not draw {n_negatives} negatives for {len(active)} users in {max_rounds} rounds")


# ---------------------------------------------------------------------------------------------


def rank_targets(
    model,  # untyped: evorec.models.base.Recommender
    seq,  # untyped: evorec.data.sequences.SequenceData
    eval_set: EvalSet,
    *,
    max_len: int,
    batch_size: int = 256,
    exclude_seen: bool = True,
    ks: Sequence[int] = (5, 10, 20),
    device: str | torch.device = "cpu",
    negatives: int | None = None,
    negative_sampling: Sampling = "uniform",
    seed: int = 0,
    item_counts: np.ndarray | None = None,
    return_topk: bool = True,
    exclude_items: np.ndarray | None = None,
    score_hook: Callable[[np.ndarray, torch.Tensor], None] | None = None,
) -> RankingResult:
    """Rank each fold user's target with ``model.score`` (see the module docstring for the protocol).

    ``model`` must already be on ``device``; it is put in eval mode for the call (and restored).
    ``item_counts`` (n_items,) is used only by popularity-sampled negatives. ``return_topk``
    keeps the (N, max(ks)) recommended lists for coverage/popularity/novelty (full ranking only;
    ``torch.topk`` is about a third of the cost). ``batch_size`` bounds memory at
    batch_size x n_items scores; ~256 keeps a batch in cache for the comparison pass.

    ``exclude_items`` (n_items,) bool removes items from every user's candidates (e.g. items that
    did not exist yet at a time cut); a target among them is an error. ``score_hook(rows, scores)``
    sees each batch's raw (B, n_items) scores before any exclusion (read-only; used to derive
    category predictions and AUC impressions from the same forward pass); ``rows`` (B,) int64 are
    the EvalSet rows of the batch. Batches group histories of similar length
    (:func:`~evorec.data.batches.eval_batches_by_length`), so ``rows`` are not contiguous.
    """
    t0 = time.perf_counter()
    n_items = int(model.n_items)
    es = eval_set
    N = len(es.users)
    if batch_size < 1:
        raise InputError("batch_size must be >= 1")
    target = np.asarray(es.target_item, dtype=np.int64)
    if N and (target.min() < 1 or target.max() >= n_items):
        raise ValueError(f"targets must be items 1..{n_items - 1}; got {int(target.min())}..{int(target.max())}")
    ex_rows, ex_items, hist_counts = seen_pairs(seq, es, n_items)
    n_excluded = np.bincount(ex_rows, minlength=N)[:N] if exclude_seen else np.zeros(N, np.int64)
    gone_t = None
    if exclude_items is not None:
        gone = np.asarray(exclude_items, dtype=bool)
        if gone.shape != (n_items,):
            raise ValueError(f"exclude_items must be ({n_items},) bool, got {gone.shape}")
        if N and gone[target].any():
            j = int(np.flatnonzero(gone[target])[0])
            raise ValueError(f"target item {int(target[j])} of user row {int(es.users[j])} is among the excluded items")
        gone = gone.copy()
        gone[0] = False
        if exclude_seen and len(ex_rows):  # do not count an item twice (seen and excluded)
            n_excluded = n_excluded - np.bincount(ex_rows[gone[ex_items]], minlength=N)[:N]
        n_excluded = n_excluded + int(gone.sum())
        gone_t = torch.from_numpy(np.flatnonzero(gone)).to(device)

    sampled = negatives is not None
    if sampled:
        if negatives < 1:
            raise InputError("negatives must be >= 1 (or None for full ranking)")
        ks = _check_ks(ks, negatives + 1, f"sampled ranking with {negatives} negatives")
        name = f"sampled-{negative_sampling}-{negatives}"
        counts = hist_counts if item_counts is None else np.asarray(item_counts, dtype=np.float64)
        neg = sample_negatives(
            es.users, target, n_items, negatives, sampling=negative_sampling, seed=seed,
            forbidden_rows=ex_rows if exclude_seen else None,
            forbidden_items=ex_items if exclude_seen else None,
            item_counts=counts if negative_sampling == "popularity" else None,
            allowed=None if exclude_items is None else ~np.asarray(exclude_items, dtype=bool),
        )  # (N, negatives)
        n_cand = np.full(N, negatives + 1, dtype=np.int64)
        protocol = {
            "ranking": "sampled", "name": name, "negatives": negatives, "negative_sampling": negative_sampling,
            "seed": seed, "exclude_seen": exclude_seen, "candidates": negatives + 1, "ties": TIES,
            "target_in_history": "never a negative", "max_len": max_len,
        }
    else:
        ks = _check_ks(ks, n_items - 1, f"a catalogue of {n_items - 1} items")
        neg = None
        n_cand = (n_items - 1) - n_excluded
        protocol = {
            "ranking": "full", "name": "full", "exclude_seen": exclude_seen, "candidates": n_items - 1,
            "ties": TIES, "target_in_history": "kept as a candidate with its own score", "max_len": max_len,
        }
        if gone_t is not None:
            protocol["candidates"] = n_items - 1 - len(gone_t)
            protocol["excluded_items"] = int(len(gone_t))
    kmax = max(ks)

    rank = np.zeros(N, dtype=np.int64)
    topk = np.zeros((N, kmax), dtype=np.int64) if return_topk and not sampled else None
    ge_buf = None if sampled else torch.empty((min(batch_size, max(N, 1)), n_items), dtype=torch.bool, device=device)
    ex_off = np.searchsorted(ex_rows, np.arange(N + 1))  # rows are sorted: row r's pairs are ex_off[r]:ex_off[r+1]
    ex_items_t = torch.from_numpy(ex_items).to(device)
    target_t = torch.from_numpy(target).to(device)
    neg_t = torch.from_numpy(neg).to(device) if sampled else None
    own = {p.data_ptr() for p in itertools.chain(model.parameters(), model.buffers())}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for sl, batch in eval_batches_by_length(seq, es, max_len, batch_size, device):  # sl: (B,) EvalSet rows
                scores = model.score(batch)  # (B, n_items)
                if scores.shape != (batch.size, n_items):
                    raise ValueError(
                        f"{type(model).__name__}.score gave shape {tuple(scores.shape)}, expected ({batch.size}, {n_items})"
                    )
                # A NaN compares false with everything and would silently flatter the target. One row
                # sum finds candidates cheaply (NaN, or +inf meeting -inf); only those rows are scanned.
                maybe = torch.isnan(scores.sum(1))  # (B,)
                if maybe.any() and torch.isnan(scores[maybe]).any():
                    raise ValueError(f"{type(model).__name__}.score produced NaN scores")
                if scores._base is not None or scores.data_ptr() in own:
                    scores = scores.clone()  # a view of the model's state: never write into it
                if score_hook is not None:
                    score_hook(sl, scores)
                scores[:, 0] = NEG_INF  # padding is never a candidate, whatever the model says
                if gone_t is not None:
                    scores[:, gone_t] = NEG_INF
                sl_t = torch.from_numpy(sl).to(device)
                tgt = target_t[sl_t].unsqueeze(1)  # (B, 1)
                t = scores.gather(1, tgt)  # (B, 1) target scores, taken before any exclusion
                if sampled:
                    cand = scores.gather(1, neg_t[sl_t])  # (B, negatives)
                    r = (cand >= t).sum(1)  # (B,) pessimistic: ties count against the target
                    # (the target is never a negative, so nothing to subtract)
                else:
                    if exclude_seen:
                        b_rows, pairs = expand_ranges(ex_off[sl], ex_off[sl + 1] - ex_off[sl])  # (P,) batch row, (P,) into ex_items
                        scores[torch.from_numpy(b_rows).to(device), ex_items_t[torch.from_numpy(pairs).to(device)]] = NEG_INF  # target never listed
                    ge = torch.ge(scores, t, out=ge_buf[: batch.size])  # (B, n_items), reused buffer
                    r = ge.view(torch.uint8).sum(1, dtype=torch.int32).long() - 1  # (B,) minus the target
                    if topk is not None:
                        vals, idx = torch.topk(scores, kmax, dim=1)  # (B, kmax)
                        idx[torch.isneginf(vals)] = 0  # fewer than kmax candidates: empty slots
                        topk[sl] = idx.cpu().numpy()
                # A target scored -inf ties with every excluded item too: put it last among candidates.
                r = torch.where(torch.isneginf(t.squeeze(1)), torch.from_numpy(n_cand[sl] - 1).to(r.device), r)
                rank[sl] = r.cpu().numpy()
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - t0
    logger.info("ranked %d users over %s in %.2fs (%s)", N, protocol["candidates"], seconds, protocol["name"])
    return RankingResult(
        users=np.asarray(es.users, dtype=np.int64),
        target_item=target,
        rank=rank,
        n_candidates=n_cand.astype(np.int64),
        topk=topk,
        ks=ks,
        n_items=n_items,
        protocol=protocol,
        negatives=neg,
        seconds=seconds,
    )
