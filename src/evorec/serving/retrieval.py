"""Top-k retrieval over a model's item vectors with FAISS (maximum inner product).

A sequence model scores the next item as ``state @ E.T + b`` (``E`` the (n_items, D) output
embeddings, ``b`` the optional (n_items,) output bias). Folding the bias in as one more dimension
turns that into a plain inner product, which FAISS searches without computing a full score row in
Python::

    item vector  [e_i, b_i]      query  [q, 1]      ->  [q, 1] . [e_i, b_i] = q . e_i + b_i

Two index kinds:

- ``faiss.IndexFlatIP``: exact. It returns the same items and scores (up to float rounding) as the
  brute-force ``torch.topk`` over ``model.score`` that it replaces; the serving tests check this.
- ``faiss.IndexHNSWFlat`` (inner-product metric), built only for catalogues of at least
  ``ann_threshold`` items (default 1,000,000). It is **approximate**: it may miss some of the true
  top-k items, so its results can differ from brute force. Its flat storage doubles as the exact
  index (no second copy of the vectors), which the fallbacks below use.

Filtering (seen items, padding, a category) happens after the search: ask FAISS for
``k + len(exclude) + margin`` candidates, drop the blocked ones, and if fewer than ``k`` survive
widen the search (doubling) up to the whole catalogue. A restrictive allow-mask (few allowed items)
would need a very wide search, so those requests instead score only the allowed items exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np

logger = logging.getLogger(__name__)

ANN_THRESHOLD = 1_000_000


@dataclass
class ItemIndex:
    """Inner-product top-k over ``n_items`` item vectors; item 0 (padding) is never returned.

    Build with :meth:`build`; the constructor only stores. Searches are read-only and may run
    from several threads at once (FAISS releases the GIL while searching).
    """

    flat: faiss.IndexFlat  # exact inner-product index over all vectors (HNSW's own storage when ``ann`` is set)
    ann: faiss.IndexHNSWFlat | None = None  # approximate index, only for very large catalogues
    has_bias: bool = False  # vectors carry the output bias as their last dimension
    margin: int = 16  # extra candidates asked for beyond k + len(exclude)
    exact_fraction: float = 0.1  # an allow-mask admitting at most this share of items is "restrictive"
    ann_max_width: int = 4096  # wider searches than this go to the exact flat index

    @classmethod
    def build(
        cls, vectors: np.ndarray, bias: np.ndarray | None = None, *, ann_threshold: int = ANN_THRESHOLD,
        hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 128, **options,
    ) -> ItemIndex:
        """Index the (n_items, D) item ``vectors`` (row 0 = padding) and their optional (n_items,) ``bias``.

        ``ann_threshold``: build the approximate HNSW index when ``n_items >= ann_threshold``
        (results may then differ from brute force); below it, search is exact.
        """
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2:
            raise ValueError(f"item vectors must be (n_items, D), got shape {v.shape}")
        if bias is not None:
            b = np.asarray(bias, dtype=np.float32).reshape(-1, 1)  # (n_items, 1)
            if b.shape[0] != v.shape[0]:
                raise ValueError(f"bias has {b.shape[0]} rows, vectors {v.shape[0]}")
            v = np.hstack([v, b])  # (n_items, D + 1): the bias as one more dimension
        v = np.ascontiguousarray(v)
        n, d = v.shape
        ann = None
        if n >= ann_threshold:
            ann = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            ann.hnsw.efConstruction = ef_construction
            ann.hnsw.efSearch = ef_search
            ann.add(v)
            flat = faiss.downcast_index(ann.storage)  # the same vectors, searchable exactly
            logger.info("item index: HNSW (approximate) over %d items, dim %d", n, d)
        else:
            flat = faiss.IndexFlatIP(d)
            flat.add(v)
            logger.info("item index: flat inner product (exact) over %d items, dim %d", n, d)
        return cls(flat=flat, ann=ann, has_bias=bias is not None, **options)

    @property
    def n_items(self) -> int:
        return int(self.flat.ntotal)

    @property
    def exact(self) -> bool:
        """True when searches return exactly the brute-force top-k (no approximate index)."""
        return self.ann is None

    def vectors(self) -> np.ndarray:
        """(n_items, D [+1]) the indexed vectors: a read-only view of FAISS's storage, no copy."""
        n, d = self.flat.ntotal, self.flat.d
        return faiss.rev_swig_ptr(self.flat.get_xb(), n * d).reshape(n, d)  # (n_items, d)

    def search(
        self, query: np.ndarray, k: int, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` items for the (D,) ``query`` state: ``(items (<=k,) int64, scores (<=k,) float32)``,
        best first.

        ``exclude``: item indices never returned (e.g. the user's seen items). ``allowed``: an
        (n_items,) bool mask; items where it is False are never returned. Padding (0) is never
        returned. Fewer than ``k`` come back only when fewer than ``k`` items pass the filters.
        Equal scores come back in no particular order (as with ``torch.topk``).
        """
        n = self.n_items
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)  # (1, D)
        if self.has_bias:
            q = np.hstack([q, np.ones((1, 1), np.float32)])  # (1, D + 1): picks up each item's bias
        if q.shape[1] != self.flat.d:
            raise ValueError(f"query has dim {q.shape[1] - self.has_bias}, the index {self.flat.d - self.has_bias}")
        blocked = np.zeros(n, dtype=bool)  # (n_items,)
        blocked[0] = True
        n_excluded = 0
        if exclude is not None and len(exclude):
            ex = np.asarray(exclude, dtype=np.int64)
            blocked[ex[(ex >= 0) & (ex < n)]] = True
            n_excluded = len(ex)
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (n,):
                raise ValueError(f"allowed must be an ({n},) bool mask, got shape {allowed.shape}")
            blocked |= ~allowed
        n_ok = n - int(blocked.sum())
        k = min(int(k), n_ok)
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        need = k + n_excluded + self.margin
        if allowed is not None and n_ok <= max(self.exact_fraction * n, 4 * need):
            return self._exact_subset(q[0], np.flatnonzero(~blocked), k)
        width = min(need, n)
        while True:
            index = self.ann if (self.ann is not None and width <= self.ann_max_width) else self.flat
            scores, items = index.search(q, width)  # (1, width) each; -1 where HNSW found fewer
            items, scores = items[0], scores[0]
            keep = items >= 0
            items, scores = items[keep], scores[keep]
            keep = ~blocked[items]
            if int(keep.sum()) >= k or width >= n:
                return items[keep][:k].astype(np.int64), scores[keep][:k].astype(np.float32)
            width = min(2 * width, n)

    def _exact_subset(self, q: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among ``candidates`` only (a restrictive filter: cheaper than a wide search)."""
        s = self.vectors()[candidates] @ q  # (C,)
        top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
        top = top[np.argsort(-s[top], kind="stable")]  # best first
        return candidates[top].astype(np.int64), s[top].astype(np.float32)
