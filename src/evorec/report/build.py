"""``evorec report RUN_DIR [RUN_DIR ...] --out DIR``: load the runs, build the sections, write
``DIR/index.html`` (self-contained), ``DIR/png/<figure>.png`` and ``DIR/report.json`` (what
was built, from which runs).

A training run (``evorec train``) contributes the dataset overview, the model comparison and the
recommendations on user pages; a forecast run (``evorec forecast backtest --out``) the interest
evolution, segments and user forecasts. Runs are grouped by
dataset. The report is written to a temporary directory beside ``DIR`` and swapped in at the
end, so a killed job leaves the previous report untouched.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from evorec.errors import InputError
from evorec.report.html import render_page
from evorec.report.sections import (
    ForecastRun,
    ModelRun,
    Section,
    UserPage,
    dataset_overview,
    forecast_cutoff,
    interest_evolution,
    model_comparison,
    sample_users,
    segments_section,
    user_page,
    user_row,
)
from evorec.utils.io import atomic_directory, json_default

logger = logging.getLogger(__name__)

MANIFEST = "report.json"


class ReportError(InputError):
    """A run or an option the report cannot use; the message says which and why."""


# -- loading ------------------------------------------------------------------------------------


def load_run(path: str | Path, *, evaluate: bool = True) -> ModelRun | ForecastRun:
    """A training run or a forecast run (:mod:`evorec.experiments.runs`) for a report. A training
    run without metrics (or with metrics of other data) is evaluated first when ``evaluate``."""
    from evorec.experiments import runs

    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: no such run directory")
    if runs.ForecastRun.holds_one(path):
        from evorec.experiments.forecasting import load_forecast_run

        forecaster, seq = load_forecast_run(path)
        backtest = runs.ForecastRun(path).backtest() or {}
        dataset = backtest.get("dataset") or forecaster.dataset or "simulated"
        return ForecastRun(path, path.name, str(dataset), forecaster, seq, backtest)
    run = runs.TrainingRun(path)
    if run.finished:
        from evorec.experiments.config import ExperimentConfig
        from evorec.experiments.training import evaluate_run, prepared_data

        ck = run.checkpoint
        cfg = ExperimentConfig.model_validate(ck.experiment)
        seq, _ = prepared_data(cfg)
        try:
            metrics = run.metrics()
        except json.JSONDecodeError as exc:
            raise ReportError(f"{run.metrics_file} is not valid JSON ({exc}); evaluate again with `evorec evaluate {path}`") from None
        if metrics is not None and (metrics.get("sequence_fingerprint") != seq.fingerprint or "metrics" not in metrics):
            metrics = None  # evaluated on other data, or an old file
        if metrics is None:
            if not evaluate:
                raise ReportError(f"{path} has not been evaluated on its current data; run `evorec evaluate {path}` (or drop --no-evaluate)")
            logger.info("evaluating %s (no %s for its data)", path, run.metrics_file.name)
            metrics = evaluate_run(path)
        return ModelRun(path, path.name, ck.model_name, cfg.data.dataset, ck, seq, metrics, run.history(), run.per_user())
    raise ReportError(
        f"{path}: neither a training run (no {run.best_checkpoint.name}) nor a forecast run (no {runs.ForecastRun(path).forecaster_file.name})"
    )


# -- building -----------------------------------------------------------------------------------


def _slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
    return out or "x"


def _find_user(uid: str, seqs: list[Any]) -> str | None:
    """``uid`` as stored in one of ``seqs``: as given, or pseudonymised with this machine's key."""
    for s in seqs:
        if user_row(s, uid) is not None:
            return uid
    try:
        from evorec.utils.privacy import Pseudonymizer

        p = Pseudonymizer.from_environment()(uid)
    except Exception:  # noqa: BLE001 - no key: the id can only be matched as given
        return None
    return p if any(user_row(s, p) is not None for s in seqs) else None


