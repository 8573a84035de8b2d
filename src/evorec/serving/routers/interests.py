"""Interest forecasts: of one user, of the population, audiences of a category, segments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from evorec.serving.deps import ReadKey, ServiceDep
from evorec.serving.schemas import AudienceOut, InterestsOut, PopulationOut, SegmentsOut

router = APIRouter(tags=["interests"])


@router.get("/v1/users/{user_id}/interests", response_model=InterestsOut, response_model_exclude_unset=True)
def interests(
    user_id: str,
    _: ReadKey,
    service: ServiceDep,
    horizons: Annotated[str | None, Query(description="comma-separated, e.g. 7d,30d (default: all the forecaster has)")] = None,
    top: Annotated[int, Query(ge=1, le=200, description="categories per list")] = 10,
    explain: Annotated[bool, Query(
        description="attach to every listed category the signal groups that drive its score (ranker forecasters)")] = False,
) -> InterestsOut:
    wanted = [x.strip() for x in horizons.split(",") if x.strip()] if horizons else None
    return service.interests(user_id, wanted, top, explain)


@router.get("/v1/population", response_model=PopulationOut)
def population(_: ReadKey, service: ServiceDep, top: Annotated[int, Query(ge=1, le=200, description="categories")] = 10) -> PopulationOut:
    return service.population(top)


@router.get("/v1/audiences", response_model=AudienceOut)
def audiences(
    _: ReadKey,
    service: ServiceDep,
    category: Annotated[str, Query(min_length=1, max_length=256)],
    horizon: Annotated[str, Query()] = "30d",
    top: Annotated[int, Query(ge=1, le=100_000)] = 100,
) -> AudienceOut:
    return service.audience(category, horizon, top)


@router.get("/v1/segments", response_model=SegmentsOut, response_model_exclude_unset=True)
def get_segments(
    _: ReadKey, service: ServiceDep, horizon: Annotated[str, Query()] = "30d", k: Annotated[int, Query(ge=2, le=100)] = 8,
) -> SegmentsOut:
    return service.segments(horizon, k)
