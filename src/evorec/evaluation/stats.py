"""Bootstrap confidence intervals and paired significance tests over per-user metric vectors.

Pure numpy + scipy. Inputs are the (N,) per-user vectors of :mod:`evorec.evaluation.metrics`
(one value per test user), or several of them stacked as the columns of an (N, M) matrix.

Conventions:

- **Resampling is over users (rows)** with replacement; every column of one call sees the *same*
  resample, so metrics from one run stay consistent with each other (HR and NDCG of a resample
  come from the same users).
- **Reproducible and chunk-independent.** Resample ``r`` draws its row indices from its own
  generator ``np.random.default_rng(SeedSequence(seed).spawn(n_boot)[r])``; the ``chunk`` argument
  only bounds memory (a (chunk, N) float64 count matrix, 64 x 500k rows = 256 MB) and never changes
  which rows are drawn. Integer-valued metrics (hits) give bit-identical means for any ``chunk``;
  real-valued ones agree to floating-point summation order (~1e-16 relative).
- Percentile intervals: ``(alpha / 2, 1 - alpha / 2)`` quantiles of the resampled means.
- Paired tests compare two systems on the same users in the same order, through the per-user
  differences ``d = a - b``: a shift-to-the-null bootstrap p-value, the Wilcoxon signed-rank test
  and Cohen's d_z. :func:`holm` adjusts a family of p-values (several metrics or baselines).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from evorec.errors import InputError

logger = logging.getLogger(__name__)


def _as_matrix(values: np.ndarray, what: str = "values") -> tuple[np.ndarray, bool]:
    """(N, M) float64 view of a (N,) or (N, M) array, and whether the input was 1-D."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{what} must be 1-D (N,) or 2-D (N, M), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{what} is empty (N == 0): cannot bootstrap a mean over no users")
    one_d = arr.ndim == 1
    return (arr[:, None] if one_d else arr), one_d  # (N, M)


def bootstrap_means(
    values: np.ndarray, *, n_boot: int = 1000, seed: int = 0, chunk: int = 64
) -> np.ndarray:
    """Means of ``n_boot`` row resamples (with replacement) of ``values``.

    Args:
        values: (N,) or (N, M) float array; rows are users, columns metrics.
        n_boot: number of resamples.
        seed: seed of the ``SeedSequence`` whose ``n_boot`` children seed one resample each.
        chunk: resamples processed together (memory ~ ``chunk * N * 8`` bytes); does not change
            the drawn rows.

    Returns:
        (n_boot, M) float64 means, or (n_boot,) for 1-D input. All columns share each resample.

    Raises:
        ValueError: N == 0, a shape that is not 1-D/2-D, ``n_boot < 1`` or ``chunk < 1``.
    """
    mat, one_d = _as_matrix(values)
    if n_boot < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n, m = mat.shape
    logger.debug("bootstrap: %d resamples of %d rows x %d columns", n_boot, n, m)
    out = np.empty((n_boot, m), dtype=np.float64)
    # Spawning in pieces yields the same children as one spawn(n_boot): the SeedSequence counts
    # the children it has handed out.
    parent = np.random.SeedSequence(seed)
    counts = np.empty((min(chunk, n_boot), n), dtype=np.float64)  # (chunk, N) reused buffer
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        for r, child in enumerate(parent.spawn(stop - start)):
            idx = np.random.default_rng(child).integers(0, n, size=n)
            counts[r] = np.bincount(idx, minlength=n)
        # mean of a resample = (multiplicity of each row) . values / N; one matmul per chunk
        out[start:stop] = counts[: stop - start] @ mat / n  # (chunk, M)
    return out[:, 0] if one_d else out


