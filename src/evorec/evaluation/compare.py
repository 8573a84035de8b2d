"""Paired comparison of two evaluations of the same users (``evorec compare RUN_A RUN_B``).

Both evaluations must come from the same sequences, split protocol, folds and candidate rule,
so each user's metric in A pairs with the same user's metric in B; anything else is an error
naming the difference (a paired test over different users or protocols would be meaningless).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from evorec.errors import InputError
from evorec.evaluation.stats import holm, paired_test

DEFAULT_METRICS = ("NDCG@10", "HR@10", "MRR")
_SAME = ("split", "split_config", "folds", "exclude_seen", "candidates", "max_len")


def check_comparable(meta_a: dict[str, Any], meta_b: dict[str, Any]) -> None:
    """Raise ValueError if the two evaluations differ in data or protocol."""
    if meta_a.get("sequence_fingerprint") != meta_b.get("sequence_fingerprint"):
        raise InputError(
            f"the runs were evaluated on different data: {meta_a.get('dataset')} "
            f"({str(meta_a.get('sequence_fingerprint'))[:12]}) vs {meta_b.get('dataset')} ({str(meta_b.get('sequence_fingerprint'))[:12]})"
        )
    pa_, pb = meta_a.get("protocol", {}), meta_b.get("protocol", {})
    diff = [k for k in _SAME if pa_.get(k) != pb.get(k)]
    if diff:
        shown = "; ".join(f"{k}: {pa_.get(k)!r} vs {pb.get(k)!r}" for k in diff)
        raise InputError(f"the runs were evaluated under different protocols ({shown}); evaluate both the same way")


def compare(
    table_a: pa.Table, meta_a: dict[str, Any], table_b: pa.Table, meta_b: dict[str, Any],
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS, *, n_boot: int = 10000, seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap and Wilcoxon tests of A - B per metric, Holm-adjusted across metrics."""
    check_comparable(meta_a, meta_b)
    for name, t in (("A", table_a), ("B", table_b)):
        missing = [m for m in metrics if m not in t.column_names]
        if missing:
            known = [c for c in t.column_names if "@" in c or c in ("MRR", "AUC")]
            raise InputError(f"run {name} has no per-user metric {missing[0]!r}; it has {known}")
    key_a = _keys(table_a)
    key_b = _keys(table_b)
    if len(key_a) != len(key_b) or not np.array_equal(np.sort(key_a), np.sort(key_b)):
        only_a = len(np.setdiff1d(key_a, key_b))
        only_b = len(np.setdiff1d(key_b, key_a))
        raise InputError(f"the evaluations cover different users: {only_a} only in A, {only_b} only in B")
    order_a, order_b = np.argsort(key_a, kind="stable"), np.argsort(key_b, kind="stable")
    results = {}
    for m in metrics:
        a = np.asarray(table_a.column(m).to_numpy(zero_copy_only=False), dtype=np.float64)[order_a]
        b = np.asarray(table_b.column(m).to_numpy(zero_copy_only=False), dtype=np.float64)[order_b]
        ok = ~(np.isnan(a) | np.isnan(b))
        results[m] = paired_test(a[ok], b[ok], metric=m, n_boot=n_boot, seed=seed).to_dict()
    adjusted = holm({m: r["p_bootstrap"] for m, r in results.items()})
    for m, r in results.items():
        r["p_bootstrap_holm"] = adjusted[m]
    return {
        "a": {"run": meta_a.get("run"), "model": meta_a.get("model")},
        "b": {"run": meta_b.get("run"), "model": meta_b.get("model")},
        "dataset": meta_a.get("dataset"),
        "protocol": {k: meta_a.get("protocol", {}).get(k) for k in _SAME},
        "users": int(len(key_a)),
        "tests": results,
        "method": f"paired bootstrap ({n_boot} resamples of users, two-sided, shifted to the null), Wilcoxon signed-rank "
        "(zsplit), effect size Cohen's d_z; p-values Holm-adjusted across the metrics",
    }


def _keys(t: pa.Table) -> np.ndarray:
    """One sortable key per row: (fold, user row)."""
    folds = np.asarray(t.column("fold").to_pylist(), dtype=object)
    rows = np.asarray(t.column("user_row").to_numpy(), dtype=np.int64)
    names, codes = np.unique(folds.astype(str), return_inverse=True)
    return codes.astype(np.int64) * (1 << 40) + rows
