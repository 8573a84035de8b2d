"""The HTTP API (FastAPI): events in; recommendations and interest forecasts out; the right to be
forgotten; health, readiness and Prometheus metrics. OpenAPI at ``/docs``.

Every ``/v1`` route needs ``Authorization: Bearer <key>``; keys have a role (``read`` <
``write`` < ``admin``): read keys cannot post events or delete users, admin alone reloads and
deletes (evorec.serving.deps). User ids are pseudonymised with the same keyed HMAC as at ingest
before they touch the store, so the store never holds a raw id. ``/dashboard`` serves a web page
that calls this API from the browser with a read key (see evorec.serving.web).

Where things are: the routes in evorec.serving.routers (one router per resource), their bodies
in evorec.serving.schemas, what they do in evorec.serving.service, what is loaded (model,
forecaster) in evorec.serving.state, the event log in evorec.serving.eventlog. ``create_app``
only assembles them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from evorec.serving.routers import admin, events, interests, ops, recommendations, users
from evorec.serving.service import Service, ServiceError, local_run
from evorec.serving.settings import ServeSettings
from evorec.serving.state import ServiceState
from evorec.serving.web import add_dashboard

__all__ = ["create_app", "local_run"]


def create_app(settings: ServeSettings | None = None, state: ServiceState | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment), serving ``state`` when given
    (else the run, forecast run and event store the settings name)."""
    settings = settings or ServeSettings()
    service = Service.from_settings(settings, state)
    app = FastAPI(title="evorec", version="1", description="Recommendations and interest evolution as a service.")
    app.state.service = service
    app.state.evorec = service.state
    app.state.settings = settings
    stop = service.watch()
    if stop is not None:
        app.state.watch_stop = stop

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > settings.max_body_bytes):
            response = JSONResponse({"detail": f"request body larger than {settings.max_body_bytes} bytes"}, status_code=413)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        service.metrics.observe(getattr(route, "path", "unmatched"), request.method, response.status_code, time.perf_counter() - t0)
        return response

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    for router in (ops.router, events.router, users.router, recommendations.router, interests.router, admin.router):
        app.include_router(router)
    add_dashboard(app)
    return app
