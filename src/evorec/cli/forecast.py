"""`evorec forecast`: backtest the interest forecaster, and forecast from a trained run.

    evorec forecast backtest --config configs/forecast/simulated.yaml --out runs/fc --json
    evorec forecast runs/fc --cutoff 2025-10-01 --horizons 7d,30d --out forecasts.parquet

(``evorec forecast RUN ...`` is short for ``evorec forecast predict RUN ...``.)
"""

from __future__ import annotations

from pathlib import Path

import typer
from typer.core import TyperGroup

from evorec.cli.common import emit_json, fail, user_errors
from evorec.cli.train import TRACK_HELP, URI_HELP
from evorec.utils.io import atomic_write_parquet


class _DefaultPredict(TyperGroup):
    """Route ``evorec forecast RUN_DIR ...`` to the ``predict`` command."""

    def resolve_command(self, ctx, args):  # untyped: click's signature
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args.insert(0, "predict")
        return super().resolve_command(ctx, args)


app = typer.Typer(cls=_DefaultPredict, help="Forecast each user's category interests days to months ahead.", no_args_is_help=True)


@app.command("backtest")
def backtest(
    config: Path = typer.Option(..., "--config", "-c", help="Forecast experiment YAML (see configs/forecast/)."),
    setting: list[str] = typer.Option(None, "--set", help="Override one field, e.g. simulate.seed=3 (repeatable)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory for the model and backtest.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    seeds: str | None = typer.Option(None, "--seeds", help="Model seeds to run, e.g. 0,1,2 (the first is the reported model)."),
    track: bool = typer.Option(False, "--track", help=TRACK_HELP),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """Rolling-origin backtest: the learned forecaster vs every baseline, per horizon, with CIs."""
    from evorec.experiments.config import load_forecast_experiment
    from evorec.experiments.forecasting import forecast_backtest
    from evorec.experiments.runs import ForecastRun
    from evorec.utils.tracking import tracking_target

    with user_errors():
        extra = [f"forecast.seeds=[{seeds}]"] if seeds else []
        cfg = load_forecast_experiment(config, list(setting or []) + extra)
        res = forecast_backtest(cfg, out, tracking_uri=tracking_target(track, tracking_uri))
    if as_json:
        emit_json(res)
        return
    p = res["protocol"]
    typer.echo(f"{res['dataset']}: {p['samples']['test']:,} test samples at {len(p['test_cutoffs'])} cutoffs; {p['confidence_intervals']}")
    if res.get("note"):
        typer.echo(f"  note: {res['note']}")
    cols = ("NDCG@10", "Recall@5", "JSD", "Brier", "ECE", "EmergingRecall@10", "MixedEmergingRecall@10", "FadingPrecision")
    for label, e in res["horizons"].items():
        typer.echo(f"\nhorizon {label} ({e['active_samples']:,} samples with events)")
        typer.echo(f"  {'':<12}" + "".join(f"{c:>18}" for c in cols))
        rows = [("model", e["model"])] + list(e.get("baselines", {}).items())
        for name, m in rows:
            typer.echo(f"  {name:<12}" + "".join(f"{m.get(c, float('nan')):>18.4f}" for c in cols))
        vs = e.get("vs_best_baseline")
        if vs and vs.get("NDCG@10_lift") is not None:
            typer.echo(f"  NDCG@10 vs best baseline ({vs['baseline']}): {vs['NDCG@10_lift']:+.1%}, CIs overlap: {vs['cis_overlap']}")
            d = e.get("paired", {}).get(vs["baseline"], {}).get("NDCG@10")
            if d and d.get("ci"):
                typer.echo(f"  paired model - {vs['baseline']}: {d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] over {d['n']:,} samples")
    if out:
        typer.echo(f"\n-> {ForecastRun(out).forecaster_file}, {ForecastRun(out).backtest_file}")


@app.command("predict")
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by `evorec forecast backtest --out`."),
    cutoff: str = typer.Option(..., "--cutoff", help="Forecast from this time (ISO date; a position on order-only data)."),
    horizons: str | None = typer.Option(None, "--horizons", help="Comma-separated, e.g. 7d,30d (default: all trained)."),
    users: str | None = typer.Option(None, "--users", help="Comma-separated user ids (default: everyone with history)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write one row per (user, horizon, category) to this Parquet file."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary (and, with --users, the forecasts) as JSON."),
) -> None:
    """Each user's forecast category shares and engagement probabilities per horizon."""
    from evorec.experiments.forecasting import forecast_run

    if out is None and not as_json:
        fail("give --out FILE.parquet and/or --json")
    with user_errors():
        uf = forecast_run(run_dir, cutoff, [h.strip() for h in horizons.split(",")] if horizons else None,
                          [u.strip() for u in users.split(",")] if users else None)
        table = uf.to_table()
        if out is not None:
            atomic_write_parquet(out, table)
    summary = {"cutoff": cutoff, "horizons": uf.labels, "users": len(uf.users), "users_without_history": uf.no_history[:100],
               "n_users_without_history": len(uf.no_history), "rows": table.num_rows, "out": str(out) if out else None}
    if as_json:
        if users:
            summary["forecasts"] = table.to_pylist()
        emit_json(summary)
    else:
        typer.echo(f"forecast {len(uf.users):,} users at {cutoff} for {', '.join(uf.labels)} -> {out} ({table.num_rows:,} rows); "
                   f"{len(uf.no_history):,} users without history before the cutoff")




@app.command("explain")
def explain(
    run_dir: Path = typer.Argument(..., help="A run directory written by `evorec forecast backtest --out` (forecast.model.kind: ranker)."),
    user: str = typer.Option(..., "--user", help="The user id (as stored: pseudonymised where the data was)."),
    category: str = typer.Option(..., "--category", help="The category id."),
    cutoff: str = typer.Option(..., "--cutoff", help="Forecast from this time (ISO date)."),
    horizon: str | None = typer.Option(None, "--horizon", help="e.g. 30d (default: the forecaster's first horizon)."),
    as_json: bool = typer.Option(False, "--json", help="Print the explanation as JSON."),
) -> None:
    """Why a user's forecast for one category is what it is: each signal group's contribution."""
    from evorec.experiments.forecasting import explain_run

    with user_errors():
        ex = explain_run(run_dir, user, category, cutoff, horizon)
    if as_json:
        emit_json(ex.to_dict())
        return
    head = f"{ex.user} / {ex.category} / {ex.horizon}: p(engage) {ex.p_engage:.3f}, rank {ex.rank}"
    if ex.no_history:
        typer.echo(head + " -- no history before the cutoff: the population's forecast")
        return
    typer.echo(head + (f", new to the user (new-list rank {ex.new_rank})" if ex.new_category else ""))
    typer.echo(f"  score = base {ex.base:+.3f}" + "".join(f"\n    {g:<18} {v:+.3f}" for g, v in ex.contributions.items()))
    for e in ex.past_events:
        typer.echo(f"  past: {e['time']} {e['item_id']}")
