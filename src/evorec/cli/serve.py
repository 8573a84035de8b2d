"""`evorec serve`, `evorec export` and `evorec keys`: run the HTTP API, export a model for other
runtimes (ONNX / TorchScript), manage the API keys."""

from __future__ import annotations

import typer

from evorec.cli.common import emit_json, user_errors

keys_app = typer.Typer(help="API keys of the service (stored hashed).", no_args_is_help=True)


def serve(
    run: str | None = typer.Option(None, "--run", help="Run directory of a trained recommender (env EVOREC_SERVE_RUN)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    db: str | None = typer.Option(None, "--db", help="Event store URL (env EVOREC_SERVE_DB_URL; default sqlite:///evorec-serve.db)."),
) -> None:
    """Serve recommendations over HTTP (OpenAPI at /docs)."""
    from evorec.errors import require_extra

    with user_errors():
        for module in ("fastapi", "uvicorn", "faiss"):
            require_extra(module, "evorec serve", "serve")
    import uvicorn

    from evorec.serving.app import create_app
    from evorec.serving.settings import ServeSettings, apply_threads

    overrides = {k: v for k, v in (("run", run), ("db_url", db)) if v is not None}
    with user_errors():
        settings = ServeSettings(**overrides)
        apply_threads(settings)
        app = create_app(settings)
    uvicorn.run(app, host=host, port=port, workers=1, log_level="warning")


@keys_app.command("create")
def create_key(
    role: str = typer.Option(..., "--role", help="read | write | admin"),
    label: str | None = typer.Option(None, "--label"),
    db: str | None = typer.Option(None, "--db", help="Event store URL (as for serve)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    from evorec.serving.eventlog import EventStore
    from evorec.serving.settings import ServeSettings

    with user_errors():
        store = EventStore(db or ServeSettings().db_url)
        key = store.create_key(role, label)
    if as_json:
        emit_json({"key": key, "role": role, "label": label})
    else:
        typer.echo(key)


@keys_app.command("list")
def list_keys(db: str | None = typer.Option(None, "--db"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Keys by hash prefix, role and label (the keys themselves are not stored)."""
    from evorec.serving.eventlog import EventStore
    from evorec.serving.settings import ServeSettings

    with user_errors():
        rows = EventStore(db or ServeSettings().db_url).list_keys()
    if as_json:
        emit_json(rows)
    else:
        for r in rows:
            typer.echo(f"{r['key_hash_prefix']}  {r['role']:<6} {r['label'] or ''}")


def export(
    run: str = typer.Argument(..., help="Run directory of a trained recommender (its best.pt)."),
    fmt: str = typer.Option(..., "--format", "-f", help="onnx | torchscript"),
    out: str | None = typer.Option(None, "--out", "-o", help="Output file (default RUN_DIR/export/model.onnx|.pt); a .json sidecar goes beside it."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export the model's scoring function (fixed history length, any batch size) to ONNX or TorchScript."""
    from evorec.serving.export import export_run, result_dict

    with user_errors():
        res = export_run(run, fmt, out)
    if as_json:
        emit_json(result_dict(res))
    else:
        typer.echo(f"{res.path}  ({res.format}, {res.model_name}, T={res.max_len}, {res.n_items} items, "
                   f"max |diff| {res.max_abs_diff:.2g}; sidecar {res.sidecar.name})")
