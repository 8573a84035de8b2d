"""The service's Prometheus metrics (``GET /metrics``): requests and latency per route, events
received by outcome, and the model being served. One registry per app, so two apps in one
process (tests, replicas) never share counters."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("evorec_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("evorec_request_seconds", "request latency", ["route"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.events = Counter("evorec_events_total", "events received", ["outcome"], registry=self.registry)
        self.model_info = Gauge("evorec_model_info", "the model being served (value 1)", ["version"], registry=self.registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def count_events(self, accepted: int, duplicates: int, rejected: int) -> None:
        self.events.labels(outcome="accepted").inc(accepted)
        self.events.labels(outcome="duplicate").inc(duplicates)
        self.events.labels(outcome="rejected").inc(rejected)

    def set_model(self, version: str | None) -> None:
        """The served model's version as the one labelled series (none without a model)."""
        self.model_info.clear()
        if version is not None:
            self.model_info.labels(version=version).set(1)

    def text(self) -> str:
        return generate_latest(self.registry).decode()
