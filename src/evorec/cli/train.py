"""`evorec train` and `evorec evaluate`: parse, call the pipeline, format."""

from __future__ import annotations

from pathlib import Path

import typer

from evorec.cli.common import emit_json, user_errors


def train(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment YAML (data source, prepare, model, train)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (checkpoints, history, TensorBoard)."),
    setting: list[str] = typer.Option(None, "--set", help="Override one field, e.g. train.lr=3e-4 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint."),
    time_budget: float | None = typer.Option(None, "--time-budget", help="Stop cleanly after this many training seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the final state as JSON."),
) -> None:
    """Train a model; early-stops on validation NDCG@10 and keeps the best checkpoint."""
    from evorec.pipeline import load_experiment
    from evorec.pipeline import train as run_train

    overrides = list(setting or [])
    if time_budget is not None:
        overrides.append(f"train.time_budget_s={time_budget}")
    with user_errors():
        cfg = load_experiment(config, overrides)
        if as_json:
            cfg.train.progress = False
        state, run_dir = run_train(cfg, out, resume=resume)
    best = {k: v for k, v in (state.history[state.best_epoch - 1] if state.best_epoch > 0 else {}).items() if k.startswith("valid/")}
    if as_json:
        emit_json({"run": str(run_dir), **state.to_dict(), "best": best})
        return
    metric = cfg.train.metric
    typer.echo(
        f"trained {cfg.model.name} on {cfg.data.dataset}: best valid {metric} {state.best_metric:.4f} at epoch "
        f"{state.best_epoch} ({state.epoch} epochs, {state.train_seconds:.0f}s training; {state.stopped}) -> {run_dir}/best.pt"
    )


def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `evorec train`."),
    fold: str | None = typer.Option(None, "--fold", help="Fold to evaluate (default: the config's, usually test)."),
    exclude_seen: bool | None = typer.Option(None, "--exclude-seen/--include-seen", help="Exclude history items from the ranking."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Full-ranking metrics of a run's best checkpoint (writes RUN_DIR/metrics.json)."""
    from evorec.pipeline import evaluate_run

    with user_errors():
        res = evaluate_run(run_dir, fold=fold, exclude_seen=exclude_seen)
    if as_json:
        emit_json(res)
        return
    m = res["metrics"]
    shown = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k in ("HR@10", "NDCG@10", "MRR", "HR@20", "NDCG@20"))
    typer.echo(f"{res['model']} on {res['dataset']} ({res['fold']}, {res['users']:,} users, {res['protocol']}): {shown}")


def models(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered models."""
    from evorec.models.registry import known_models

    names = known_models()
    if as_json:
        emit_json(names)
    else:
        typer.echo("\n".join(names))
