"""The HTTP API (FastAPI): events in; recommendations out; the right to be forgotten; health,
readiness and Prometheus metrics. OpenAPI at ``/docs``.

Every ``/v1`` route needs ``Authorization: Bearer <key>``; keys have a role (``read`` <
``write`` < ``admin``): read keys cannot post events or delete users, admin alone reloads and
deletes. User ids are pseudonymised with the same keyed HMAC as at ingest before they touch the
store, so the store never holds a raw id. ``/dashboard`` serves a web page that calls this API
from the browser with a read key (see evorec.serving.web).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evorec.serving.settings import ServeSettings
from evorec.serving.state import RECOMMEND_MODES, NoHistory, ServiceState, UnknownCategory, UnknownItem
from evorec.serving.store import ROLES, EventStore
from evorec.serving.web import add_dashboard
from evorec.types import Behavior
from evorec.utils.privacy import Pseudonymizer
from evorec.utils.tracking import download_run, is_artifact_uri

logger = logging.getLogger(__name__)

MIN_TS, MAX_TS = 0, 4_102_444_800  # 1970 .. 2100


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

    events: list[dict[str, Any]] = Field(..., description="up to max_events_per_request events; each is validated on its own")


class Rejected(BaseModel):
    index: int
    reason: str


class EventsOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[Rejected]


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str | None = Field(None, description="another run directory to serve (default: reload the current one)")


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


def local_run(run: str | None) -> str | None:
    """The run to load: a local path as given, or a run logged to MLflow (``runs:/ID/run``,
    ``mlflow-artifacts:/...``: needs ``evorec[tracking]``; server from ``EVOREC_MLFLOW_URI``)
    downloaded once into a fresh temporary folder (``TMPDIR``: writable also on a read-only root)."""
    if not run or not is_artifact_uri(run):
        return run
    import tempfile

    local = download_run(run, tempfile.mkdtemp(prefix="evorec-mlflow-run-"))
    logger.info("serving %s, downloaded from MLflow into %s", run, local)
    return str(local)


def create_app(settings: ServeSettings | None = None, state: ServiceState | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    if state is None:
        state = ServiceState(EventStore(settings.db_url), local_run(settings.run), settings.history_len, settings.forecast_run)
    pseudo = Pseudonymizer.from_environment() if settings.pseudonymize else None
    registry = CollectorRegistry()
    requests = Counter("evorec_requests_total", "HTTP requests", ["route", "method", "status"], registry=registry)
    latency = Histogram(
        "evorec_request_seconds", "request latency", ["route"], registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    )
    events_total = Counter("evorec_events_total", "events received", ["outcome"], registry=registry)
    model_info = Gauge("evorec_model_info", "the model being served (value 1)", ["version"], registry=registry)

    app = FastAPI(title="evorec", version="1", description="Recommendations and interest evolution as a service.")
    app.state.evorec = state
    app.state.settings = settings

    def set_model_gauge() -> None:
        model_info.clear()
        if state.model is not None:
            model_info.labels(version=state.model.version).set(1)

    set_model_gauge()
    if settings.watch_seconds > 0 and state.model is not None:
        app.state.watch_stop = state.watch(settings.watch_seconds, on_swap=set_model_gauge)

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):
        t0 = time.perf_counter()
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > settings.max_body_bytes):
            response = JSONResponse({"detail": f"request body larger than {settings.max_body_bytes} bytes"}, status_code=413)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        requests.labels(route=name, method=request.method, status=str(response.status_code)).inc()
        latency.labels(route=name).observe(time.perf_counter() - t0)
        return response

    def uid(raw: str) -> str:
        return pseudo(raw) if pseudo is not None else raw

    def role_at_least(needed: str):
        def check(request: Request) -> str:
            auth = request.headers.get("authorization", "")
            if not auth.lower().startswith("bearer ") or not auth[7:].strip():
                raise HTTPException(401, "missing API key: send Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})
            role = state.store.role_of(auth[7:].strip())
            if role is None:
                raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
            if ROLES.index(role) < ROLES.index(needed):
                raise HTTPException(403, f"this key's role ({role}) cannot do this; it needs {needed}")
            return role

        return check

    read, write, admin = (Depends(role_at_least(r)) for r in ROLES)

    def model_or_503():
        m = state.model
        if m is None:
            raise HTTPException(503, "no model loaded (start with --run RUN_DIR or POST /v1/admin/reload)")
        return m

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        problems = []
        if state.model is None:
            problems.append("no model loaded")
        try:
            state.store.ping()
        except Exception as exc:  # noqa: BLE001 - any store failure means not ready
            problems.append(f"event store unreachable: {exc}")
        body = {"ready": not problems, "problems": problems, "model_version": state.model.version if state.model else None}
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/capabilities", tags=["ops"])
    def capabilities(_: str = read) -> dict[str, Any]:
        """What this service can answer now (lets a client, e.g. the dashboard, skip what would be a 503)."""
        m, fc = state.model, state.forecast
        return {
            "model_version": m.version if m is not None else None,
            "recommendations": m is not None,
            "forecaster": fc is not None,
            "horizons": list(fc.population.labels) if fc is not None and fc.population is not None else [],
        }

    @app.post("/v1/events", response_model=EventsOut, tags=["events"])
    def post_events(body: EventsIn, _: str = write) -> EventsOut:
        if len(body.events) > settings.max_events_per_request:
            raise HTTPException(413, f"{len(body.events)} events in one request; the limit is {settings.max_events_per_request}")
        rows, index, rejected = [], [], []
        for i, raw in enumerate(body.events):
            try:
                e = EventIn.model_validate(raw)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(x) for x in err.get("loc", ())) or "event"
                rejected.append(Rejected(index=i, reason=f"{where}: {err.get('msg')}"))
                continue
            rows.append({"event_id": e.event_id, "user_id": uid(e.user_id), "item_id": e.item_id, "category_id": e.category_id,
                         "behavior": e.behavior.value, "ts": e.ts})
            index.append(i)
        inserted, dup = state.store.add_events(rows) if rows else (0, [])
        events_total.labels(outcome="accepted").inc(inserted)
        events_total.labels(outcome="duplicate").inc(len(dup))
        events_total.labels(outcome="rejected").inc(len(rejected))
        return EventsOut(accepted=inserted, duplicates=len(dup), rejected=rejected)

    @app.get("/v1/users/{user_id}", tags=["users"])
    def get_user(user_id: str, _: str = read) -> dict[str, Any]:
        s = state.store.user_summary(uid(user_id))
        if s is None:
            raise HTTPException(404, "unknown user (no events stored)")
        return {"user_id": user_id, **s}

    @app.get("/v1/users/{user_id}/events", tags=["users"])
    def get_user_events(user_id: str, _: str = read, limit: int = Query(1000, ge=1, le=10_000, description="the latest N events")) -> dict[str, Any]:
        events = state.user_events(uid(user_id), limit)
        if not events:
            raise HTTPException(404, "unknown user (no events stored)")
        return {"user_id": user_id, "limit": limit, "events": events}

    @app.get("/v1/users/{user_id}/recommendations", response_model=RecommendationsOut, tags=["recommendations"])
    def recommendations(
        user_id: str,
        _: str = read,
        k: int = Query(10, ge=1, description="how many items"),
        exclude_seen: bool | None = Query(None, description="leave out items the user already interacted with (default true; not with mode)"),
        category: str | None = Query(None, description="only items of this category"),
        mode: str | None = Query(
            None, description="buy_again: only items the user had before; explore: only items new to the user; mixed: both, in the "
            "model's order (a repeat-aware model such as trex ranks the due repeats first). Replaces exclude_seen",
        ),
    ) -> RecommendationsOut:
        if mode is not None and mode not in RECOMMEND_MODES:
            raise HTTPException(422, f"unknown mode {mode!r}; valid modes: {', '.join(RECOMMEND_MODES)}")
        if mode is not None and exclude_seen is not None:
            raise HTTPException(422, f"mode={mode} decides which seen items are listed: leave out exclude_seen")
        m = model_or_503()
        if k > settings.max_k:
            raise HTTPException(422, f"k={k} is larger than the limit {settings.max_k}")
        history = state.store.recent(uid(user_id), m.history_len * 4)
        try:
            res = m.recommend(history, k, exclude_seen=True if exclude_seen is None else exclude_seen, category=category, mode=mode)
        except UnknownCategory as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        return RecommendationsOut(user_id=user_id, **res)

    @app.get("/v1/users/{user_id}/explanations", tags=["recommendations"])
    def explanations(
        user_id: str,
        _: str = read,
        item_id: str = Query(..., min_length=1, max_length=256, description="the recommended item to explain"),
        method: str = Query("auto", pattern="^(auto|integrated_gradients|occlusion)$"),
        steps: int = Query(32, ge=4, le=256, description="integrated-gradients steps"),
    ) -> dict[str, Any]:
        m = model_or_503()
        history = state.store.recent(uid(user_id), m.history_len * 4)
        if not history:
            raise HTTPException(404, "unknown user (no events stored)")
        try:
            return {"user_id": user_id, **m.explain(history, item_id, method=method, steps=steps)}
        except UnknownItem as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        except NoHistory as exc:
            raise HTTPException(422, str(exc)) from None

    def forecast_or_503():
        if state.forecast is None:
            raise HTTPException(503, "no interest forecaster loaded (start with EVOREC_SERVE_FORECAST_RUN=RUN_DIR)")
        return state.forecast_synced()  # users forgotten through any replica are gone from it

    @app.get("/v1/users/{user_id}/interests", tags=["interests"])
    def interests(
        user_id: str,
        _: str = read,
        horizons: str | None = Query(None, description="comma-separated, e.g. 7d,30d (default: all the forecaster has)"),
        top: int = Query(10, ge=1, le=200, description="categories per list"),
        explain: bool = Query(False, description="attach to every listed category the signal groups that drive its score (ranker forecasters)"),
    ) -> dict[str, Any]:
        from evorec.forecasting.drift import drift

        fc = forecast_or_503()
        history = state.store.recent(uid(user_id), 100_000)
        if not history:
            raise HTTPException(404, "unknown user (no events stored)")
        now = max(int(time.time()), int(history[-1].ts) + 1)
        wanted = [x.strip() for x in horizons.split(",") if x.strip()] if horizons else None
        try:
            uf = fc.user(history, wanted, now)
        except KeyError as exc:
            raise HTTPException(422, str(exc.args[0])) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        cats = uf.categories

        def top_of(v, extra=None):
            order = [int(c) for c in (-v).argsort() if int(c) > 0][:top]
            return [{"category_id": cats[c], "share": float(v[c]), **({k: float(a[c]) for k, a in (extra or {}).items()})} for c in order]

        out = {"user_id": user_id, "current": top_of(uf.current[0]), "forecasts": {}}
        p_em = uf.p_emerging()[0]
        for j, label in enumerate(uf.labels):
            d = drift(uf, label).to_pylist()[0]
            out["forecasts"][label] = {
                "categories": top_of(uf.dist[0, j], {"p_engage": uf.engage[0, j]}),
                "new": [{"category_id": cats[c], "p_engage": float(uf.engage[0, j, c])} for c in uf.new_list(0, j, top)],
                "p_emerging": float(p_em[j]),
                "drift": {"label": d["label"], "shift": d["shift"], "fading_category": d.get("fading_category")},
            }
        if explain:
            index = {c: i for i, c in enumerate(cats)}
            pairs = [(label, index[e["category_id"]]) for label, f in out["forecasts"].items() for e in f["categories"] + f["new"]]
            try:
                why = fc.explain(history, now, pairs)
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
            for label, f in out["forecasts"].items():
                for e in f["categories"] + f["new"]:
                    e["explanation"] = why[(label, index[e["category_id"]])].to_dict()
        return out

    @app.get("/v1/population", tags=["interests"])
    def population(_: str = read, top: int = Query(10, ge=1, le=200, description="categories")) -> dict[str, Any]:
        return forecast_or_503().interests(top)

    @app.get("/v1/audiences", tags=["interests"])
    def audiences(
        _: str = read,
        category: str = Query(..., min_length=1, max_length=256),
        horizon: str = Query("30d"),
        top: int = Query(100, ge=1, le=100_000),
    ) -> dict[str, Any]:
        from evorec.forecasting.audience import audience

        fc = forecast_or_503()
        try:
            fc.population.horizon_index(horizon)
        except KeyError as exc:  # a bad parameter, not a missing resource
            raise HTTPException(422, str(exc.args[0])) from None
        try:
            return audience(fc.population, category, horizon, top)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        except ValueError as exc:  # a horizon that is not one
            raise HTTPException(422, str(exc)) from None

    @app.get("/v1/segments", tags=["interests"])
    def get_segments(_: str = read, horizon: str = Query("30d"), k: int = Query(8, ge=2, le=100)) -> dict[str, Any]:
        fc = forecast_or_503()
        try:
            return fc.segments(horizon, k)
        except KeyError as exc:
            raise HTTPException(422, str(exc.args[0])) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.delete("/v1/users/{user_id}", tags=["users"])
    def forget_user(user_id: str, _: str = admin) -> dict[str, Any]:
        key = uid(user_id)
        n = state.store.delete_user(key)
        # audiences and segments no longer see the user
        in_forecasts = int(state.forecast.forget(key)) if state.forecast is not None else 0
        if n == 0 and not in_forecasts:
            raise HTTPException(404, "unknown user (no events stored, not in any forecast)")
        state.store.record_forgotten(key)  # the other replicas drop the user from their forecasts too
        return {"user_id": user_id, "events_deleted": n, "forecasts_deleted": in_forecasts}

    @app.post("/v1/admin/reload", tags=["admin"])
    def reload(_: str = admin, body: ReloadIn | None = None) -> dict[str, Any]:
        try:
            m = state.reload(body.run if body else None)
        except (OSError, RuntimeError, ValueError) as exc:  # OSError: missing, unreadable, name too long
            raise HTTPException(422, f"reload failed, the current model stays: {exc}") from None
        set_model_gauge()
        return {"model_version": m.version, "run": m.run}

    add_dashboard(app)
    return app
