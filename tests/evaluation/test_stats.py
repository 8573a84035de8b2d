"""Bootstrap intervals and paired tests (evorec.evaluation.stats) against known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from evorec.evaluation.stats import (
    PairedResult,
    bootstrap_ci,
    bootstrap_means,
    holm,
    paired_test,
    summarize,
)

# ---------------------------------------------------------------- bootstrap_means / bootstrap_ci


def test_constant_vector_has_degenerate_interval():
    lo, hi = bootstrap_ci(np.full(100, 0.7), n_boot=200)
    assert isinstance(lo, float) and isinstance(hi, float)
    assert lo == pytest.approx(0.7, abs=1e-12)
    assert hi == pytest.approx(0.7, abs=1e-12)


def test_bernoulli_interval_contains_p_and_has_normal_width():
    n, p = 20000, 0.3
    x = (np.random.default_rng(1).random(n) < p).astype(float)
    lo, hi = bootstrap_ci(x, n_boot=1000, seed=3)
    assert lo < p < hi
    expected = 2 * 1.96 * np.sqrt(p * (1 - p) / n)
    assert (hi - lo) == pytest.approx(expected, rel=0.15)
    assert lo < x.mean() < hi


def test_shapes_and_shared_resamples_across_columns():
    x = np.random.default_rng(0).normal(size=300)
    one = bootstrap_means(x, n_boot=50)
    assert one.shape == (50,)
    two = bootstrap_means(np.stack([x, 2 * x + 1], axis=1), n_boot=50)
    assert two.shape == (50, 2)
    # same rows for every column, and the same rows as the 1-D call with the same seed
    np.testing.assert_allclose(two[:, 0], one, rtol=1e-12)
    np.testing.assert_allclose(two[:, 1], 2 * one + 1, rtol=1e-12)


def test_same_seed_identical_other_seed_differs():
    x = np.random.default_rng(0).normal(size=500)
    a = bootstrap_means(x, n_boot=100, seed=7)
    b = bootstrap_means(x, n_boot=100, seed=7)
    c = bootstrap_means(x, n_boot=100, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_chunk_does_not_change_the_resamples():
    rng = np.random.default_rng(0)
    hits = (rng.random((1000, 3)) < 0.4).astype(float)  # integer-valued: sums are exact
    ref = bootstrap_means(hits, n_boot=130, seed=5, chunk=64)
    for chunk in (1, 7, 130, 1000):
        np.testing.assert_array_equal(bootstrap_means(hits, n_boot=130, seed=5, chunk=chunk), ref)
    real = rng.normal(size=(1000, 2))  # real-valued: equal up to summation order
    ref = bootstrap_means(real, n_boot=130, seed=5, chunk=64)
    np.testing.assert_allclose(bootstrap_means(real, n_boot=130, seed=5, chunk=3), ref, rtol=1e-12)
    # a prefix of resamples does not depend on how many follow
    prefix = bootstrap_means(hits, n_boot=20, seed=5)
    np.testing.assert_array_equal(prefix, bootstrap_means(hits, n_boot=130, seed=5)[:20])


def test_interval_coverage_of_the_true_mean():
    # 200 independent normal samples of size 200 as columns; each column's 95% interval should
    # cover the true mean about 95% of the time (binomial sd over 200 trials ~1.5%).
    true_mean = 1.5
    samples = np.random.default_rng(123).normal(true_mean, 2.0, size=(200, 200))
    lo, hi = bootstrap_ci(samples, n_boot=500, seed=9)
    coverage = np.mean((lo <= true_mean) & (true_mean <= hi))
    assert 0.90 <= coverage <= 0.99


@pytest.mark.parametrize("bad", [np.zeros(0), np.zeros((0, 3))])
def test_empty_input_raises(bad):
    with pytest.raises(ValueError, match="empty"):
        bootstrap_means(bad)


def test_three_dimensional_input_raises():
    with pytest.raises(ValueError, match="shape"):
        bootstrap_ci(np.zeros((2, 2, 2)))


# ---------------------------------------------------------------- summarize


def test_summarize_means_intervals_and_n():
    rng = np.random.default_rng(0)
    hr = (rng.random(400) < 0.5).astype(float)
    ndcg = hr * rng.random(400)
    out = summarize({"HR@10": hr, "NDCG@10": ndcg}, n_boot=300, seed=2)
    assert list(out) == ["HR@10", "NDCG@10"]
    lo, hi = bootstrap_ci(np.stack([hr, ndcg], axis=1), n_boot=300, seed=2)
    for j, (name, col) in enumerate([("HR@10", hr), ("NDCG@10", ndcg)]):
        assert out[name]["mean"] == pytest.approx(col.mean())
        assert out[name]["lo"] == pytest.approx(lo[j])
        assert out[name]["hi"] == pytest.approx(hi[j])
        assert out[name]["lo"] <= out[name]["mean"] <= out[name]["hi"]
        assert out[name]["n"] == 400


def test_summarize_rejects_length_mismatch_naming_the_column():
    with pytest.raises(ValueError, match="'MRR'"):
        summarize({"HR@10": np.ones(5), "MRR": np.ones(4)})


def test_summarize_rejects_nan_naming_the_column():
    with pytest.raises(ValueError, match="'NDCG@10'.*NaN"):
        summarize({"HR@10": np.ones(3), "NDCG@10": np.array([0.1, np.nan, 0.2])})


def test_summarize_empty_dict_and_empty_columns():
    assert summarize({}) == {}
    with pytest.raises(ValueError, match="empty"):
        summarize({"HR@10": np.zeros(0)})


# ---------------------------------------------------------------- paired_test


def test_identical_systems():
    a = np.random.default_rng(0).random(500)
    res = paired_test(a, a.copy(), metric="NDCG@10", n_boot=2000)
    assert isinstance(res, PairedResult)
    assert res.diff == 0.0 and res.diff_lo == 0.0 and res.diff_hi == 0.0
    assert res.p_bootstrap >= 0.9
    assert res.p_wilcoxon == 1.0
    assert res.effect_size == 0.0
    assert res.relative == pytest.approx(0.0)


def test_small_consistent_improvement_is_significant():
    rng = np.random.default_rng(4)
    b = rng.random(2000)
    a = b + 0.01 + rng.normal(0, 0.005, size=2000)
    res = paired_test(a, b, metric="HR@10", n_boot=2000)
    assert res.p_bootstrap < 0.001
    assert res.p_bootstrap == pytest.approx(1 / 2001)  # no null resample comes close
    assert res.p_wilcoxon < 0.001
    assert 0.0 < res.diff_lo < res.diff < res.diff_hi
    assert res.diff == pytest.approx(0.01, abs=0.001)
    assert res.effect_size > 1.0
    assert res.relative == pytest.approx(a.mean() / b.mean() - 1)


def test_same_distribution_is_not_significant():
    rng = np.random.default_rng(11)
    a = rng.normal(0.3, 0.1, size=1000)
    b = rng.permutation(rng.normal(0.3, 0.1, size=1000))
    res = paired_test(a, b, n_boot=2000, seed=1)
    assert res.p_bootstrap > 0.01
    assert res.p_wilcoxon > 0.01
    assert res.diff_lo < 0.0 < res.diff_hi


def test_bootstrap_p_agrees_with_paired_t_test():
    # for a moderate effect on many users the bootstrap and t p-values nearly coincide
    rng = np.random.default_rng(5)
    b = rng.normal(0, 1, size=800)
    a = b + rng.normal(0.06, 1, size=800)
    res = paired_test(a, b, n_boot=10000, seed=0)
    p_t = sps.ttest_rel(a, b).pvalue
    assert 0.001 < p_t < 0.5  # the case is informative
    assert res.p_bootstrap == pytest.approx(p_t, abs=0.02)


def test_effect_size_and_relative_by_hand():
    a = np.array([2.0, 3.0, 4.0])
    b = np.array([1.0, 1.0, 1.0])
    res = paired_test(a, b, n_boot=100)
    # d = [1, 2, 3]: mean 2, sd 1 -> d_z = 2; relative = 3 / 1 - 1
    assert res.effect_size == pytest.approx(2.0)
    assert res.relative == pytest.approx(2.0)
    assert res.n == 3 and res.n_boot == 100
    assert np.isnan(paired_test(a, np.zeros(3), n_boot=10).relative)


def test_constant_nonzero_difference():
    b = np.random.default_rng(0).integers(0, 5, size=50).astype(float)
    res = paired_test(b + 0.5, b, n_boot=500)  # exact in binary: std(d) is exactly 0
    assert res.effect_size == np.inf
    assert res.p_bootstrap == pytest.approx(1 / 501)


def test_to_dict_round_trips_fields():
    res = paired_test(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 2.0]), metric="MRR", n_boot=50)
    d = res.to_dict()
    assert d["metric"] == "MRR" and d["n"] == 3
    assert PairedResult(**d) == res


def test_paired_test_validation_names_the_metric():
    with pytest.raises(ValueError, match="'HR@10'.*5.*4"):
        paired_test(np.ones(5), np.ones(4), metric="HR@10")
    with pytest.raises(ValueError, match="at least 2"):
        paired_test(np.ones(1), np.ones(1), metric="HR@10")
    with pytest.raises(ValueError, match="'MRR'.*NaN"):
        paired_test(np.array([1.0, np.nan]), np.ones(2), metric="MRR")


# ---------------------------------------------------------------- holm


def test_holm_by_hand():
    # sorted: d .005*4=.02, a .01*3=.03, c .03*2=.06, b .04*1=.04 -> running max .02 .03 .06 .06
    out = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert list(out) == ["a", "b", "c", "d"]
    assert out == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})


def test_holm_caps_at_one_and_handles_edge_cases():
    assert holm({"x": 0.5, "y": 0.6}) == {"x": 1.0, "y": 1.0}
    assert holm({"only": 0.2}) == {"only": 0.2}
    assert holm({}) == {}
    with pytest.raises(ValueError, match="'bad'"):
        holm({"ok": 0.1, "bad": float("nan")})
