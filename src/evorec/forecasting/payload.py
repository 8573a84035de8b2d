"""What a trained interest forecaster is on disk: :class:`ForecasterPayload`, the content of a
forecast run's forecaster file (``evorec.experiments.runs.ForecastRun`` names and reads it).

It holds the fitted model's own state (each model kind serialises itself: ``Forecaster.state``,
``RankerForecaster.state``, ``FittedBaseline.state``), the experiment config it was trained with,
the fingerprint and location of the prepared sequences, the category vocabulary, and the
population context the baselines and the ranker read at prediction time
(:class:`ForecastContext`). On disk it is a plain dict (``to_dict``), the layout evorec has
always written, so forecasters saved by earlier versions load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evorec.data.sequences import SequenceData
from evorec.forecasting.baselines import Context, FittedBaseline
from evorec.forecasting.forecaster import Forecaster
from evorec.forecasting.ranker import RankerForecaster
from evorec.types import JSONDoc, StateDict

KIND = "evorec-forecaster"
"""The ``kind`` every forecaster file carries (anything else is not one)."""

TrainedForecaster = Forecaster | RankerForecaster | FittedBaseline


@dataclass
class ForecastContext:
    """The population context of the training data a forecaster predicts with."""

    train_limit: int  # events at or after this time were not used to fit anything
    unit: str  # "seconds" | "events"
    transitions: np.ndarray | None = None  # (C, C) row-stochastic category transitions
    steps: dict[int, int] = field(default_factory=dict)  # horizon -> Markov walk length

    @classmethod
    def of(cls, ctx: Context) -> ForecastContext:
        return cls(int(ctx.train_limit), ctx.unit, ctx.transitions, {int(k): int(v) for k, v in ctx.steps.items()})

    def over(self, seq: SequenceData) -> Context:
        """The baselines' :class:`Context` over ``seq`` (the forecaster's training sequences)."""
        t = None if self.transitions is None else np.asarray(self.transitions, dtype=np.float64)
        return Context(seq, self.train_limit, self.unit, t, dict(self.steps))

    def to_dict(self) -> dict[str, Any]:
        import torch

        return {"train_limit": self.train_limit, "unit": self.unit,
                "transitions": None if self.transitions is None else torch.from_numpy(np.asarray(self.transitions)),
                "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ForecastContext:
        t = d.get("transitions")
        return cls(int(d["train_limit"]), d["unit"], None if t is None else np.asarray(t, dtype=np.float64),
                   {int(k): int(v) for k, v in (d.get("steps") or {}).items()})


@dataclass
class ForecasterPayload:
    """A trained forecaster with everything needed to predict from it."""

    model_state: StateDict  # the model's own serialisation (its ``state()``; on disk: "forecaster")
    experiment: JSONDoc  # the forecast experiment config as JSON
    sequence_fingerprint: str  # the prepared sequences it was trained on
    sequences_dir: str  # where those sequences were prepared (a service opens them there)
    categories: list[str]  # category ids (index i + 1)
    context: ForecastContext

    @property
    def model_kind(self) -> str:
        """``neural``, ``ranker`` or ``baseline``."""
        return self.model_state.get("kind", "neural")

    def build_model(self) -> TrainedForecaster:
        """The fitted forecaster, whatever its kind (neural, ranker, a tuned baseline)."""
        kind = self.model_kind
        if kind == "ranker":
            return RankerForecaster.from_state(self.model_state)
        if kind == "baseline":
            return FittedBaseline.from_state(self.model_state)
        return Forecaster.from_state(self.model_state)

    @property
    def dataset(self) -> str | None:
        return (self.experiment.get("data") or {}).get("dataset")

    def to_dict(self) -> dict[str, Any]:
        """The on-disk layout."""
        return {"kind": KIND, "forecaster": self.model_state, "experiment": self.experiment,
                "sequence_fingerprint": self.sequence_fingerprint, "sequences_dir": self.sequences_dir,
                "categories": list(self.categories), "context": self.context.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ForecasterPayload:
        return cls(d["forecaster"], d.get("experiment") or {}, d.get("sequence_fingerprint") or "", d.get("sequences_dir") or "",
                   list(d.get("categories") or []), ForecastContext.from_dict(d["context"]))
