"""`evorec forecast drift | segments | audience | demand`: what the interest forecasts of a run are for.

    evorec forecast drift --run runs/fc --cutoff 2025-10-01 --horizon 30d --out drift.parquet
    evorec forecast segments --run runs/fc --cutoff 2025-10-01 --k 8 --min-size 20
    evorec forecast audience c001 --run runs/fc --cutoff 2025-10-01 --top 100
    evorec forecast demand --run runs/fc --cutoff 2025-10-01 --backtest-cutoffs 2025-06-15,2025-09-15

Each command forecasts the run at the cutoff, calls one library function and formats. The old
top-level names (`evorec drift ...`) stay for one release as hidden aliases that log a deprecation
warning.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import typer

from evorec.cli.common import emit_json, user_errors
from evorec.errors import InputError
from evorec.utils.io import atomic_write_parquet

RUN = typer.Option(..., "--run", help="A forecast run directory (written by `evorec forecast backtest --out`).")
CUTOFF = typer.Option(..., "--cutoff", help="Forecast from this time (a date, or a position on order-only data).")
HORIZON = typer.Option("30d", "--horizon", help="Window after the cutoff, one the forecaster was trained for.")
AS_JSON = typer.Option(False, "--json", help="Print the result as JSON.")
DRIFT_SET = typer.Option(None, "--set", help="A threshold, e.g. drift_jsd=0.2 or fading_p=0.6 (repeatable).")
DRIFT_OUT = typer.Option(None, "--out", "-o", help="Write one row per user to this Parquet file.")
SEGMENTS_OUT = typer.Option(None, "--out", "-o", help="Write user_id, segment, x, y of shown segments to Parquet.")


log = logging.getLogger(__name__)


def register(forecast_app: typer.Typer, top_app: typer.Typer) -> None:
    """Add the four commands to ``evorec forecast``, and their old top-level names, hidden and
    deprecated, to ``evorec`` (removed in the next release)."""
    for name, fn in (("drift", drift), ("segments", segments), ("audience", audience), ("demand", demand)):
        forecast_app.command(name)(fn)
        top_app.command(name, hidden=True)(_deprecated(name, fn))


def _deprecated(name: str, fn: Callable[..., None]) -> Callable[..., None]:
    """``fn`` under its old name: the same options, plus a deprecation warning in the log."""

    @functools.wraps(fn)
    def alias(*args: object, **kwargs: object) -> None:
        log.warning("`evorec %s` is deprecated and will be removed in the next release: use `evorec forecast %s`", name, name)
        fn(*args, **kwargs)

    alias.__doc__ = f"Deprecated: use `evorec forecast {name}`."
    return alias




def drift(
    run: Path = RUN,
    cutoff: str = CUTOFF,
    horizon: str = HORIZON,
    setting: list[str] = DRIFT_SET,
    out: Path | None = DRIFT_OUT,
    as_json: bool = AS_JSON,
) -> None:
    """Label each user stable, drifting, emerging-interest or fading over the coming window."""
    from evorec.experiments.forecasting import forecast_run
    from evorec.forecasting.drift import DriftConfig, drift_summary
    from evorec.forecasting.drift import drift as run_drift
    from evorec.utils.config import load_config

    with user_errors():
        cfg = load_config(DriftConfig, None, list(setting or []))
        uf = forecast_run(run, cutoff, [horizon])
        table = run_drift(uf, horizon, cfg)
        if out is not None:
            atomic_write_parquet(out, table)
    summary = drift_summary(table)
    if as_json:  # per-user rows go to --out when given, else into the JSON
        emit_json({"cutoff": cutoff, "horizon": horizon, "config": cfg.model_dump(), "summary": summary,
                   "out": None if out is None else str(out), **({} if out is not None else {"users": table.to_pylist()})})
        return
    s = summary["shift"]
    typer.echo(f"drift over {horizon} from {cutoff}: {summary['users']:,} users (no history: {len(uf.no_history):,})")
    for label, n in summary["labels"].items():
        typer.echo(f"  {label:<18} {n:>8,}  {n / max(summary['users'], 1):6.1%}")
    if s["p50"] is not None:
        typer.echo(f"  shift (JSD, bits): median {s['p50']:.3f}, p90 {s['p90']:.3f}, max {s['max']:.3f}")
    if out is not None:
        typer.echo(f"  -> {out}")


def segments(
    run: Path = RUN,
    cutoff: str = CUTOFF,
    method: str = typer.Option("kmeans", "--method", help="kmeans | hdbscan"),
    k: int = typer.Option(8, "--k", help="Number of k-means clusters."),
    min_size: int = typer.Option(20, "--min-size", help="k-anonymity: smaller segments are merged, never shown."),
    horizon: str = HORIZON,
    out: Path | None = SEGMENTS_OUT,
    as_json: bool = AS_JSON,
) -> None:
    """Group users by the trajectory of their interests (now -> forecast), with k-anonymity."""
    from evorec.experiments.forecasting import forecast_run
    from evorec.forecasting.drift import drift as run_drift
    from evorec.forecasting.segments import SegmentConfig
    from evorec.forecasting.segments import segments as run_segments
    from evorec.utils.config import load_config

    with user_errors():
        cfg = load_config(SegmentConfig, None, base={"method": method, "k": k, "min_size": min_size, "horizon": horizon})
        uf = forecast_run(run, cutoff, [horizon])
        res = run_segments(uf, cfg, drift_table=run_drift(uf, horizon)).export(users=True)
        users = res.pop("users")
        if out is not None and not res["withheld"]:
            atomic_write_parquet(out, users)
    if as_json:
        emit_json({**res, "out": None if out is None or res["withheld"] else str(out)})
        return
    if res["withheld"]:
        typer.echo(f"segments withheld: {res['reason']}")
        return
    typer.echo(f"{len(res['segments'])} segments of {res['n_users']:,} users ({method}, {horizon} from {cutoff}; "
               f"min size {min_size}, {res['merged']} small groups merged)")
    for p in res["segments"]:
        now = ", ".join(c["category"] for c in p["top_now"][:3])
        gains = ", ".join(f"{c['category']} {c['value']:+.3f}" for c in p["gains"][:2]) or "-"
        losses = ", ".join(f"{c['category']} {c['value']:+.3f}" for c in p["losses"][:2]) or "-"
        typer.echo(f"  {p['name']:<12} {p['size']:>7,} users  now: {now}  gains: {gains}  losses: {losses}")
    if out is not None:
        typer.echo(f"  -> {out}")


def audience(
    category: str = typer.Argument(..., help="Category id, as in the data."),
    run: Path = RUN,
    cutoff: str = CUTOFF,
    horizon: str = HORIZON,
    top: int = typer.Option(100, "--top", help="Audience size."),
    as_json: bool = AS_JSON,
) -> None:
    """The users most likely to engage with CATEGORY in the coming window, with expected reach."""
    from evorec.experiments.forecasting import forecast_run
    from evorec.forecasting.audience import audience as run_audience

    with user_errors():
        if top < 1:
            raise InputError(f"--top must be at least 1, got {top}")
        uf = forecast_run(run, cutoff, [horizon])
        res = run_audience(uf, category, horizon, top)
    if as_json:
        emit_json(res)
        return
    typer.echo(f"audience for {category} over {res['horizon']} from {cutoff}: top {len(res['users']):,} of {res['n_users']:,} users; "
               f"expected reach {res['expected_reach_top']:.1f} (all users: {res['expected_reach_all']:.1f})")
    for u in res["users"]:
        typer.echo(f"  {u['user_id']}  {u['p_engage']:.3f}")


def demand(
    run: Path = RUN,
    cutoff: str = CUTOFF,
    horizon: str = HORIZON,
    confidence: float = typer.Option(0.95, "--confidence", help="Level of the intervals."),
    backtest_cutoffs: str | None = typer.Option(None, "--backtest-cutoffs", help="Also check past cutoffs D1,D2,... against what happened."),
    as_json: bool = AS_JSON,
) -> None:
    """Expected engaged users per category in the coming window, with intervals (and a backtest)."""
    from evorec.experiments.forecasting import load_forecast_run
    from evorec.forecasting.demand import demand as run_demand
    from evorec.forecasting.demand import demand_backtest
    from evorec.forecasting.predict import forecast_at

    with user_errors():
        forecaster, seq = load_forecast_run(run)  # loaded once for the forecast and the backtest
        table = run_demand(forecast_at(forecaster, seq, cutoff, [horizon]), horizon, confidence)
        back = None
        if backtest_cutoffs:
            cuts = [c.strip() for c in backtest_cutoffs.split(",") if c.strip()]
            back = demand_backtest(forecaster, seq, cuts, horizon, confidence)
    rows = sorted(table.to_pylist(), key=lambda r: -r["expected_users"])
    if as_json:
        emit_json({"cutoff": cutoff, "horizon": horizon, "confidence": confidence, "categories": rows, "backtest": back})
        return
    typer.echo(f"demand over {horizon} from {cutoff} ({confidence:.0%} intervals), engaged users per category:")
    for r in rows:
        typer.echo(f"  {r['category_id']:<16} {r['expected_users']:>10.1f}  [{r['lower']:.1f}, {r['upper']:.1f}]  "
                   f"share {r['expected_share']:.3f}  recent {r['recent_users']:,}")
    if back is not None:
        typer.echo(f"backtest ({back['horizon']}):")
        for c in back["cutoffs"]:
            typer.echo(f"  {c['cutoff']}: WAPE model {_pct(c['wape_model'])} vs persistence {_pct(c['wape_persistence'])}; "
                       f"interval coverage {_pct(c['coverage'])} ({c['users']:,} users)")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"