def bootstrap_ci(
    values: np.ndarray, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Percentile bootstrap interval ``(lo, hi)`` of the mean of ``values`` over rows.

    ``lo``/``hi`` are the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of
    :func:`bootstrap_means`; floats for (N,) input, (M,) arrays for (N, M) input.
    """
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    means = bootstrap_means(values, n_boot=n_boot, seed=seed)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=0)
    if np.ndim(lo) == 0:
        return float(lo), float(hi)
    return lo, hi


def summarize(
    columns: dict[str, np.ndarray], *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Mean and percentile bootstrap interval of each named per-user column.

    All columns are stacked into one (N, M) matrix and resampled together (same users per
    resample). Returns ``{name: {"mean", "lo", "hi", "n"}}`` in the input order (``n`` is N).

    Raises:
        ValueError: a column that is not 1-D, has a different length than the first column, or
            holds NaN (the message names the column); N == 0.
    """
    if not columns:
        return {}
    names = list(columns)
    arrays = []
    n = None
    for name in names:
        col = np.asarray(columns[name], dtype=np.float64)
        if col.ndim != 1:
            raise ValueError(f"column {name!r} must be 1-D, got shape {col.shape}")
        if n is None:
            n = col.shape[0]
        elif col.shape[0] != n:
            raise ValueError(
                f"column {name!r} has {col.shape[0]} values, expected {n} (length of {names[0]!r})"
            )
        if np.isnan(col).any():
            raise ValueError(f"column {name!r} contains NaN")
        arrays.append(col)
    mat = np.stack(arrays, axis=1)  # (N, M)
    lo, hi = bootstrap_ci(mat, n_boot=n_boot, alpha=alpha, seed=seed)
    means = mat.mean(axis=0)
    return {
        name: {"mean": float(means[j]), "lo": float(lo[j]), "hi": float(hi[j]), "n": int(n)}
        for j, name in enumerate(names)
    }


@dataclass
class PairedResult:
    """Outcome of :func:`paired_test` of system A against system B on one metric.

    ``diff = mean_a - mean_b`` with bootstrap interval ``[diff_lo, diff_hi]`` (level
    ``1 - alpha``, 95% by default); ``relative = mean_a / mean_b - 1`` (NaN if ``mean_b == 0``);
    ``p_bootstrap`` and ``p_wilcoxon`` are two-sided; ``effect_size`` is Cohen's d_z of the
    differences.
    """

    metric: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    diff_lo: float
    diff_hi: float
    relative: float
    p_bootstrap: float
    p_wilcoxon: float
    effect_size: float
    n_boot: int

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain ``dict`` of the fields (JSON-ready apart from NaN/inf floats)."""
        return dataclasses.asdict(self)


def paired_test(
    a: np.ndarray,
    b: np.ndarray,
    *,
    metric: str = "",
    n_boot: int = 10000,
    alpha: float = 0.05,
    seed: int = 0,
) -> PairedResult:
    """Paired comparison of per-user values ``a`` and ``b`` (same users, same order).

    On the differences ``d = a - b``:

    - ``diff_lo``/``diff_hi``: percentile bootstrap interval of ``mean(d)``.
    - ``p_bootstrap``: two-sided, shift to the null: resample ``d - mean(d)`` (same resamples as
      the interval) and take ``(#{|resampled mean| >= |mean(d)|} + 1) / (n_boot + 1)``.
    - ``p_wilcoxon``: ``scipy.stats.wilcoxon(d, zero_method="zsplit")``, two-sided; 1.0 when
      every difference is 0.
    - ``effect_size``: Cohen's d_z = ``mean(d) / std(d, ddof=1)``; 0.0 when every difference is
      0, and +-inf when the differences are a non-zero constant.

    Raises:
        ValueError: ``a``/``b`` not 1-D, of different lengths, N < 2, or holding NaN (the
            message names ``metric``).
    """
    label = f"metric {metric!r}: " if metric else ""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"{label}a and b must be 1-D, got shapes {a.shape} and {b.shape}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{label}a has {a.shape[0]} values but b has {b.shape[0]}")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"{label}a paired test needs at least 2 users, got {n}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError(f"{label}a or b contains NaN")

    d = a - b
    d_mean = float(d.mean())
    # column 0: d (interval of the mean difference); column 1: d shifted to mean 0 (the null)
    boot = bootstrap_means(np.stack([d, d - d_mean], axis=1), n_boot=n_boot, seed=seed)
    lo, hi = np.quantile(boot[:, 0], [alpha / 2, 1 - alpha / 2])
    count = int(np.count_nonzero(np.abs(boot[:, 1]) >= abs(d_mean)))
    p_boot = (count + 1) / (n_boot + 1)

    all_zero = not np.any(d)
    p_wil = 1.0 if all_zero else float(sps.wilcoxon(d, zero_method="zsplit").pvalue)

    sd = float(d.std(ddof=1))
    if all_zero:
        effect = 0.0
    elif sd == 0.0:
        effect = float(np.copysign(np.inf, d_mean))
    else:
        effect = d_mean / sd

    mean_a, mean_b = float(a.mean()), float(b.mean())
    relative = mean_a / mean_b - 1.0 if mean_b != 0.0 else float("nan")
    return PairedResult(
        metric=metric,
        n=int(n),
        mean_a=mean_a,
        mean_b=mean_b,
        diff=mean_a - mean_b,
        diff_lo=float(lo),
        diff_hi=float(hi),
        relative=relative,
        p_bootstrap=float(p_boot),
        p_wilcoxon=p_wil,
        effect_size=effect,
        n_boot=int(n_boot),
    )


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values, keyed and ordered as the input.

    With the m p-values sorted ascending, ``adj_(i) = max_{j <= i} min(1, (m - j) * p_(j))``
    (0-based j): monotone in the raw p-values and capped at 1. Raises ValueError on a NaN or a
    value outside [0, 1] (naming the key).
    """
    names = list(p_values)
    if not names:
        return {}
    p = np.asarray([p_values[k] for k in names], dtype=np.float64)
    for name, value in zip(names, p):
        if not 0.0 <= value <= 1.0:  # also catches NaN
            raise ValueError(f"p-value {name!r} must be in [0, 1], got {value}")
    m = p.shape[0]
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])  # (m,) in ascending-p order
    adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m, dtype=np.float64)
    out[order] = adjusted
    return {name: float(v) for name, v in zip(names, out)}
