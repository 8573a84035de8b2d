"""Next-basket math shared by the item-level recommenders (this layer) and the category-level
forecaster (``evorec.forecasting.nbr``, which imports it from here).

Everything works on *cells*: one distinct (row, basket, column) triple of a history, where a row
is a user (or a (user, cutoff) sample), a basket is the row's basket number (0 = oldest) and a
column is an item or a category. Vectors come back dense (categories: a few hundred columns) or
as a ``scipy.sparse.csr_matrix`` (items: tens of thousands of columns, most of them zero).

- **P-TopFreq** (Li et al., "A Next Basket Recommendation Reality Check", TOIS 2023): the number
  of the row's baskets holding each column.
- **TIFU vectors** (Hu et al., SIGIR 2020; the decay rules of the authors' reference code): basket
  ``i`` of ``n`` (oldest first) weighs ``r_b ** (n - 1 - i)``; the baskets are split into ``m``
  groups of consecutive baskets (the first groups get ``floor(n / m)`` baskets, the last ``n mod m``
  groups one more; with ``n < m`` every basket is a group), a group's vector is the mean of its
  weighted baskets, and the row's vector is ``sum_g r_g ** (m - 1 - g) * group_g / n_groups``.
- **Neighbours**: the k nearest pool rows by cosine or Euclidean distance (rows without history
  are never neighbours; a row may be barred from its own list), and the mean of their vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from evorec.errors import InputError


def ptopfreq_cells(row: np.ndarray, col: np.ndarray, n_rows: int, n_cols: int, *, dense: bool = True):
    """(n_rows, n_cols) the number of cells (distinct baskets) per (row, column)."""
    w = np.ones(len(row), np.float64)
    return _assemble(row, col, w, n_rows, n_cols, dense)


def tifu_weights(basket: np.ndarray, n: np.ndarray, r_b: float, r_g: float, m: int) -> np.ndarray:
    """(E,) the TIFU weight of each cell: ``basket`` (E,) its basket number, ``n`` (E,) the number
    of baskets of its row (see the module docstring)."""
    i = np.asarray(basket, np.int64)
    n = np.asarray(n, np.int64)
    small = n < m
    base = np.maximum(n // m, 1)
    extra = np.where(small, 0, n - base * m)  # groups with one basket more (the last ones)
    bound = (m - extra) * base  # first basket index of the larger groups
    g = np.where(small, i, np.where(i < bound, i // base, (m - extra) + (i - bound) // (base + 1)))
    size = np.where(small, 1, np.where(i < bound, base, base + 1))
    n_groups = np.where(small, n, m)
    return np.power(r_b, (n - 1 - i).astype(np.float64)) * np.power(r_g, (m - 1 - g).astype(np.float64)) / size / n_groups


def tifu_cells(
    row: np.ndarray, basket: np.ndarray, col: np.ndarray, n_baskets: np.ndarray, n_cols: int,
    r_b: float, r_g: float, m: int, *, dense: bool = True,
):
    """(n_rows, n_cols) TIFU vectors from cells; ``n_baskets`` (n_rows,) baskets per row."""
    w = tifu_weights(basket, np.asarray(n_baskets)[row], r_b, r_g, m)
    return _assemble(row, col, w, len(n_baskets), n_cols, dense)


def _assemble(row, col, w, n_rows: int, n_cols: int, dense: bool):
    row, col = np.asarray(row, np.int64), np.asarray(col, np.int64)
    if dense:
        return np.bincount(row * n_cols + col, weights=w, minlength=n_rows * n_cols).astype(np.float64).reshape(n_rows, n_cols)
    return sparse.csr_matrix((np.asarray(w, np.float64), (row, col)), shape=(n_rows, n_cols))  # duplicates summed


def _row_sq_norms(x) -> np.ndarray:
    if sparse.issparse(x):
        return np.asarray(x.multiply(x).sum(1)).ravel()
    return (x * x).sum(1)


def _scale_rows(x, s: np.ndarray):
    return sparse.diags(s) @ x if sparse.issparse(x) else x * s[:, None]


def _dense(x) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def distances(query, pool, metric: str) -> np.ndarray:
    """(Q, P) dense distances (smaller is nearer) between dense or sparse rows."""
    if metric == "cosine":
        nq = _scale_rows(query, 1.0 / np.maximum(np.sqrt(_row_sq_norms(query)), 1e-12))
        nc = _scale_rows(pool, 1.0 / np.maximum(np.sqrt(_row_sq_norms(pool)), 1e-12))
        return -_dense(nq @ nc.T)
    if metric == "euclidean":
        return _row_sq_norms(query)[:, None] - 2 * _dense(query @ pool.T) + _row_sq_norms(pool)[None, :]
    raise InputError(f"unknown metric {metric!r}; known: cosine, euclidean")


CHUNK_CELLS = 4_000_000  # distances held at once by :func:`nearest` (32 MB of float64)


def nearest(query, pool, k: int, metric: str, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) indices into ``pool`` of each query row's k nearest pool rows with history, nearest
    first (equal distances: the smaller pool index first), and a (Q, k) validity mask (False past
    the number of candidates). ``exclude`` (Q,): a pool row each query may not take (itself; -1:
    none). Rows may be dense or sparse.

    The fast path of :func:`nearest_reference` (same result, tested): query rows in chunks (the
    full (Q, P) distance matrix of 14,000 users is 1.6 GB), and per chunk the k smallest found
    with ``torch.topk`` over k + 32 candidates, a full sort only for the rows where a tie reaches
    past them."""
    import torch

    Q = query.shape[0]
    idx = np.zeros((Q, k), np.int64)
    ok = np.zeros((Q, k), bool)
    cand = np.flatnonzero(np.asarray(abs(pool).sum(1)).ravel() > 0)
    if not len(cand) or not Q:
        return idx, ok
    pc = pool[cand]
    kk = min(k, len(cand))
    K = min(len(cand), kk + 32)
    step = max(1, CHUNK_CELLS // len(cand))
    for lo in range(0, Q, step):
        hi = min(Q, lo + step)
        d = distances(query[lo:hi], pc, metric)  # (q, Pc)
        n_cand = np.full(hi - lo, len(cand))
        if exclude is not None:
            n_cand -= _exclude(d, cand, np.asarray(exclude[lo:hi], np.int64))
        if K == len(cand):
            top = np.argsort(d, axis=1, kind="stable")[:, :kk]
        else:
            part = torch.topk(torch.from_numpy(d), K, dim=1, largest=False, sorted=False).indices.numpy()  # (q, K) unordered
            vals = np.take_along_axis(d, part, 1)
            order = np.lexsort((part, vals), axis=1)  # by distance, then pool index
            part, vals = np.take_along_axis(part, order, 1), np.take_along_axis(vals, order, 1)
            top = part[:, :kk]
            tie = np.flatnonzero(vals[:, kk - 1] >= vals[:, K - 1])  # the k-th may tie with rows left outside the K
            if len(tie):
                top[tie] = _first_by_index(d[tie], part[tie], vals[tie], kk)
        idx[lo:hi, :kk] = cand[top]
        ok[lo:hi, :kk] = np.arange(kk)[None, :] < n_cand[:, None]
    return idx, ok


def _first_by_index(d: np.ndarray, part: np.ndarray, vals: np.ndarray, kk: int) -> np.ndarray:
    """(q, kk) for rows whose k-th distance t ties past the candidates: the candidates nearer than
    t (all of them are candidates, already in (distance, index) order), then the smallest indices
    of the whole row at distance exactly t. ``d`` (q, P) distances, ``part``/``vals`` (q, K)
    sorted candidates and their distances."""
    t = vals[:, kk - 1]
    n_less = (vals[:, :kk] < t[:, None]).sum(1)  # (q,)
    out = part[:, :kk].copy()
    r, c = np.nonzero(d == t[:, None])  # row-major: each row's ties in index order
    rank = np.arange(len(r)) - np.searchsorted(r, np.arange(len(d)))[r]  # 0-based rank among the row's ties
    keep = rank < kk - n_less[r]
    out[r[keep], n_less[r[keep]] + rank[keep]] = c[keep]
    return out


def _exclude(d: np.ndarray, cand: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """Set each row's excluded pool row (if it is a candidate) to +inf in ``d`` (q, Pc); (q,) bool: was one."""
    pos = np.searchsorted(cand, exclude)
    hit = (exclude >= 0) & (pos < len(cand)) & (cand[np.minimum(pos, len(cand) - 1)] == exclude)
    d[np.flatnonzero(hit), pos[hit]] = np.inf  # a user is never its own neighbour
    return hit


def nearest_reference(query, pool, k: int, metric: str, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The plain definition of :func:`nearest`: every distance at once, a full stable sort."""
    Q = query.shape[0]
    idx = np.zeros((Q, k), np.int64)
    ok = np.zeros((Q, k), bool)
    cand = np.flatnonzero(np.asarray(abs(pool).sum(1)).ravel() > 0)
    if not len(cand) or not Q:
        return idx, ok
    d = distances(query, pool[cand], metric)
    n_cand = np.full(Q, len(cand))
    if exclude is not None:
        n_cand -= _exclude(d, cand, np.asarray(exclude, np.int64))
    kk = min(k, len(cand))
    idx[:, :kk] = cand[np.argsort(d, axis=1, kind="stable")[:, :kk]]
    ok[:, :kk] = np.arange(kk)[None, :] < n_cand[:, None]
    return idx, ok


def neighbour_mean(vectors, idx: np.ndarray, ok: np.ndarray, k: int):
    """(Q, C) mean of the first ``k`` valid neighbours' rows of ``vectors`` (the pool); dense
    for a dense pool, sparse for a sparse one."""
    kk = min(k, idx.shape[1])
    sel = ok[:, :kk]
    Q = len(idx)
    w = sel / np.maximum(sel.sum(1, keepdims=True), 1)  # (Q, kk)
    W = sparse.csr_matrix((w.ravel(), idx[:, :kk].ravel(), np.arange(0, Q * kk + 1, kk)), shape=(Q, vectors.shape[0]))
    out = W @ vectors
    return out.tocsr() if sparse.issparse(out) else np.asarray(out)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) column indices of each row's k largest scores, best first (equal scores: the smaller index first among
    those kept)."""
    s = np.asarray(scores)
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.tile(np.arange(s.shape[1]), (len(s), 1))
    v = np.take_along_axis(s, part, 1)
    order = np.lexsort((part, -v), axis=1)
    return np.take_along_axis(part, order, 1)


# ---------------------------------------------------------------------------------------------
# Baskets of a batch or of the training events, as cells


SECONDS_PER_DAY = 86400


@dataclass
class Cells:
    """Distinct (row, basket, item) cells of some histories; baskets renumbered 0..n-1 per row
    (0 = the oldest basket kept), in time order."""

    row: np.ndarray  # (E,) int64
    basket: np.ndarray  # (E,) int64
    item: np.ndarray  # (E,) int64
    ts: np.ndarray  # (E,) int64 latest time of the item's lines in the basket
    n_baskets: np.ndarray  # (R,) int64 baskets per row
    basket_ts: np.ndarray  # (R, max baskets) int64 time of each basket (its latest line), 0 past n_baskets


def basket_cells(row: np.ndarray, basket_key: np.ndarray, item: np.ndarray, ts: np.ndarray, n_rows: int) -> Cells:
    """Cells from flat events: ``basket_key`` orders a row's baskets (any non-decreasing numbering,
    e.g. ``SequenceData.basket``); events with item 0 (unknown) are left out."""
    row, key, item, ts = (np.asarray(a, np.int64) for a in (row, basket_key, item, ts))
    ok = item > 0
    row, key, item, ts = row[ok], key[ok], item[ok], ts[ok]
    if not len(row):
        z = np.zeros(0, np.int64)
        return Cells(z, z, z, z, np.zeros(n_rows, np.int64), np.zeros((n_rows, 1), np.int64))
    key = key - key.min()
    span = np.int64(key.max() + 1)
    rb, inv = np.unique(row * span + key, return_inverse=True)  # distinct (row, basket), sorted
    rb_row = rb // span
    first = np.searchsorted(rb_row, np.arange(n_rows))  # first (row, basket) of each row
    n_baskets = np.bincount(rb_row, minlength=n_rows).astype(np.int64)
    b_of = np.arange(len(rb)) - first[rb_row]  # (RB,) 0-based basket number within the row
    b_ts = np.zeros(len(rb), np.int64)
    np.maximum.at(b_ts, inv.ravel(), ts)
    basket_ts = np.zeros((n_rows, max(int(n_baskets.max()), 1)), np.int64)
    basket_ts[rb_row, b_of] = b_ts
    basket = b_of[inv.ravel()]
    n_items = np.int64(item.max() + 1)
    nb = np.int64(basket.max() + 1)
    cell, cinv = np.unique((row * nb + basket) * n_items + item, return_inverse=True)
    c_ts = np.zeros(len(cell), np.int64)
    np.maximum.at(c_ts, cinv.ravel(), ts)
    return Cells(row=cell // (nb * n_items), basket=(cell // n_items) % nb, item=cell % n_items, ts=c_ts,
                 n_baskets=n_baskets, basket_ts=basket_ts)


def batch_cells(batch) -> Cells:  # untyped: evorec.types.SequenceBatch
    """Cells of a batch's histories: its ``baskets`` (the data's basket numbers) where it has them,
    else a user's events of one day (UTC) form a basket."""
    items = batch.items.cpu().numpy()
    mask = batch.mask.cpu().numpy() & (items > 0)
    ts = batch.timestamps.cpu().numpy()
    key = batch.baskets.cpu().numpy() if batch.baskets is not None else ts // SECONDS_PER_DAY
    r, c = np.nonzero(mask)
    return basket_cells(r, key[r, c], items[r, c], ts[r, c], items.shape[0])


def training_cells(view) -> tuple[Cells, np.ndarray]:  # untyped: evorec.data.batches.TrainView
    """(cells of every user's training part, (n_users,) user rows): rows are user rows."""
    seq = view.seq
    start = np.asarray(seq.offsets[:-1], np.int64)
    lengths = np.maximum(np.asarray(view.end, np.int64) - start, 0)
    user = np.repeat(np.arange(len(start), dtype=np.int64), lengths)
    pos = np.repeat(start - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    if not len(pos):
        return basket_cells(user, user, user, user, len(start)), np.arange(len(start))
    basket = np.asarray(seq.basket)[pos]
    return basket_cells(user, basket, np.asarray(seq.item)[pos], np.asarray(seq.ts)[pos], len(start)), np.arange(len(start))