def build_report(
    runs: list[str | Path],
    out: str | Path,
    *,
    users: list[str] | None = None,
    n_users: int = 8,
    cutoff: Any | None = None,
    evaluate: bool = True,
    png: bool = True,
    seed: int = 0,
    title: str = "evorec report",
) -> dict[str, Any]:
    """Write the report of ``runs`` to ``out``; returns the manifest (also ``out/report.json``)."""
    if not runs:
        raise ReportError("give at least one run directory")
    if n_users < 0:
        raise ReportError(f"--users-sample must be >= 0, got {n_users}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise ReportError(f"{out} exists and is not an evorec report directory; choose another --out (nothing was overwritten)")
    loaded = [load_run(r, evaluate=evaluate) for r in runs]
    names = [r.name for r in loaded]
    for r in loaded:  # two runs with the same directory name get distinct labels
        if names.count(r.name) > 1:
            r.name = f"{r.path.parent.name}/{r.path.name}"

    datasets: dict[str, dict[str, list]] = {}
    for r in loaded:
        d = datasets.setdefault(r.dataset, {"model": [], "forecast": []})
        d["model" if isinstance(r, ModelRun) else "forecast"].append(r)

    wanted: list[str] = list(dict.fromkeys(users or []))
    all_seqs = [r.seq for r in loaded]
    resolved: dict[str, str] = {}
    for u in wanted:
        found = _find_user(u, all_seqs)
        if found is None:
            raise ReportError(f"user {u!r} is in none of the runs' data (looked up as given and pseudonymised with this machine's key)")
        resolved[u] = found

    sections: list[Section] = []
    pages: list[UserPage] = []
    warnings: list[str] = []
    for name, group in datasets.items():
        fid = _slug(name)
        models: list[ModelRun] = group["model"]
        forecasts: list[ForecastRun] = group["forecast"]
        seq = (models or forecasts)[0].seq
        sections.append(dataset_overview(seq, name, fid))
        if models:
            sections.append(model_comparison(models, fid))
        fc_ctx = None
        for i, fr in enumerate(forecasts):
            ffid = fid if i == 0 else f"{fid}-{i}"
            try:
                T = forecast_cutoff(fr, cutoff)
                sec, uf = interest_evolution(fr, ffid, T)
            except ValueError as exc:
                raise ReportError(f"{fr.path}: {exc}") from None
            sections.append(sec)
            sections.append(segments_section(uf, ffid, name))
            if fc_ctx is None:
                fc_ctx = (fr, uf, T)
        best = max(models, key=lambda r: r.metrics.get("metrics", {}).get("NDCG@10", -1.0)) if models else None
        base = fc_ctx[0].seq if fc_ctx else best.seq
        picks = sample_users(base, n_users, seed=seed, before=fc_ctx[2] if fc_ctx else None) if n_users else []
        picks += [v for v in resolved.values() if (fc_ctx and user_row(fc_ctx[0].seq, v) is not None)
                  or (best is not None and user_row(best.seq, v) is not None)]
        for k, uid in enumerate(dict.fromkeys(picks)):
            page = user_page(uid, forecast=fc_ctx, model=best, fid=f"{fid}-u{k}")
            if page is None:
                warnings.append(f"user {uid} not found in {name}")
                continue
            pages.append(page)

    subtitle = "Runs: " + ", ".join(f"{r.name} ({'forecast' if isinstance(r, ForecastRun) else r.model}, {r.dataset})" for r in loaded)
    page_html = render_page(title, subtitle, sections, pages, png=png)

    with atomic_directory(out, overwrite=True) as tmp:  # replaced in one step: never half a report under out
        pngs: list[str] = []
        if png:
            from evorec.report.figures import save_png

            for f in [f for s in sections for f in s.figures] + [f for p in pages for f in p.figures]:
                pngs.append(str(save_png(f, tmp / "png").relative_to(tmp)))
        (tmp / "index.html").write_text(page_html, encoding="utf-8")
        manifest = {
            "index": "index.html",
            "runs": [{"path": str(r.path), "kind": "forecast" if isinstance(r, ForecastRun) else "model", "dataset": r.dataset,
                      **({"model": r.model} if isinstance(r, ModelRun) else {})} for r in loaded],
            "sections": [{"id": s.id, "title": s.title, "figures": [f.id for f in s.figures]} for s in sections],
            "users": [p.user_id for p in pages],
            "figures": len([f for s in sections for f in s.figures]) + len([f for p in pages for f in p.figures]),
            "png": pngs,
            "warnings": warnings,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=json_default))
    manifest["out"] = str(out)
    manifest["index_path"] = str(out / "index.html")
    return manifest
