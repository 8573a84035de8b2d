"""The bodies the HTTP API takes and returns (pydantic): one model per request and response,
so the OpenAPI document at ``/docs`` describes every answer.

Fields that a response carries only in some cases (an ``explanation`` when asked for, a
segment's ``drift_mix``) default to None and are left out of the JSON when not set: the routes
that return them declare ``response_model_exclude_unset``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evorec.types import Behavior

MIN_TS, MAX_TS = 0, 4_102_444_800  # 1970 .. 2100


# -- events ------------------------------------------------------------------------------------


class EventIn(BaseModel):
    """One behaviour event (the canonical schema)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(None, min_length=1, max_length=128, description="idempotency key: a retry never duplicates")
    user_id: str = Field(..., min_length=1, max_length=256, pattern=r"^[^/]*$", description="no '/': it is part of every user URL")
    item_id: str = Field(..., min_length=1, max_length=256)
    behavior: Behavior = Behavior.VIEW
    ts: int | datetime = Field(..., description="unix seconds or ISO 8601 (UTC if no zone)")

    @field_validator("ts", mode="before")
    @classmethod
    def _no_bool_or_fraction(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("a timestamp is unix seconds or an ISO 8601 string, not true/false")
        if isinstance(v, float) and not v.is_integer():
            raise ValueError(f"timestamp {v} has a fraction: give whole unix seconds")
        return v
    category_id: str | None = Field(None, max_length=256)

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: int | datetime) -> int:
        if isinstance(v, datetime):
            v = int((v if v.tzinfo else v.replace(tzinfo=timezone.utc)).timestamp())
        if not MIN_TS <= int(v) <= MAX_TS:
            raise ValueError(f"timestamp {v} is outside 1970..2100")
        return int(v)


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # raw objects: each is validated on its own (EventIn), so one bad event rejects only itself
    events: list[dict[str, Any]] = Field(..., description="up to max_events_per_request events; each is validated on its own")


class Rejected(BaseModel):
    index: int
    reason: str


class EventsOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[Rejected]


# -- users -------------------------------------------------------------------------------------


class UserSummary(BaseModel):
    user_id: str
    events: int
    first_ts: int
    last_ts: int


class UserEvent(BaseModel):
    item_id: str
    category_id: str | None
    behavior: str
    ts: int


class UserEvents(BaseModel):
    user_id: str
    limit: int
    events: list[UserEvent]


class Forgotten(BaseModel):
    user_id: str
    events_deleted: int
    forecasts_deleted: int


# -- recommendations and explanations ----------------------------------------------------------


class Item(BaseModel):
    item_id: str
    score: float
    category_id: str | None
    repeat: bool = Field(False, description="the user had this item before (a buy-again recommendation)")


class RecommendationsOut(BaseModel):
    user_id: str
    items: list[Item]
    fallback: str | None = Field(description="'popularity' when the user has no usable history, else null")
    history_used: int
    unknown_items_skipped: int
    model_version: str
    mode: str | None = Field(None, description="buy_again | explore | mixed when asked for, else null (exclude_seen decided)")


class ExplainedEvent(BaseModel):
    item_id: str
    category_id: str | None
    behavior: str
    ts: int
    weight: float


class CategoryWeight(BaseModel):
    category_id: str
    weight: float
    share: float


class AgeWeight(BaseModel):
    age: str
    weight: float
    share: float


class ExplanationOut(BaseModel):
    """Which of the user's recent events drove an item's score (evorec.explain)."""

    user_id: str
    item_id: str
    score: float
    method: str
    baseline_score: float | None
    completeness_delta: float | None
    events: list[ExplainedEvent]
    by_category: list[CategoryWeight]
    by_age: list[AgeWeight]
    unknown_items_skipped: int
    model_version: str


# -- interests ---------------------------------------------------------------------------------


class SignalAttributionOut(BaseModel):
    """Why a (horizon, category) of a ranker's forecast scores what it does."""

    score: float
    base: float
    groups: dict[str, float]
    top_signals: dict[str, float]


class CategoryShare(BaseModel):
    category_id: str
    share: float


class ForecastCategory(BaseModel):
    category_id: str
    share: float
    p_engage: float
    explanation: SignalAttributionOut | None = Field(None, description="with explain=true only")


class NewCategory(BaseModel):
    category_id: str
    p_engage: float
    explanation: SignalAttributionOut | None = Field(None, description="with explain=true only")


class Drift(BaseModel):
    label: str
    shift: float | None
    fading_category: str | None


class HorizonForecast(BaseModel):
    categories: list[ForecastCategory]
    new: list[NewCategory] = Field(description="categories new to the user, most likely first")
    p_emerging: float
    drift: Drift


class InterestsOut(BaseModel):
    user_id: str
    current: list[CategoryShare]
    forecasts: dict[str, HorizonForecast] = Field(description="per horizon label, e.g. 30d")


class HorizonAggregate(BaseModel):
    share: float
    expected_users: float


class PopulationCategory(BaseModel):
    category_id: str
    current_share: float
    forecast: dict[str, HorizonAggregate]


class PopulationOut(BaseModel):
    """The population's interests now and forecast, as aggregates only (evorec.forecasting.audience)."""

    cutoff: int
    n_users: int
    no_history: int
    horizons: list[str]
    min_users: int
    withheld: bool
    reason: str | None
    categories: list[PopulationCategory]


class AudienceMember(BaseModel):
    user_id: str
    p_engage: float


class AudienceOut(BaseModel):
    category: str
    horizon: str
    cutoff: int
    n_users: int
    no_history: int
    users: list[AudienceMember]
    expected_reach_top: float
    expected_reach_all: float


class CategoryValue(BaseModel):
    category: str
    value: float


class SegmentProfile(BaseModel):
    segment: int
    name: str
    size: int
    share: float
    top_now: list[CategoryValue]
    top_forecast: list[CategoryValue]
    gains: list[CategoryValue]
    losses: list[CategoryValue]
    center: list[float]
    drift_mix: dict[str, int] | None = None


class SegmentsOut(BaseModel):
    """k-anonymous segments of the forecast population (evorec.forecasting.segments)."""

    method: str
    horizon: str
    cutoff: int
    min_size: int
    n_users: int
    withheld: bool
    reason: str | None
    merged: int
    segments: list[SegmentProfile]


# -- ops and admin -----------------------------------------------------------------------------


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    problems: list[str]
    model_version: str | None


class Capabilities(BaseModel):
    """What this service can answer now (lets a client, e.g. the dashboard, skip what would be a 503)."""

    model_version: str | None
    recommendations: bool
    forecaster: bool
    horizons: list[str]


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str | None = Field(None, description="another run directory to serve (default: reload the current one)")
    forecast_run: str | None = Field(None, description="a forecast run to serve interests from (default: keep the current forecaster)")


class Reloaded(BaseModel):
    model_version: str
    run: str
    forecast_run: str | None = None  # the forecaster served after the reload (None: none loaded)
