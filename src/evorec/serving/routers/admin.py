"""Administration: swap in another model."""

from __future__ import annotations

from fastapi import APIRouter

from evorec.serving.deps import AdminKey, ServiceDep
from evorec.serving.schemas import Reloaded, ReloadIn

router = APIRouter(tags=["admin"])


@router.post("/v1/admin/reload", response_model=Reloaded)
def reload(_: AdminKey, service: ServiceDep, body: ReloadIn | None = None) -> Reloaded:
    return service.reload(body.run if body else None, body.forecast_run if body else None)
