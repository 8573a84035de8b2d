"""Ceilings for forecasts of simulated data: what a forecaster would score if it knew the planted
interests (the simulator's own latent state, regenerated from its config)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from evorec.data.sequences import SequenceData
from evorec.data.simulate import SimConfig, interest_oracles
from evorec.forecasting.windows import WindowSamples
from evorec.utils.timeutil import DAY


def simulated_oracles(sim: SimConfig, seq: SequenceData):  # untyped: backtest.OracleFn
    """A function of test samples giving ``oracle_future`` and ``oracle_now`` scores (S, H, C) in
    ``seq``'s category columns (category 0 and categories the log never saw: -inf); see
    :class:`evorec.data.simulate.InterestOracles`. Order-only samples get none."""

    def oracles(samples: WindowSamples) -> dict[str, np.ndarray]:
        if samples.unit != "seconds" or not len(samples):
            return {}
        days = [int(-(-int(h) // DAY)) for h in samples.horizons]
        ids = seq.users.ids.take(pa.array(samples.users, pa.int64())).to_pylist()
        o = interest_oracles(sim, ids, samples.cutoff, days)
        cols = seq.categories.lookup(o.category_ids)
        known = cols > 0
        out = {}
        for name, x in (("oracle_future", o.future), ("oracle_now", o.now)):
            sc = np.full(samples.counts.shape, -np.inf)
            sc[:, :, cols[known]] = x[:, :, known]
            out[name] = sc
        return out

    return oracles
