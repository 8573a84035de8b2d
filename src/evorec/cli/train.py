"""`evorec train` and `evorec evaluate`: parse, call evorec.experiments.training, format."""

from __future__ import annotations

from pathlib import Path

import typer

from evorec.cli.common import emit_json, fail, user_errors

TRACK_HELP = ("Log to MLflow (params, per-epoch and final metrics, config, artefacts): the local ./mlruns store unless --tracking-uri "
              "or EVOREC_MLFLOW_URI names one.")
URI_HELP = "MLflow tracking URI (turns --track on; default: EVOREC_MLFLOW_URI, else ./mlruns)."


def train(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment YAML (data source, prepare, model, train)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (checkpoints, history, TensorBoard)."),
    setting: list[str] = typer.Option(None, "--set", help="Override one field, e.g. train.lr=3e-4 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint."),
    time_budget: float | None = typer.Option(None, "--time-budget", help="Stop cleanly after this many training seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the final state as JSON."),
    track: bool = typer.Option(False, "--track", help=TRACK_HELP),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """Train a model; early-stops on validation NDCG@10 and keeps the best checkpoint."""
    from evorec.experiments.config import load_experiment
    from evorec.experiments.runs import TrainingRun
    from evorec.experiments.training import train as run_train
    from evorec.utils.tracking import tracking_target

    overrides = list(setting or [])
    if time_budget is not None:
        overrides.append(f"train.time_budget_s={time_budget}")
    with user_errors():
        cfg = load_experiment(config, overrides)
        if as_json:
            cfg.train.progress = False
        state, run_dir = run_train(cfg, out, resume=resume, tracking_uri=tracking_target(track, tracking_uri))
    best = {k: v for k, v in (state.history[state.best_epoch - 1] if state.best_epoch > 0 else {}).items() if k.startswith("valid/")}
    if as_json:
        emit_json({"run": str(run_dir), **state.to_dict(), "best": best})
        return
    metric = cfg.train.metric
    typer.echo(
        f"trained {cfg.model.name} on {cfg.data.dataset}: best valid {metric} {state.best_metric:.4f} at epoch "
        f"{state.best_epoch} ({state.epoch} epochs, {state.train_seconds:.0f}s training in {state.precision or 'fp32'}; "
        f"{state.stopped}) -> {TrainingRun(run_dir).best_checkpoint}"
    )


def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `evorec train`."),
    protocol: str | None = typer.Option(None, "--protocol", help="loo | time | backtest (default: the run's own split)."),
    fold: str | None = typer.Option(None, "--fold", help="Fold to evaluate (default: the config's, usually test; backtest: all)."),
    exclude_seen: bool | None = typer.Option(None, "--exclude-seen/--include-seen", help="Exclude history items from the ranking."),
    split_set: list[str] = typer.Option(None, "--split-set", help="Adjust the protocol's split, e.g. test_start=2014-01-01 (repeatable)."),
    setting: list[str] = typer.Option(None, "--set", help="Adjust the eval config, e.g. bootstrap=2000 or candidates=all (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
    track: bool = typer.Option(False, "--track", help=TRACK_HELP + " Into the training's MLflow run when it was tracked there."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """Metrics of a run's best checkpoint with confidence intervals (writes RUN_DIR/metrics.json and per_user.parquet)."""
    from evorec.experiments.runs import TrainingRun
    from evorec.experiments.training import evaluate_run
    from evorec.utils.tracking import tracking_target

    if protocol is not None and protocol not in ("loo", "time", "backtest"):
        fail(f"--protocol must be loo, time or backtest, not {protocol!r}")
    with user_errors():
        res = evaluate_run(
            run_dir, fold=fold, exclude_seen=exclude_seen, protocol=protocol,
            split_overrides=list(split_set or []), eval_overrides=list(setting or []),
            tracking_uri=tracking_target(track, tracking_uri),
        )
    if as_json:
        emit_json(res)
        return
    m, ci = res["metrics"], res.get("ci", {})
    p = res["protocol"]
    typer.echo(
        f"{res['model']} on {res['dataset']}: {p['split']} split, fold(s) {res['fold']}, {res['users']:,} users; "
        f"{p['ranking']} ranking over {p['candidates']}, seen items {'excluded' if p['exclude_seen'] else 'kept'}; "
        f"CIs: {p['confidence_intervals']}"
    )
    if p.get("name") in ("next_basket", "next_period"):
        typer.echo(f"  protocol {p['name']}: {p['targets']}; repeat targets {p['repeat_targets']}")
    for k in ("HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR", "GAUC", "Recall@10", "PHR@10", "repeat Recall@10", "explore Recall@10"):
        if k in m:
            lo_hi = ci.get(k)
            band = f"  [{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]" if lo_hi else ""
            typer.echo(f"  {k:<10} {m[k]:.4f}{band}")
    for label, h in res.get("horizons", {}).items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in h["metrics"].items() if k.endswith("@10") or k == "MRR")
        typer.echo(f"  horizon {label} ({h['users']:,} users): {shown}")
    run = TrainingRun(run_dir)
    typer.echo(f"  -> {run.metrics_file}, {run.per_user_file}")


def compare(
    run_a: Path = typer.Argument(..., help="First run directory."),
    run_b: Path = typer.Argument(..., help="Second run directory."),
    metric: list[str] = typer.Option(None, "--metric", "-m", help="Per-user metric to test (repeatable; default NDCG@10, HR@10, MRR)."),
    n_boot: int = typer.Option(10000, "--bootstrap", help="Bootstrap resamples."),
    as_json: bool = typer.Option(False, "--json", help="Print the tests as JSON."),
) -> None:
    """Paired test (bootstrap + Wilcoxon) of two runs evaluated on the same users."""
    from evorec.experiments.training import compare_runs

    with user_errors():
        res = compare_runs(run_a, run_b, list(metric or []) or None, n_boot=n_boot)
    if as_json:
        emit_json(res)
        return
    typer.echo(f"A = {res['a']['model']} ({res['a']['run']}), B = {res['b']['model']} ({res['b']['run']}); {res['users']:,} paired users")
    typer.echo(f"{'metric':<10} {'A':>8} {'B':>8} {'A-B':>9} {'95% CI of A-B':>22} {'rel':>7} {'p boot':>8} {'p Holm':>8} {'p Wilcoxon':>10} {'d_z':>6}")
    for m, r in res["tests"].items():
        typer.echo(
            f"{m:<10} {r['mean_a']:8.4f} {r['mean_b']:8.4f} {r['diff']:+9.4f} [{r['diff_lo']:+.4f}, {r['diff_hi']:+.4f}]".ljust(61)
            + f" {r['relative']:+7.1%} {r['p_bootstrap']:8.4f} {r['p_bootstrap_holm']:8.4f} {r['p_wilcoxon']:10.2e} {r['effect_size']:6.3f}"
        )
    typer.echo(res["method"])


def models(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered models."""
    from evorec.models.registry import known_models

    names = known_models()
    if as_json:
        emit_json(names)
    else:
        typer.echo("\n".join(names))
