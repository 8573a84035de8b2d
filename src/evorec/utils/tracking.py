"""Experiment tracking in MLflow, optional and fail-soft.

``evorec train|evaluate|forecast backtest --track`` (or ``EVOREC_MLFLOW_URI``) logs a run's
parameters (the merged config, flattened), per-epoch metrics, final metrics with their confidence
bounds, the merged config as a file, the data fingerprint and the artefacts (checkpoint,
``metrics.json``, ...) to MLflow: a local store in ``./mlruns`` (a SQLite file, ``mlflow.db``, with
the artefacts as plain files in ``mlruns/artifacts``; MLflow 3 keeps its older plain-file tracking
store in maintenance mode and refuses it by default) unless a tracking URI is given.

Tracking never decides a run's fate: the run directory is written first and is complete on its
own. When the tracking server cannot be reached (at the start or later), one warning is logged,
tracking stops for the rest of the process and the run goes on. MLflow is an optional extra
(``pip install 'evorec[tracking]'``); asking for tracking without it is a clear error at the start.

MLflow names may not contain ``@``: ``NDCG@10`` is logged as ``NDCG_at_10`` (see :func:`metric_key`).
``RUN/mlflow.json`` records where a run was logged, so ``evorec evaluate RUN --track`` adds its
metrics to the same MLflow run, and ``runs:/<run_id>/run`` (the logged run directory) can be served.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evorec.errors import InputError, StateError
from evorec.utils.io import atomic_write_text

log = logging.getLogger(__name__)

ENV_URI = "EVOREC_MLFLOW_URI"
ENV_EXPERIMENT = "EVOREC_MLFLOW_EXPERIMENT"
DEFAULT_STORE = "mlruns"  # the local store's folder, relative to the working directory
DEFAULT_EXPERIMENT = "evorec"
RECORD = "mlflow.json"  # in the run directory: uri, experiment and run ids, artefact URI
RUN_ARTIFACTS = "run"  # artefact folder holding the run directory's files (servable: runs:/ID/run)
EXTRA_HINT = "pip install 'evorec[tracking]'"

_BAD = re.compile(r"[^/\w.\- :]")


def metric_key(name: str) -> str:
    """An MLflow-valid metric or parameter name: ``@`` -> ``_at_``, other invalid characters -> ``_``."""
    return _BAD.sub("_", name.replace("@", "_at_"))


def resolve_uri(track: bool = False, uri: str | None = None) -> str | None:
    """The tracking URI asked for: ``uri``, else ``EVOREC_MLFLOW_URI``, else with ``track`` the
    local store ``sqlite:///<cwd>/mlruns/mlflow.db``; ``None``: tracking is off."""
    uri = uri or os.environ.get(ENV_URI) or None
    if uri:
        return uri
    if track:
        folder = Path(DEFAULT_STORE).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}"
    return None


def _artifact_location(uri: str) -> str | None:
    """Artefacts of a new experiment in a local SQLite store: plain files beside the database."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
    return None  # a server or another store: its own default


def require_mlflow() -> Any:
    """The ``mlflow`` module, or a RuntimeError naming the extra to install."""
    try:
        import mlflow
    except ImportError as exc:
        raise StateError(f"experiment tracking (--track / {ENV_URI}) needs MLflow, which is not installed: {EXTRA_HINT}") from exc
    return mlflow


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"train.lr": "0.001", ...}`` (lists as their JSON text)."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not obj and prefix:
            out[prefix[:-1]] = "{}"
        return out
    value = obj if isinstance(obj, str) else json.dumps(obj, default=str)
    out[prefix[:-1]] = value
    return out


def numeric(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a record, under MLflow-valid names (booleans and text dropped)."""
    out = {}
    for k, v in record.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[metric_key(k)] = float(v)
    return out


