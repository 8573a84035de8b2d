"""Post-hoc calibration of forecast probabilities, with JSON-able state.

- :class:`TemperatureScaler` rescales a model's category logits by one scalar temperature so the
  softmax distribution (``dist``) matches soft targets in cross-entropy.
- :class:`IsotonicCalibrator` maps any score to an engagement probability (``engage``) with a
  monotone step-linear function (isotonic regression).
- :class:`LogisticCalibrator` is Platt scaling of a 1-D score, for monotone-score baselines
  (counts, popularity) where a smooth two-parameter map is enough.

Each follows the estimator rule "constructors store, ``fit`` computes"; ``to_dict`` /
``from_dict`` save and restore the fitted state as plain JSON types so a trained forecaster can
store its calibration next to its weights. Transforms after a round trip are identical because
fitted and restored objects run the same numpy code (no sklearn object is kept for prediction).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression


def _log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise log-softmax of ``logits / temperature`` (N, C); -inf logits stay -inf.

    A row whose logits are all -inf gives an all -inf row (callers map it to zero probability).
    """
    z = logits / temperature  # (N, C)
    finite = np.isfinite(z)
    row_max = np.max(np.where(finite, z, -np.inf), axis=1, keepdims=True)  # (N, 1)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)  # all-masked rows
    shifted = z - row_max  # (N, C), -inf stays -inf
    sum_exp = np.exp(shifted).sum(axis=1, keepdims=True)  # (N, 1), 0 for all-masked rows
    # All-masked rows subtract 0 instead of log(0) = -inf, which would give -inf - -inf = NaN.
    log_norm = np.log(np.where(sum_exp > 0, sum_exp, 1.0))  # (N, 1)
    return shifted - log_norm


def _check_logits(logits: object) -> np.ndarray:
    out = np.asarray(logits, dtype=float)
    if out.ndim != 2:
        raise ValueError(f"logits must be a 2-D (N, C) array, got shape {out.shape}")
    if np.isnan(out).any() or np.isposinf(out).any():
        raise ValueError("logits must not contain NaN or +inf (use -inf to mask a category)")
    return out


def _require_fitted(obj: Any, attr: str) -> None:
    if getattr(obj, attr) is None:
        raise RuntimeError(f"{type(obj).__name__} is not fitted; call fit() first")


def _check_kind(data: dict[str, Any], kind: str) -> None:
    if data.get("kind") != kind:
        raise ValueError(f"expected a dict with kind={kind!r}, got kind={data.get('kind')!r}")


