"""A user's stored events, and the right to be forgotten."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from evorec.serving.deps import AdminKey, ReadKey, ServiceDep
from evorec.serving.schemas import Forgotten, UserEvents, UserSummary

router = APIRouter(tags=["users"])


@router.get("/v1/users/{user_id}", response_model=UserSummary)
def get_user(user_id: str, _: ReadKey, service: ServiceDep) -> UserSummary:
    return service.user_summary(user_id)


@router.get("/v1/users/{user_id}/events", response_model=UserEvents)
def get_user_events(
    user_id: str, _: ReadKey, service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="the latest N events")] = 1000,
) -> UserEvents:
    return service.user_events(user_id, limit)


@router.delete("/v1/users/{user_id}", response_model=Forgotten)
def forget_user(user_id: str, _: AdminKey, service: ServiceDep) -> Forgotten:
    return service.forget(user_id)
