"""Behaviour events in."""

from __future__ import annotations

from fastapi import APIRouter

from evorec.serving.deps import ServiceDep, WriteKey
from evorec.serving.schemas import EventsIn, EventsOut

router = APIRouter(tags=["events"])


@router.post("/v1/events", response_model=EventsOut)
def post_events(body: EventsIn, _: WriteKey, service: ServiceDep) -> EventsOut:
    return service.add_events(body)