def metrics_with_ci(metrics: Mapping[str, float], ci: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{prefix}NAME`` plus ``{prefix}NAME_ci_low`` / ``_ci_high`` where a CI is known."""
    out = numeric({f"{prefix}{k}": v for k, v in metrics.items()})
    for k, band in (ci or {}).items():
        if isinstance(band, (list, tuple)) and len(band) == 2:
            out.update(numeric({f"{prefix}{k}_ci_low": band[0], f"{prefix}{k}_ci_high": band[1]}))
    return out


class RunTracker:
    """One MLflow run of one evorec command, used from the process that writes the run directory.

    Every method is a no-op once tracking is off (never started, or the server failed once: one
    warning, then silence). Construct with :meth:`start`; end with :meth:`finish` (or use it as a
    context manager, which marks the MLflow run FAILED when the block raises)."""

    def __init__(self, uri: str, run_id: str | None = None, client: Any = None) -> None:
        self.uri = uri
        self.run_id = run_id
        self.experiment_id: str | None = None
        self.artifact_uri: str | None = None
        self._client = client
        self._warned = False

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def start(
        cls, uri: str, *, kind: str, run_name: str | None = None, experiment: str | None = None,
        resume_from: str | Path | None = None, tags: Mapping[str, str] | None = None,
    ) -> RunTracker:
        """Open a run (or reopen the one ``resume_from/mlflow.json`` recorded at the same URI).

        Fails only when MLflow is not installed; an unreachable server gives a disabled tracker."""
        require_mlflow()
        # A server that does not answer must not hold the run up: MLflow retries 7 times with
        # exponential back-off by default (minutes). The user's own settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        try:  # builds the store object only (no request yet): a malformed URI is the user's to fix
            client = MlflowClient(tracking_uri=uri)
            client._tracking_client.store  # noqa: B018 - resolve the store now
        except Exception as exc:
            raise InputError(f"MLflow tracking URI {uri!r}: {exc}") from exc
        tracker = cls(uri, client=client)
        previous = read_record(resume_from) if resume_from is not None else None
        try:
            if previous and previous.get("uri") == uri and previous.get("run_id"):
                run = tracker._client.get_run(previous["run_id"])
            else:
                name = experiment or os.environ.get(ENV_EXPERIMENT) or DEFAULT_EXPERIMENT
                exp = tracker._client.get_experiment_by_name(name)
                exp_id = exp.experiment_id if exp is not None else tracker._client.create_experiment(
                    name, artifact_location=_artifact_location(uri))
                run = tracker._client.create_run(exp_id, run_name=run_name, tags={"evorec.kind": kind, **(tags or {})})
            tracker.run_id, tracker.experiment_id = run.info.run_id, run.info.experiment_id
            tracker.artifact_uri = run.info.artifact_uri
            if previous and previous.get("run_id") == tracker.run_id:
                tracker._client.set_tag(tracker.run_id, f"evorec.{kind}", "logged")
        except Exception as exc:  # noqa: BLE001 - any failure of the tracking backend turns tracking off
            tracker._fail(exc)
            return tracker
        log.info("MLflow: logging to run %s at %s (artefacts %s)", tracker.run_id, uri, tracker.artifact_uri)
        return tracker

    @property
    def active(self) -> bool:
        return self._client is not None and self.run_id is not None and not self._warned

    def finish(self, status: str = "FINISHED") -> None:
        self._call(lambda c: c.set_terminated(self.run_id, status))

    def __enter__(self) -> RunTracker:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish("FAILED" if exc_type is not None else "FINISHED")

    # -- logging -----------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(metric_key(k)[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            chunk = items[i : i + 100]
            self._call(lambda c, chunk=chunk: c.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step or 0) for k, v in numeric(metrics).items()]
        for i in range(0, len(items), 1000):
            chunk = items[i : i + 1000]
            self._call(lambda c, chunk=chunk: c.log_batch(self.run_id, metrics=chunk))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        self._call(lambda c: c.log_batch(self.run_id, tags=items))

    def log_dict(self, obj: Any, name: str) -> None:
        """``obj`` as the artefact file ``name`` (``.json`` or ``.yaml`` by its suffix)."""
        self._call(lambda c: c.log_dict(self.run_id, obj, name))

    def log_files(self, paths: Iterable[str | Path], artifact_path: str = RUN_ARTIFACTS) -> None:
        """The existing files among ``paths`` under ``artifact_path`` (missing ones are skipped)."""
        for p in paths:
            p = Path(p)
            if p.is_file():
                self._call(lambda c, p=p: c.log_artifact(self.run_id, str(p), artifact_path))

    def write_record(self, run_dir: str | Path) -> None:
        """``RUN/mlflow.json``: where this run was logged (only when tracking is on)."""
        if self.active:
            atomic_write_text(Path(run_dir) / RECORD, json.dumps(
                {"uri": self.uri, "experiment_id": self.experiment_id, "run_id": self.run_id,
                 "artifact_uri": self.artifact_uri, "run_uri": f"runs:/{self.run_id}/{RUN_ARTIFACTS}"}, indent=2))

    # -- failure -----------------------------------------------------------------------------
    def _call(self, fn) -> None:
        if not self.active:
            return
        try:
            fn(self._client)
        except Exception as exc:  # noqa: BLE001 - any failure of the tracking backend turns tracking off
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            log.warning(
                "MLflow tracking at %s failed (%s: %s): tracking is off for the rest of this run; "
                "the run goes on and its local outputs are complete", self.uri, type(exc).__name__, first,
            )


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN/mlflow.json`` or None."""
    p = Path(run_dir) / RECORD
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def is_artifact_uri(location: str) -> bool:
    """Whether a serve location is an MLflow artefact URI (``runs:/``, ``models:/``,
    ``mlflow-artifacts:/``) rather than a local path."""
    return bool(re.match(r"^(runs|models|mlflow-artifacts):/", location))


def download_run(location: str, dest: str | Path, tracking_uri: str | None = None) -> Path:
    """Download a run logged to MLflow (``runs:/ID/run`` or any artefact URI of the folder
    holding ``best.pt``) into ``dest``; returns the local folder. The tracking server comes from
    ``tracking_uri``, else ``EVOREC_MLFLOW_URI``, else MLflow's own ``MLFLOW_TRACKING_URI``."""
    mlflow = require_mlflow()
    uri = tracking_uri or os.environ.get(ENV_URI) or None
    Path(dest).mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dest), tracking_uri=uri)
    return Path(local)


