"""The `evorec` command: one Typer sub-app per command group (see the modules beside this one)."""

from __future__ import annotations

import logging

import typer

from evorec import __version__
from evorec.cli import benchmark as benchmark_cmds
from evorec.cli import data as data_cmds
from evorec.cli import forecast as forecast_cmds
from evorec.cli import forecast_uses as forecast_uses_cmds
from evorec.cli import report as report_cmds
from evorec.cli import serve as serve_cmds
from evorec.cli import train as train_cmds

app = typer.Typer(
    name="evorec",
    help="Long-term user interest evolution on e-commerce platforms.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmds.app, name="data")
app.add_typer(benchmark_cmds.app, name="benchmark")
app.add_typer(forecast_cmds.app, name="forecast")
app.add_typer(serve_cmds.keys_app, name="keys")
app.command("serve")(serve_cmds.serve)
app.command("export")(serve_cmds.export)
app.command("train")(train_cmds.train)
app.command("evaluate")(train_cmds.evaluate)
app.command("compare")(train_cmds.compare)
app.command("models")(train_cmds.models)
app.command("report")(report_cmds.report)
forecast_uses_cmds.register(forecast_cmds.app, app)  # forecast drift|segments|audience|demand (+ the old names, hidden)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"evorec {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


if __name__ == "__main__":  # pragma: no cover
    app()
