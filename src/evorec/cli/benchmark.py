"""`evorec benchmark`: reproduce published tables on the same files."""

from __future__ import annotations

from pathlib import Path

import typer

from evorec.cli.common import emit_json, user_errors

app = typer.Typer(help="Reproduce published tables on the same files.", no_args_is_help=True)


@app.command("list")
def list_tables(as_json: bool = typer.Option(False, "--json")) -> None:
    """The tables `reproduce` knows."""
    from evorec.experiments.tables import tables

    if as_json:
        emit_json({k: {"title": t.title, "rows": [r.label for r in t.rows]} for k, t in tables().items()})
        return
    for k, t in tables().items():
        typer.echo(f"{k}: {t.title} ({', '.join(r.label for r in t.rows)})")


@app.command("reproduce")
def reproduce(
    table: str = typer.Argument(..., help="Table name, e.g. s3rec-beauty (see `evorec benchmark list`)."),
    out: Path = typer.Option(Path("runs/reproduce"), "--out", "-o", help="Directory for one run per row (reused when unchanged)."),
    data: Path | None = typer.Option(None, "--data", help="The table's data file (default: $EVOREC_DATA_DIR or ../shared/data)."),
    budget: float = typer.Option(300.0, "--budget", help="Training seconds per model (0: train to early stopping)."),
    model: list[str] = typer.Option(None, "--model", "-m", help="Only these rows (repeatable)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CIs."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Train and evaluate every row of a published table; print evorec beside the paper, with CIs."""
    from evorec.experiments.reproduce import reproduce as run

    with user_errors():
        res = run(table, out, data=data, budget_s=budget or None, models=list(model or []) or None, bootstrap=bootstrap)
    if as_json:
        emit_json(res)
        return
    typer.echo(f"{res['title']}\n  source: {res['source']}\n  data: {res['data']}\n  protocol: {res['protocol']}")
    typer.echo(f"  training budget per model: {res['budget_s_per_model']} s; CIs: {res['confidence']}\n")
    typer.echo(f"{'model':<10} {'metric':<8} {'evorec':>8} {'95% CI':>19} {'published':>10} {'inside':>7} {'train s':>8}")
    for r in res["rows"]:
        for metric, v in r["metrics"].items():
            typer.echo(
                f"{r['label']:<10} {metric:<8} {v['evorec']:8.4f} [{v['ci'][0]:.4f}, {v['ci'][1]:.4f}] {v['published']:10.4f} "
                f"{'yes' if v['published_inside_ci'] else 'no':>7} {r['train_seconds'] or 0:8.0f}"
            )
    ex = res.get("poprec_explanation")
    if ex:
        typer.echo("\nPopRec is deterministic; popularity counted over:")
        for k, v in ex.items():
            if isinstance(v, dict) and k != "published":
                typer.echo(f"  {k:<55} HR@10 {v['HR@10']:.4f}  NDCG@10 {v['NDCG@10']:.4f}")
        typer.echo(f"  published{'':<46} HR@10 {ex['published']['HR@10']:.4f}  NDCG@10 {ex['published']['NDCG@10']:.4f}")
        typer.echo(f"  -> {ex['conclusion']}")
