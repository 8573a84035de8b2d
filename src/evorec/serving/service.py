"""What the HTTP API does, without HTTP: the service layer the routers (evorec.serving.routers)
call. It holds the :class:`~evorec.serving.state.ServiceState` (event log, model, forecaster),
the settings, the pseudonymiser and the metrics, and answers in the response models of
evorec.serving.schemas. A request it cannot answer raises a :class:`ServiceError` whose
``status`` the app turns into ``{"detail": ...}`` with that HTTP status.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from pydantic import ValidationError

from evorec.serving.eventlog import EventStore
from evorec.serving.metrics import Metrics
from evorec.serving.schemas import (
    AudienceOut,
    Capabilities,
    CategoryShare,
    Drift,
    EventIn,
    EventsIn,
    EventsOut,
    ExplanationOut,
    ForecastCategory,
    Forgotten,
    HorizonForecast,
    InterestsOut,
    NewCategory,
    PopulationOut,
    Readiness,
    RecommendationsOut,
    Rejected,
    Reloaded,
    SegmentsOut,
    SignalAttributionOut,
    UserEvent,
    UserEvents,
    UserSummary,
)
from evorec.serving.settings import ServeSettings
from evorec.serving.state import RECOMMEND_MODES, ForecastState, ModelState, NoHistory, ServiceState, UnknownCategory, UnknownItem
from evorec.utils.privacy import Pseudonymizer
from evorec.utils.tracking import download_run, is_artifact_uri

logger = logging.getLogger(__name__)

INTEREST_HISTORY = 100_000  # events of a user an interest forecast reads at most


class ServiceError(Exception):
    """A request the service cannot answer: ``status`` is the HTTP status, the message the detail."""

    status = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ServiceError):
    status = 404


class TooLarge(ServiceError):
    status = 413


class Invalid(ServiceError):
    status = 422


class Unavailable(ServiceError):
    status = 503


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


class Service:
    """The service's operations over one :class:`ServiceState`."""

    def __init__(self, state: ServiceState, settings: ServeSettings, pseudonymizer: Pseudonymizer | None, metrics: Metrics) -> None:
        self.state = state
        self.settings = settings
        self.pseudonymizer = pseudonymizer
        self.metrics = metrics

    @classmethod
    def from_settings(cls, settings: ServeSettings, state: ServiceState | None = None) -> Service:
        """The service the settings describe (the state loaded from them unless given)."""
        if state is None:
            state = ServiceState(EventStore(settings.db_url), local_run(settings.run), settings.history_len, settings.forecast_run)
        pseudo = Pseudonymizer.from_environment() if settings.pseudonymize else None
        service = cls(state, settings, pseudo, Metrics())
        service.model_changed()
        return service

    # -- plumbing ------------------------------------------------------------------------------

    def user_key(self, raw: str) -> str:
        """The id the store knows a user by (the keyed HMAC of ``raw`` when pseudonymising)."""
        return self.pseudonymizer(raw) if self.pseudonymizer is not None else raw

    def model(self) -> ModelState:
        m = self.state.model
        if m is None:
            raise Unavailable("no model loaded (start with --run RUN_DIR or POST /v1/admin/reload)")
        return m

    def forecaster(self) -> ForecastState:
        if self.state.forecast is None:
            raise Unavailable("no interest forecaster loaded (start with EVOREC_SERVE_FORECAST_RUN=RUN_DIR)")
        return self.state.forecast_synced()  # users forgotten through any replica are gone from it

    def model_changed(self) -> None:
        """Point the model gauge at the model served now (after a load or a hot swap)."""
        m = self.state.model
        self.metrics.set_model(m.version if m is not None else None)

    def watch(self) -> threading.Event | None:
        """Start hot-swapping new checkpoints of the served run when the settings ask for it
        (returns the stop event, else None)."""
        if self.settings.watch_seconds > 0 and self.state.model is not None:
            return self.state.watch(self.settings.watch_seconds, on_swap=self.model_changed)
        return None

    # -- ops -----------------------------------------------------------------------------------

    def readiness(self) -> Readiness:
        problems = []
        if self.state.model is None:
            problems.append("no model loaded")
        try:
            self.state.store.ping()
        except Exception as exc:  # noqa: BLE001 - any store failure means not ready
            problems.append(f"event store unreachable: {exc}")
        m = self.state.model
        return Readiness(ready=not problems, problems=problems, model_version=m.version if m else None)

    def capabilities(self) -> Capabilities:
        m, fc = self.state.model, self.state.forecast
        return Capabilities(
            model_version=m.version if m is not None else None, recommendations=m is not None, forecaster=fc is not None,
            horizons=list(fc.population.labels) if fc is not None and fc.population is not None else [],
        )

    # -- events and users ----------------------------------------------------------------------

    def add_events(self, body: EventsIn) -> EventsOut:
        """Store the valid events of ``body`` (each validated on its own; a retried event id is
        a duplicate, not a second event)."""
        if len(body.events) > self.settings.max_events_per_request:
            raise TooLarge(f"{len(body.events)} events in one request; the limit is {self.settings.max_events_per_request}")
        rows, rejected = [], []
        for i, raw in enumerate(body.events):
            try:
                e = EventIn.model_validate(raw)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(x) for x in err.get("loc", ())) or "event"
                rejected.append(Rejected(index=i, reason=f"{where}: {err.get('msg')}"))
                continue
            rows.append({"event_id": e.event_id, "user_id": self.user_key(e.user_id), "item_id": e.item_id, "category_id": e.category_id,
                         "behavior": e.behavior.value, "ts": e.ts})
        inserted, dup = self.state.store.add_events(rows) if rows else (0, [])
        self.metrics.count_events(inserted, len(dup), len(rejected))
        return EventsOut(accepted=inserted, duplicates=len(dup), rejected=rejected)

    def user_summary(self, user_id: str) -> UserSummary:
        s = self.state.store.user_summary(self.user_key(user_id))
        if s is None:
            raise NotFound("unknown user (no events stored)")
        return UserSummary(user_id=user_id, **s)

    def user_events(self, user_id: str, limit: int) -> UserEvents:
        events = self.state.user_events(self.user_key(user_id), limit)
        if not events:
            raise NotFound("unknown user (no events stored)")
        return UserEvents(user_id=user_id, limit=limit, events=[UserEvent(**e) for e in events])

    def forget(self, user_id: str) -> Forgotten:
        """Delete the user's events and drop them from the forecasts, here and (through the
        store's tombstone) in every other replica."""
        key = self.user_key(user_id)
        n = self.state.store.delete_user(key)
        # audiences and segments no longer see the user
        in_forecasts = int(self.state.forecast.forget(key)) if self.state.forecast is not None else 0
        if n == 0 and not in_forecasts:
            raise NotFound("unknown user (no events stored, not in any forecast)")
        self.state.store.record_forgotten(key)  # the other replicas drop the user from their forecasts too
        return Forgotten(user_id=user_id, events_deleted=n, forecasts_deleted=in_forecasts)

    # -- recommendations -----------------------------------------------------------------------

    def recommend(self, user_id: str, k: int, exclude_seen: bool | None, category: str | None, mode: str | None) -> RecommendationsOut:
        if mode is not None and mode not in RECOMMEND_MODES:
            raise Invalid(f"unknown mode {mode!r}; valid modes: {', '.join(RECOMMEND_MODES)}")
        if mode is not None and exclude_seen is not None:
            raise Invalid(f"mode={mode} decides which seen items are listed: leave out exclude_seen")
        m = self.model()
        if k > self.settings.max_k:
            raise Invalid(f"k={k} is larger than the limit {self.settings.max_k}")
        history = self.state.store.recent(self.user_key(user_id), m.history_len * 4)
        try:
            res = m.recommend(history, k, exclude_seen=True if exclude_seen is None else exclude_seen, category=category, mode=mode)
        except UnknownCategory as exc:
            raise NotFound(str(exc.args[0])) from None
        return RecommendationsOut(user_id=user_id, **res)

    def explain(self, user_id: str, item_id: str, method: str, steps: int) -> ExplanationOut:
        m = self.model()
        history = self.state.store.recent(self.user_key(user_id), m.history_len * 4)
        if not history:
            raise NotFound("unknown user (no events stored)")
        try:
            return ExplanationOut(user_id=user_id, **m.explain(history, item_id, method=method, steps=steps))
        except UnknownItem as exc:
            raise NotFound(str(exc.args[0])) from None
        except NoHistory as exc:
            raise Invalid(str(exc)) from None

    # -- interests -----------------------------------------------------------------------------

    def interests(self, user_id: str, horizons: list[str] | None, top: int, explain: bool) -> InterestsOut:
        """The user's current interests and, per horizon, the forecast categories, those new to
        the user, the chance of a new interest and the drift; with ``explain`` every listed
        category carries the signal groups behind its score (ranker forecasters)."""
        from evorec.forecasting.drift import drift

        fc = self.forecaster()
        history = self.state.store.recent(self.user_key(user_id), INTEREST_HISTORY)
        if not history:
            raise NotFound("unknown user (no events stored)")
        now = max(int(time.time()), int(history[-1].ts) + 1)
        try:
            uf = fc.user(history, horizons, now)
        except KeyError as exc:
            raise Invalid(str(exc.args[0])) from None
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        cats = uf.categories

        def top_of(v: np.ndarray) -> list[int]:  # (C,) scores -> the top categories, never 0 (unknown)
            return [int(c) for c in (-v).argsort() if int(c) > 0][:top]

        out = InterestsOut(user_id=user_id, current=[CategoryShare(category_id=cats[c], share=float(uf.current[0, c])) for c in top_of(uf.current[0])],
                           forecasts={})
        p_em = uf.p_emerging()[0]
        for j, label in enumerate(uf.labels):
            d = drift(uf, label).to_pylist()[0]
            dist, engage = uf.dist[0, j], uf.engage[0, j]
            out.forecasts[label] = HorizonForecast(
                categories=[ForecastCategory(category_id=cats[c], share=float(dist[c]), p_engage=float(engage[c])) for c in top_of(dist)],
                new=[NewCategory(category_id=cats[c], p_engage=float(engage[c])) for c in uf.new_list(0, j, top)],
                p_emerging=float(p_em[j]),
                drift=Drift(label=d["label"], shift=d["shift"], fading_category=d.get("fading_category")),
            )
        if explain:
            index = {c: i for i, c in enumerate(cats)}
            listed = [(label, e) for label, f in out.forecasts.items() for e in [*f.categories, *f.new]]
            try:
                why = fc.explain(history, now, [(label, index[e.category_id]) for label, e in listed])
            except ValueError as exc:
                raise Invalid(str(exc)) from None
            for label, e in listed:
                e.explanation = SignalAttributionOut(**why[(label, index[e.category_id])].to_dict())
        return out

    def population(self, top: int) -> PopulationOut:
        return PopulationOut(**self.forecaster().interests(top))

    def audience(self, category: str, horizon: str, top: int) -> AudienceOut:
        from evorec.forecasting.audience import audience

        fc = self.forecaster()
        try:
            fc.population.horizon_index(horizon)
        except KeyError as exc:  # a bad parameter, not a missing resource
            raise Invalid(str(exc.args[0])) from None
        try:
            return AudienceOut(**audience(fc.population, category, horizon, top))
        except KeyError as exc:
            raise NotFound(str(exc.args[0])) from None
        except ValueError as exc:  # a horizon that is not one
            raise Invalid(str(exc)) from None

    def segments(self, horizon: str, k: int) -> SegmentsOut:
        fc = self.forecaster()
        try:
            return SegmentsOut(**fc.segments(horizon, k))
        except KeyError as exc:
            raise Invalid(str(exc.args[0])) from None
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    # -- admin ---------------------------------------------------------------------------------

    def reload(self, run: str | None, forecast_run: str | None = None) -> Reloaded:
        """Load ``run`` (default: the current one) and, when given, the forecast run ``forecast_run``,
        and swap them in; both are loaded before either is swapped, so on any failure the current
        model and forecaster stay."""
        try:
            fc = ForecastState.from_run(forecast_run) if forecast_run else None
            m = self.state.reload(run)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:  # OSError: missing, unreadable, name too long
            raise Invalid(f"reload failed, the current model stays, and so does the forecaster: {exc}") from None
        if fc is not None:
            self.state.forecast = fc  # one reference swap: requests in flight keep the forecaster they hold
        self.model_changed()
        cur = self.state.forecast
        return Reloaded(model_version=m.version, run=m.run, forecast_run=cur.run if cur is not None else None)
