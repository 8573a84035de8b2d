"""Service settings, from the environment (``EVOREC_SERVE_*``) or arguments."""

from __future__ import annotations

import logging

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from evorec.utils.hardware import check_threads, cpu_info

log = logging.getLogger(__name__)


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVOREC_SERVE_", extra="forbid")

    run: str | None = Field(None, description="run directory of a trained recommender (its best.pt), or a run logged to MLflow (runs:/ID/run)")
    forecast_run: str | None = Field(None, description="run directory of a trained interest forecaster (forecaster.pt)")
    db_url: str = Field("sqlite:///evorec-serve.db", description="event store: sqlite:///FILE or postgresql+psycopg://...")
    pseudonymize: bool = Field(True, description="store and look up users by keyed HMAC, as at ingest")
    max_events_per_request: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(8_000_000, ge=1024, description="larger requests get 413")
    max_k: int = Field(1000, ge=1)
    watch_seconds: float = Field(0.0, ge=0, description="poll the run's best.pt this often and hot-swap a new one (0: off; POST /v1/admin/reload always works)")
    torch_threads: int = Field(
        1, ge=1, description="intra-op threads of the model forward (1: one short sequence per request; more threads only contend with the server)",
    )
    history_len: int | None = Field(None, ge=1, description="events of history to encode (default: the model's training max_len)")


def apply_threads(settings: ServeSettings) -> int:
    """Set the model forward's intra-op threads (``torch_threads``, env ``EVOREC_SERVE_TORCH_THREADS``;
    an exported ONNX model gets the same count) and log it with the CPU; more threads than usable
    cores are warned about. Default 1: measured, 2 threads on busy cores gave p99 ~200 ms, 1 thread
    4.4 ms (benchmarks/serve_load.py), and one request scores one short sequence."""
    import torch

    n = check_threads(settings.torch_threads, "torch_threads (EVOREC_SERVE_TORCH_THREADS)") or 1
    torch.set_num_threads(n)
    log.info("serving: %d intra-op thread(s) for the model forward, fp32; %s", n, cpu_info().describe())
    return n