class TemperatureScaler:
    """One scalar temperature T > 0 for category logits: ``transform = softmax(logits / T)``.

    ``fit`` minimises the mean over rows of the cross-entropy ``-sum_c target_c * log
    softmax(logits / T)_c`` over ``log T`` in ``log_t_bounds`` (bounded scalar search). Target
    rows are non-negative weights, normalised to sum to 1; all-zero rows are ignored. Logits may
    be -inf to mask a category: its probability is exactly 0, target mass on a masked category
    is dropped from the loss (it is infinite for every T, so it cannot inform T), and a row
    masked entirely transforms to all zeros rather than NaN.
    """

    def __init__(self, log_t_bounds: tuple[float, float] = (-3.0, 3.0)) -> None:
        self.log_t_bounds = (float(log_t_bounds[0]), float(log_t_bounds[1]))
        self.temperature: float | None = None

    def fit(self, logits: np.ndarray, target: np.ndarray) -> TemperatureScaler:
        """Fit the temperature on logits (N, C) against soft targets (N, C); returns self."""
        logits = _check_logits(logits)
        target = np.asarray(target, dtype=float)
        if target.shape != logits.shape:
            raise ValueError(f"target has shape {target.shape}, expected {logits.shape}")
        if not np.isfinite(target).all() or (target < 0).any():
            raise ValueError("target must be finite and non-negative")
        lo, hi = self.log_t_bounds
        if not lo < hi:
            raise ValueError(f"log_t_bounds must be increasing, got {self.log_t_bounds}")

        row_sum = target.sum(axis=1)  # (N,)
        keep = row_sum > 0
        if not keep.any():
            raise ValueError("target has no row with positive mass")
        logits = logits[keep]  # (N', C)
        weights = target[keep] / row_sum[keep, None]  # (N', C)
        # Only finite logits can carry loss that depends on T.
        weights = np.where(np.isfinite(logits), weights, 0.0)

        def loss(log_t: float) -> float:
            logp = _log_softmax(logits, float(np.exp(log_t)))  # (N', C)
            logp = np.where(weights > 0, logp, 0.0)  # avoid 0 * -inf
            return float(-(weights * logp).sum() / len(logits))

        result = minimize_scalar(loss, bounds=(lo, hi), method="bounded")
        self.temperature = float(np.exp(result.x))
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities (N, C): ``softmax(logits / temperature)``, zeros where logits are -inf."""
        _require_fitted(self, "temperature")
        logits = _check_logits(logits)
        return np.exp(_log_softmax(logits, self.temperature))  # (N, C), exp(-inf) = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state."""
        return {
            "kind": "temperature",
            "log_t_bounds": list(self.log_t_bounds),
            "temperature": self.temperature,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemperatureScaler:
        """Inverse of :meth:`to_dict`."""
        _check_kind(data, "temperature")
        obj = cls(log_t_bounds=tuple(data["log_t_bounds"]))
        obj.temperature = None if data["temperature"] is None else float(data["temperature"])
        return obj


def _flatten_pairs(scores: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels).ravel()
    if x.shape != y.shape:
        raise ValueError(f"scores has {x.size} values but labels has {y.size}")
    if x.size == 0:
        raise ValueError("scores is empty")
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite")
    return x, y.astype(bool)


def _subsample(
    x: np.ndarray, y: np.ndarray, max_points: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` pairs, drawn without replacement by a seeded generator."""
    if x.size <= max_points:
        return x, y
    idx = np.random.default_rng(seed).choice(x.size, size=max_points, replace=False)
    return x[idx], y[idx]


def _fit_pairs(scores: object, labels: object, max_points: int, seed: int) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(x, y, constant) for a calibrator's fit: flattened, subsampled to ``max_points``; the
    constant base rate when ``y`` holds a single class (the shared fallback), else None."""
    if max_points <= 0:
        raise ValueError(f"max_points must be positive, got {max_points}")
    x, y = _flatten_pairs(scores, labels)
    x, y = _subsample(x, y, max_points, seed)
    return x, y, (float(y.mean()) if y.all() or not y.any() else None)


class IsotonicCalibrator:
    """Monotone increasing map from a score to a probability, by isotonic regression.

    ``fit`` flattens scores and bool labels of any (equal) size and fits
    ``IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)``; ``transform`` interpolates
    linearly between the fitted thresholds and clips outside them, returning the input's shape.
    If the fitting labels are all one class the map is the constant base rate (0 or 1), since
    isotonic regression has nothing to order. With more than ``max_points`` pairs, the fit uses
    a random subsample of ``max_points`` pairs drawn with ``seed`` (deterministic).
    """

    def __init__(self, max_points: int = 2_000_000, seed: int = 0) -> None:
        self.max_points = int(max_points)
        self.seed = int(seed)
        self.x_thresholds_: np.ndarray | None = None  # (K,)
        self.y_thresholds_: np.ndarray | None = None  # (K,)
        self.constant_: float | None = None  # set instead of thresholds by the fallback

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> IsotonicCalibrator:
        """Fit on flattened ``scores`` and bool ``labels``; returns self."""
        x, y, self.constant_ = _fit_pairs(scores, labels, self.max_points, self.seed)
        if self.constant_ is not None:
            self.x_thresholds_ = np.array([0.0])
            self.y_thresholds_ = np.array([self.constant_])
            return self
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(x, y.astype(float))
        self.x_thresholds_ = np.asarray(iso.X_thresholds_, dtype=float)
        self.y_thresholds_ = np.asarray(iso.y_thresholds_, dtype=float)
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Probabilities with the shape of ``scores``."""
        _require_fitted(self, "x_thresholds_")
        scores = np.asarray(scores, dtype=float)
        # np.interp clamps to the end values outside the thresholds: out_of_bounds="clip".
        return np.interp(scores, self.x_thresholds_, self.y_thresholds_)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state."""
        fitted = self.x_thresholds_ is not None
        return {
            "kind": "isotonic",
            "max_points": self.max_points,
            "seed": self.seed,
            "constant": self.constant_,
            "x_thresholds": self.x_thresholds_.tolist() if fitted else None,
            "y_thresholds": self.y_thresholds_.tolist() if fitted else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IsotonicCalibrator:
        """Inverse of :meth:`to_dict`."""
        _check_kind(data, "isotonic")
        obj = cls(max_points=data["max_points"], seed=data["seed"])
        obj.constant_ = None if data["constant"] is None else float(data["constant"])
        if data["x_thresholds"] is not None:
            obj.x_thresholds_ = np.asarray(data["x_thresholds"], dtype=float)
            obj.y_thresholds_ = np.asarray(data["y_thresholds"], dtype=float)
        return obj


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: log1p for the non-negative scores of count baselines, and still
    monotone and defined for negative scores."""
    return np.sign(x) * np.log1p(np.abs(x))


class LogisticCalibrator:
    """Platt scaling: ``p = sigmoid(coef * f(score) + intercept)`` with ``f`` a signed log1p.

    The feature is ``sign(s) * log1p(|s|)`` rather than the raw score because the monotone
    baselines it serves score with counts and popularity, which are heavy-tailed: on the log
    scale a two-parameter sigmoid fits them far better, and for scores in [0, 1] it changes
    little. The fit is ``LogisticRegression(C=C)`` with a large ``C`` (near-unpenalised, but
    finite so perfectly separable data cannot diverge). Same single-class fallback (constant
    base rate) and ``max_points`` subsampling as :class:`IsotonicCalibrator`. A negative
    ``coef`` is kept if the data say so (higher score, lower probability).
    """

    def __init__(self, C: float = 1e4, max_points: int = 2_000_000, seed: int = 0) -> None:
        self.C = float(C)
        self.max_points = int(max_points)
        self.seed = int(seed)
        self.coef_: float | None = None
        self.intercept_: float | None = None
        self.constant_: float | None = None

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> LogisticCalibrator:
        """Fit on flattened ``scores`` and bool ``labels``; returns self."""
        x, y, self.constant_ = _fit_pairs(scores, labels, self.max_points, self.seed)
        if self.constant_ is not None:
            self.coef_ = 0.0
            self.intercept_ = None
            return self
        model = LogisticRegression(C=self.C, max_iter=1000)
        model.fit(_signed_log1p(x)[:, None], y)  # (N, 1) design matrix
        self.coef_ = float(model.coef_[0, 0])
        self.intercept_ = float(model.intercept_[0])
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Probabilities with the shape of ``scores``."""
        _require_fitted(self, "coef_")
        scores = np.asarray(scores, dtype=float)
        if self.constant_ is not None:
            return np.full(scores.shape, self.constant_)
        return expit(self.coef_ * _signed_log1p(scores) + self.intercept_)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state."""
        return {
            "kind": "logistic",
            "C": self.C,
            "max_points": self.max_points,
            "seed": self.seed,
            "coef": self.coef_,
            "intercept": self.intercept_,
            "constant": self.constant_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogisticCalibrator:
        """Inverse of :meth:`to_dict`."""
        _check_kind(data, "logistic")
        obj = cls(C=data["C"], max_points=data["max_points"], seed=data["seed"])
        obj.coef_ = None if data["coef"] is None else float(data["coef"])
        obj.intercept_ = None if data["intercept"] is None else float(data["intercept"])
        obj.constant_ = None if data["constant"] is None else float(data["constant"])
        return obj
