"""Health, readiness, Prometheus metrics and what the service can answer now."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from evorec.serving.deps import ReadKey, ServiceDep
from evorec.serving.schemas import Capabilities, Health, Readiness

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}})
def readyz(service: ServiceDep, response: Response) -> Readiness:
    ready = service.readiness()
    response.status_code = 200 if ready.ready else 503
    return ready


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(service: ServiceDep) -> PlainTextResponse:
    """Prometheus text format."""
    return PlainTextResponse(service.metrics.text(), media_type=service.metrics.content_type)


@router.get("/v1/capabilities", response_model=Capabilities)
def capabilities(_: ReadKey, service: ServiceDep) -> Capabilities:
    """What this service can answer now (lets a client, e.g. the dashboard, skip what would be a 503)."""
    return service.capabilities()
