"""Known-answer tests for evorec.forecasting.calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit, logit, softmax
from sklearn.isotonic import IsotonicRegression

from evorec.forecasting.calibration import (
    IsotonicCalibrator,
    LogisticCalibrator,
    TemperatureScaler,
)
from evorec.forecasting.metrics import expected_calibration_error


def _json_round_trip(obj):
    return type(obj).from_dict(json.loads(json.dumps(obj.to_dict())))


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores pushed towards 0/1 (3x the true logit) and labels ~ Bernoulli(true p)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, size=n)
    return expit(3.0 * logit(p)), rng.random(n) < p


def test_temperature_recovers_two() -> None:
    rng = np.random.default_rng(0)
    logits = 3.0 * rng.normal(size=(2000, 8))
    target = softmax(logits / 2.0, axis=1)
    scaler = TemperatureScaler().fit(logits, target)
    assert scaler.temperature == pytest.approx(2.0, rel=0.1)
    probs = scaler.transform(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs, softmax(logits / scaler.temperature, axis=1), atol=1e-12)


def test_temperature_below_one() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1000, 5))
    scaler = TemperatureScaler().fit(logits, softmax(logits / 0.5, axis=1))
    assert scaler.temperature == pytest.approx(0.5, rel=0.1)


def test_temperature_masked_logits_stay_zero() -> None:
    rng = np.random.default_rng(2)
    logits = 2.0 * rng.normal(size=(500, 6))
    mask = rng.random(logits.shape) < 0.3
    mask[:, 0] = False  # every row keeps a category ...
    mask[7] = True  # ... except row 7, masked entirely
    logits[mask] = -np.inf
    target = np.zeros_like(logits)
    keep = np.arange(len(logits)) != 7
    target[keep] = softmax(logits[keep] / 2.0, axis=1)  # row 7: all-zero target, ignored
    with np.errstate(all="raise"):
        scaler = TemperatureScaler().fit(logits, target)
        probs = scaler.transform(logits)
    assert scaler.temperature == pytest.approx(2.0, rel=0.1)
    assert not np.isnan(probs).any()
    assert (probs[mask] == 0.0).all()
    np.testing.assert_array_equal(probs[7], 0.0)
    np.testing.assert_allclose(probs[keep].sum(axis=1), 1.0)


def test_temperature_ignores_zero_target_rows_and_mass_on_masked() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(300, 4))
    target = softmax(logits / 1.5, axis=1)
    base = TemperatureScaler().fit(logits, target).temperature
    padded_logits = np.vstack([logits, rng.normal(size=(50, 4))])
    padded_target = np.vstack([target, np.zeros((50, 4))])
    assert TemperatureScaler().fit(padded_logits, padded_target).temperature == pytest.approx(base)
    # Target mass on a masked category cannot be fitted: it is dropped, giving a finite T.
    logits[:, 3] = -np.inf
    t = TemperatureScaler().fit(logits, target).temperature
    assert np.isfinite(t) and t > 0


def test_temperature_errors() -> None:
    with pytest.raises(RuntimeError):
        TemperatureScaler().transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="target"):
        TemperatureScaler().fit(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="positive mass"):
        TemperatureScaler().fit(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        TemperatureScaler().fit(np.full((2, 3), np.nan), np.ones((2, 3)))


def test_isotonic_calibrates_overconfident_scores() -> None:
    train_s, train_y = _overconfident(50_000, seed=4)
    test_s, test_y = _overconfident(50_000, seed=5)
    before = expected_calibration_error(test_s, test_y)
    cal = IsotonicCalibrator().fit(train_s, train_y)
    after = expected_calibration_error(cal.transform(test_s), test_y)
    assert before > 0.05
    assert after < before / 3


def test_isotonic_matches_sklearn_and_keeps_shape() -> None:
    scores, labels = _overconfident(5000, seed=6)
    cal = IsotonicCalibrator().fit(scores.reshape(50, 100), labels.reshape(50, 100))
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(scores, labels)
    grid = np.linspace(-0.5, 1.5, 301).reshape(7, 43)  # includes out-of-range scores
    got = cal.transform(grid)
    assert got.shape == (7, 43)
    np.testing.assert_allclose(got, ref.predict(grid.ravel()).reshape(7, 43), atol=1e-12)
    assert ((got >= 0) & (got <= 1)).all()


@pytest.mark.parametrize("cls", [IsotonicCalibrator, LogisticCalibrator])
@pytest.mark.parametrize("value", [False, True])
def test_single_class_fallback(cls, value: bool) -> None:
    scores = np.linspace(0, 1, 40).reshape(4, 10)
    cal = cls().fit(scores, np.full((4, 10), value))
    assert cal.constant_ == float(value)
    out = cal.transform(np.array([[-3.0, 0.2], [0.7, 9.0]]))
    np.testing.assert_array_equal(out, np.full((2, 2), float(value)))
    np.testing.assert_array_equal(_json_round_trip(cal).transform(scores), cal.transform(scores))


def test_isotonic_subsample_path() -> None:
    rng = np.random.default_rng(7)
    scores = rng.random(5000)  # distinct values
    labels = rng.random(5000) < scores
    a = IsotonicCalibrator(max_points=1000, seed=0).fit(scores, labels)
    b = IsotonicCalibrator(max_points=1000, seed=0).fit(scores, labels)
    c = IsotonicCalibrator(max_points=1000, seed=1).fit(scores, labels)
    full = IsotonicCalibrator().fit(scores, labels)
    np.testing.assert_array_equal(a.x_thresholds_, b.x_thresholds_)
    np.testing.assert_array_equal(a.y_thresholds_, b.y_thresholds_)
    assert not np.array_equal(a.x_thresholds_, c.x_thresholds_)
    assert not np.array_equal(a.x_thresholds_, full.x_thresholds_)
    assert np.isin(a.x_thresholds_, scores).all()
    # The subsample fit is still a reasonable calibrator of the same data.
    assert expected_calibration_error(a.transform(scores), labels) < 0.05


def test_logistic_recovers_platt_parameters() -> None:
    rng = np.random.default_rng(8)
    scores = rng.exponential(5.0, size=100_000)  # count-like, heavy-tailed
    labels = rng.random(scores.size) < expit(1.5 * np.log1p(scores) - 2.0)
    cal = LogisticCalibrator().fit(scores, labels)
    assert cal.coef_ == pytest.approx(1.5, abs=0.1)
    assert cal.intercept_ == pytest.approx(-2.0, abs=0.15)
    probs = cal.transform(scores.reshape(100, 1000))
    assert probs.shape == (100, 1000)
    assert expected_calibration_error(probs, labels.reshape(100, 1000)) < 0.02


def test_logistic_subsample_is_deterministic() -> None:
    rng = np.random.default_rng(9)
    scores = rng.exponential(2.0, size=3000)
    labels = rng.random(3000) < 0.3
    a = LogisticCalibrator(max_points=500, seed=3).fit(scores, labels)
    b = LogisticCalibrator(max_points=500, seed=3).fit(scores, labels)
    full = LogisticCalibrator().fit(scores, labels)
    assert (a.coef_, a.intercept_) == (b.coef_, b.intercept_)
    assert (a.coef_, a.intercept_) != (full.coef_, full.intercept_)


def test_round_trips_give_identical_transforms() -> None:
    rng = np.random.default_rng(10)
    logits = rng.normal(size=(200, 5))
    logits[0, 2] = -np.inf
    temp = TemperatureScaler().fit(logits, softmax(logits / 1.7, axis=1))
    np.testing.assert_array_equal(_json_round_trip(temp).transform(logits), temp.transform(logits))
    assert _json_round_trip(temp).temperature == temp.temperature

    scores, labels = _overconfident(3000, seed=11)
    fitted = (IsotonicCalibrator(seed=4), LogisticCalibrator())
    for cal in (c.fit(scores, labels) for c in fitted):
        back = _json_round_trip(cal)
        np.testing.assert_array_equal(back.transform(scores), cal.transform(scores))
        assert back.to_dict() == cal.to_dict()


def test_from_dict_checks_kind_and_unfitted_raise() -> None:
    with pytest.raises(ValueError, match="isotonic"):
        IsotonicCalibrator.from_dict(TemperatureScaler().to_dict())
    for cls in (IsotonicCalibrator, LogisticCalibrator):
        with pytest.raises(RuntimeError):
            cls().transform(np.zeros(3))
        # An unfitted object round-trips too and stays unfitted.
        with pytest.raises(RuntimeError):
            _json_round_trip(cls()).transform(np.zeros(3))
    with pytest.raises(ValueError, match="scores"):
        IsotonicCalibrator().fit(np.array([0.1, np.nan]), np.array([0, 1]))
