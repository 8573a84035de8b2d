"""Known-answer tests for evorec.forecasting.metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from evorec.forecasting.metrics import (
    aggregate_ece,
    expected_calibration_error,
    jensen_shannon,
    per_user_forecast_metrics,
    reliability_table,
)

T, F = True, False


def _hand_example() -> dict[str, np.ndarray]:
    """3 users x 5 categories; the expected values are worked out in the tests below."""
    dist = np.array(
        [
            [0.4, 0.3, 0.1, 0.1, 0.1],  # ties 2,3,4 -> order 0,1,2,3,4
            [0.1, 0.3, 0.3, 0.2, 0.1],  # tie 1,2 -> order 1,2,3,0,4
            [0.2, 0.2, 0.2, 0.2, 0.2],
        ]
    )
    engage = np.array(
        [
            [0.9, 0.2, 0.5, 0.0, 0.1],
            [0.0, 0.6, 0.8, 0.3, 0.4],
            [0.1, 0.1, 0.1, 0.1, 0.6],
        ]
    )
    counts = np.array([[2, 0, 1, 0, 0], [0, 0, 4, 0, 1], [0, 0, 0, 0, 0]])
    past = np.array([[5, 1, 0, 0, 0], [3, 2, 0, 1, 2], [1, 0, 0, 0, 0]])
    recent = np.array([[T, T, F, F, F], [T, T, F, T, T], [F, F, F, F, F]])
    return {"dist": dist, "engage": engage, "counts": counts, "past": past, "recent": recent}


def _dcg(ranks: list[int]) -> float:
    return sum(1.0 / math.log2(r + 1) for r in ranks)


def test_hand_computed_example() -> None:
    out = per_user_forecast_metrics(
        **_hand_example(), ks=(5,), recall_ks=(2, 5), emerging_k=2, fading_threshold=0.5
    )
    assert set(out) == {
        "NDCG@5",
        "Recall@2",
        "Recall@5",
        "JSD",
        "Brier",
        "EmergingRecall@2",
        "FadingPrecision",
        "n_events",
        "n_emerging",
    }
    nan = np.nan
    # user 0: relevant at ranks 1 and 3; user 1: at ranks 2 (tie won by index) and 5.
    ndcg = [_dcg([1, 3]) / _dcg([1, 2]), _dcg([2, 5]) / _dcg([1, 2]), nan]
    np.testing.assert_allclose(out["NDCG@5"], ndcg, rtol=1e-12)
    np.testing.assert_allclose(out["NDCG@5"][:2], [0.919721, 0.624051], atol=1e-6)
    np.testing.assert_array_equal(out["Recall@2"], [0.5, 0.5, nan])
    np.testing.assert_array_equal(out["Recall@5"], [1.0, 1.0, nan])
    # Brier: (0.01+0.04+0.25+0+0.01)/5, (0+0.36+0.04+0.09+0.36)/5, (4*0.01+0.36)/5.
    np.testing.assert_allclose(out["Brier"], [0.062, 0.17, 0.08], rtol=1e-12)
    # Emerging: user 0 {2} not in top-2 {0,1}; user 1 {2} in top-2 {1,2}; user 2 none.
    np.testing.assert_array_equal(out["EmergingRecall@2"], [0.0, 1.0, nan])
    # Fading alerts: user 0 {1} correct; user 1 {0,3,4}, 4 engaged -> 2/3; user 2 none.
    np.testing.assert_allclose(out["FadingPrecision"], [1.0, 2.0 / 3.0, nan], rtol=1e-12)
    np.testing.assert_array_equal(out["n_events"], [3.0, 5.0, 0.0])
    np.testing.assert_array_equal(out["n_emerging"], [1.0, 1.0, 0.0])
    # JSD against scipy on the two users with events, NaN for the one without.
    ex = _hand_example()
    for u in range(2):
        ref = jensenshannon(ex["dist"][u], ex["counts"][u] / ex["counts"][u].sum(), base=2) ** 2
        assert out["JSD"][u] == pytest.approx(ref, abs=1e-12)
    assert np.isnan(out["JSD"][2])


def test_default_keys_and_large_k() -> None:
    out = per_user_forecast_metrics(**_hand_example())
    for key in ("NDCG@5", "NDCG@10", "Recall@5", "EmergingRecall@10"):
        assert out[key].shape == (3,)
    # k beyond C means all categories: every emerging category is found.
    np.testing.assert_array_equal(out["EmergingRecall@10"], [1.0, 1.0, np.nan])
    np.testing.assert_allclose(out["NDCG@10"], out["NDCG@5"], equal_nan=True)


def test_fading_threshold_changes_alerts() -> None:
    # At threshold 0.35 user 1's alerts are {0, 3} (both correct); user 0 still {1}.
    out = per_user_forecast_metrics(**_hand_example(), fading_threshold=0.35)
    np.testing.assert_array_equal(out["FadingPrecision"], [1.0, 1.0, np.nan])


def test_jsd_matches_scipy_on_random_rows() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(12, 0.3), size=200)
    q = rng.poisson(1.0, size=(200, 12)).astype(float)
    q[:, 0] += 1  # at least one event per row
    q[rng.random((200, 12)) < 0.3] = 0.0
    q[q.sum(axis=1) == 0, 1] = 1.0
    got = jensen_shannon(p, q)
    ref = np.array([jensenshannon(a, b, base=2) ** 2 for a, b in zip(p, q)])
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert ((got >= 0) & (got <= 1)).all()
    # Disjoint supports give exactly 1 bit.
    assert jensen_shannon(np.array([[1.0, 0.0]]), np.array([[0.0, 3.0]]))[0] == pytest.approx(1.0)


def test_perfect_forecast() -> None:
    rng = np.random.default_rng(1)
    counts = rng.poisson(0.7, size=(50, 9))
    counts[:, 3] += 1  # every user has an event
    rel = counts > 0
    past = rng.poisson(1.0, size=counts.shape)
    out = per_user_forecast_metrics(
        counts / counts.sum(axis=1, keepdims=True),
        rel.astype(float),
        counts,
        past,
        past > 0,
        ks=(1, 3, 5, 10),
        recall_ks=(9,),
    )
    for k in (1, 3, 5, 10):
        np.testing.assert_allclose(out[f"NDCG@{k}"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(out["Recall@9"], 1.0)
    np.testing.assert_allclose(out["JSD"], 0.0, atol=1e-12)
    np.testing.assert_array_equal(out["Brier"], 0.0)
    fading = out["FadingPrecision"]
    np.testing.assert_array_equal(fading[~np.isnan(fading)], 1.0)


def test_users_without_events_get_nan_except_brier() -> None:
    counts = np.zeros((2, 4), dtype=int)
    dist = np.full((2, 4), 0.25)
    engage = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0]])
    recent = np.array([[T, F, F, F], [F, F, F, F]])
    out = per_user_forecast_metrics(dist, engage, counts, np.ones((2, 4)), recent)
    for key in ("NDCG@5", "NDCG@10", "Recall@5", "JSD", "EmergingRecall@10"):
        assert np.isnan(out[key]).all(), key
    np.testing.assert_allclose(out["Brier"], [0.0, 1.25 / 4])
    # A fading alert is still scorable with no events: the category was indeed not engaged.
    np.testing.assert_array_equal(out["FadingPrecision"], [1.0, np.nan])
    np.testing.assert_array_equal(out["n_events"], [0.0, 0.0])


@pytest.mark.parametrize("bad", ["engage", "counts", "past", "recent"])
def test_bad_shapes_name_the_argument(bad: str) -> None:
    ex = _hand_example()
    ex[bad] = ex[bad][:, :4]
    with pytest.raises(ValueError, match=bad):
        per_user_forecast_metrics(**ex)


def test_bad_inputs_raise() -> None:
    ex = _hand_example()
    with pytest.raises(ValueError, match="dist"):
        per_user_forecast_metrics(**{**ex, "dist": ex["dist"][0]})
    with pytest.raises(ValueError, match="counts"):
        per_user_forecast_metrics(**{**ex, "counts": -ex["counts"]})
    with pytest.raises(ValueError, match="ks"):
        per_user_forecast_metrics(**ex, ks=(0,))


def test_ece_hand_computed() -> None:
    # n_bins=10: bin 1 holds (0.1, 0.1) with labels (0, 1): |0.5 - 0.1| * 2/4 = 0.2;
    # bin 9 holds (0.9, 1.0) with labels (1, 1): |1 - 0.95| * 2/4 = 0.025.
    prob = np.array([0.1, 0.1, 0.9, 1.0])
    label = np.array([0, 1, 1, 1])
    assert expected_calibration_error(prob, label, n_bins=10) == pytest.approx(0.225)
    table = reliability_table(prob, label, n_bins=10)
    json.dumps(table)
    assert table["count"] == [0, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table["confidence"][1] == pytest.approx(0.1)
    assert table["accuracy"][1] == pytest.approx(0.5)
    assert table["confidence"][9] == pytest.approx(0.95)
    assert table["accuracy"][0] is None
    assert table["bin_lower"][0] == 0.0 and table["bin_upper"][-1] == 1.0


def test_ece_calibrated_and_overconfident() -> None:
    rng = np.random.default_rng(2)
    prob = rng.random(200_000)
    label = rng.random(200_000) < prob
    assert expected_calibration_error(prob, label) < 0.01
    over = np.full(200_000, 0.9)
    coin = rng.random(200_000) < 0.5
    assert expected_calibration_error(over, coin) == pytest.approx(0.4, abs=0.01)


def test_ece_validation() -> None:
    with pytest.raises(ValueError, match="prob"):
        expected_calibration_error(np.array([0.5, 1.5]), np.array([0, 1]))
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([0.5]), np.array([0, 1]))
    assert np.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_aggregate_ece() -> None:
    ex = _hand_example()
    got = aggregate_ece(ex["engage"], ex["counts"])
    assert got == expected_calibration_error(ex["engage"], ex["counts"] > 0)
    with pytest.raises(ValueError, match="counts"):
        aggregate_ece(ex["engage"], ex["counts"][:2])
