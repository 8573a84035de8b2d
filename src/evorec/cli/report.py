"""`evorec report RUN_DIR [RUN_DIR ...] --out DIR`: an HTML report (and PNG figures) of runs.

    evorec report runs/sasrec runs/hstu runs/forecast-sim --out reports/beauty
    evorec report runs/forecast-sim --out reports/sim --user u0042 --cutoff 2025-09-15

Parses the options, calls :func:`evorec.report.build.build_report`, prints where the report is.
"""

from __future__ import annotations

from pathlib import Path

import typer

from evorec.cli.common import emit_json, user_errors


def report(
    runs: list[Path] = typer.Argument(..., help="Training runs (best.pt) and/or forecast runs (forecaster.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for index.html, png/ and report.json (replaced atomically)."),
    user: list[str] = typer.Option(None, "--user", "-u", help="Add this user's page (repeatable; raw or pseudonymised id)."),
    sample: int = typer.Option(8, "--users-sample", help="How many users to draw at random for user pages (0: none)."),
    cutoff: str = typer.Option(None, "--cutoff", help="Forecast cutoff (default: the forecast run's last test cutoff)."),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Evaluate training runs that have no metrics.json."),
    png: bool = typer.Option(True, "--png/--no-png", help="Also write every figure as PNG (matplotlib)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the user sample."),
    title: str = typer.Option("evorec report", "--title", help="Title of the page."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Write a self-contained HTML report (Plotly, opens offline) and the same figures as PNG."""
    from evorec.errors import require_extra

    with user_errors():
        require_extra("plotly", "evorec report", "report")
    from evorec.report.build import build_report

    with user_errors():
        manifest = build_report(runs, out, users=user or None, n_users=sample, cutoff=cutoff, evaluate=evaluate,
                                png=png, seed=seed, title=title)
    if as_json:
        emit_json(manifest)
    else:
        typer.echo(f"report: {manifest['index_path']} ({manifest['figures']} figures, {len(manifest['users'])} user pages"
                   + (f", {len(manifest['png'])} PNG in {Path(manifest['out']) / 'png'}" if manifest["png"] else "") + ")")
        for w in manifest["warnings"]:
            typer.echo(f"warning: {w}", err=True)
