"""The shared next-basket math (evorec.models.nbr): dense and sparse paths agree, hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from evorec.models import nbr


def test_tifu_weights_by_hand():
    # 3 baskets, m = 7 (fewer baskets than groups): every basket is its own group, n_groups = 3.
    # basket i weighs r_b**(2-i) * r_g**(6-i) / 1 / 3
    w = nbr.tifu_weights(np.array([0, 1, 2]), np.array([3, 3, 3]), 0.5, 0.5, 7)
    assert np.allclose(w, [0.5**2 * 0.5**6 / 3, 0.5 * 0.5**5 / 3, 0.5**4 / 3])
    # 5 baskets, m = 2: groups of 2 then 3 (the last group gets the extra basket).
    w = nbr.tifu_weights(np.arange(5), np.full(5, 5), 1.0, 0.5, 2)
    assert np.allclose(w, [0.5 / 2 / 2, 0.5 / 2 / 2, 1 / 3 / 2, 1 / 3 / 2, 1 / 3 / 2])


def test_dense_and_sparse_agree():
    rng = np.random.default_rng(0)
    row = rng.integers(0, 6, 60)
    col = rng.integers(0, 9, 60)
    basket = rng.integers(0, 4, 60)
    n_b = np.full(6, 4)
    d = nbr.tifu_cells(row, basket, col, n_b, 9, 0.9, 0.7, 3)
    s = nbr.tifu_cells(row, basket, col, n_b, 9, 0.9, 0.7, 3, dense=False)
    assert sparse.issparse(s) and np.allclose(d, s.toarray())
    assert np.array_equal(nbr.ptopfreq_cells(row, col, 6, 9), nbr.ptopfreq_cells(row, col, 6, 9, dense=False).toarray())
    for metric in ("cosine", "euclidean"):
        i1, o1 = nbr.nearest(d[:3], d, 2, metric, exclude=np.arange(3))
        i2, o2 = nbr.nearest(s[:3], s, 2, metric, exclude=np.arange(3))
        assert np.array_equal(i1, i2) and np.array_equal(o1, o2)
        assert not (i1 == np.arange(3)[:, None]).any()  # never its own neighbour
    assert np.allclose(nbr.neighbour_mean(d, i1, o1, 2), nbr.neighbour_mean(s, i2, o2, 2).toarray())


def test_nearest_by_hand_and_top_k():
    pool = np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0], [0, 0, 0]])  # row 3 has no history
    idx, ok = nbr.nearest(np.array([[1.0, 0.1, 0]]), pool, 4, "cosine")
    assert list(idx[0, :3]) == [0, 2, 1] and list(ok[0]) == [True, True, True, False]
    assert nbr.top_k(np.array([[0.1, 0.5, 0.5, 0.2]]), 3).tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError, match="cosine, euclidean"):
        nbr.nearest(pool, pool, 1, "manhattan")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_fast_path_matches_the_reference(metric, monkeypatch):
    """Chunks of a few rows and ties everywhere (integer counts over 6 columns: many users share
    a vector): the fast path equals the full stable sort, nearest first, smaller index on ties."""
    rng = np.random.default_rng(1)
    X = (rng.random((400, 6)) < 0.3) * rng.integers(1, 3, (400, 6)).astype(float)
    monkeypatch.setattr(nbr, "CHUNK_CELLS", 1000)  # a chunk of 2-3 rows
    for k in (1, 7, 40, 500):
        for excl in (None, np.arange(400)):
            fast = nbr.nearest(X, X, k, metric, excl)
            ref = nbr.nearest_reference(X, X, k, metric, excl)
            assert np.array_equal(fast[0], ref[0]) and np.array_equal(fast[1], ref[1]), (k, excl is None)
    S = sparse.csr_matrix(X)  # sparse rows (their distances may differ from dense ones in the last bit)
    assert np.array_equal(nbr.nearest(S[:50], S, 9, metric)[0], nbr.nearest_reference(S[:50], S, 9, metric)[0])