def tracking_target(track: bool = False, uri: str | None = None) -> str | None:
    """:func:`resolve_uri`, checking at once that MLflow is installed when tracking is on (so a
    missing extra fails before hours of training, not after)."""
    target = resolve_uri(track, uri)
    if target is not None:
        require_mlflow()
    return target


def log_result(
    tracker: RunTracker, *, config: Mapping[str, Any] | None, fingerprint: str | None, metrics: Mapping[str, float],
    files: Iterable[str | Path] = (), run_dir: str | Path | None = None, params_prefix: str = "", config_name: str = "config.yaml",
    config_as_tags: bool = False,
) -> None:
    """Log a finished step: the config (flattened as params, or as tags where a later step may log
    other values into the same run: MLflow params cannot change, and whole as ``config_name``), the
    data fingerprint (tag ``evorec.data_fingerprint``), final metrics, the files as artefacts
    (under ``run/``); then ``RUN/mlflow.json``."""
    if config is not None:
        flat = {f"{params_prefix}{k}": v for k, v in flatten(config).items()}
        if config_as_tags:
            tracker.set_tags(flat)
        else:
            tracker.log_params(flat)
        tracker.log_dict(dict(config), config_name)
    if fingerprint:
        tracker.set_tags({"evorec.data_fingerprint": fingerprint})
    tracker.log_metrics(metrics)
    tracker.log_files(files)
    if run_dir is not None:
        tracker.write_record(run_dir)


def evaluation_metrics(summary: Mapping[str, Any], prefix: str = "test/") -> dict[str, float]:
    """An evaluation's metrics and CI bounds (``evorec evaluate``'s ``metrics`` and ``ci``), and
    each horizon's metrics."""
    out = metrics_with_ci(summary.get("metrics", {}), summary.get("ci", {}), prefix)
    for label, h in (summary.get("horizons") or {}).items():
        out.update(metrics_with_ci(h.get("metrics", {}), h.get("ci", {}), f"{prefix}horizon_{label}/"))
    return out


def backtest_metrics(res: Mapping[str, Any]) -> dict[str, float]:
    """A forecast backtest's per-horizon metrics with CIs: the model's and each baseline's."""
    out: dict[str, float] = {}
    for label, e in (res.get("horizons") or {}).items():
        out.update(metrics_with_ci(e.get("model", {}), e.get("model_ci", {}), f"{label}/model/"))
        for name, m in (e.get("baselines") or {}).items():
            out.update(metrics_with_ci(m, (e.get("baselines_ci") or {}).get(name, {}), f"{label}/{name}/"))
    return out


def log_forecast_backtest(
    uri: str, config: Mapping[str, Any], res: Mapping[str, Any], run_dir: str | Path | None, files: Iterable[str | Path] = (),
) -> RunTracker:
    """One MLflow run for a finished ``evorec forecast backtest``: the config, the sequences'
    fingerprint, every horizon's metrics with CIs, and the run's ``files`` (its forecaster, results
    and config: ``evorec.experiments.runs.ForecastRun``)."""
    out = Path(run_dir) if run_dir is not None else None
    with RunTracker.start(uri, kind="forecast-backtest", run_name=out.name if out else config.get("name")) as tracker:
        files = list(files) if out else []
        if out is None:  # nothing on disk: the results themselves are the artefact
            tracker.log_dict(dict(res), "backtest.json")
        log_result(tracker, config=config, fingerprint=res.get("sequence_fingerprint"), metrics=backtest_metrics(res),
                   files=files, run_dir=out)
    return tracker
