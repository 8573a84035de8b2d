"""`evorec data ...`: sniff, ingest, describe, simulate, prepare. Each command parses, calls one library
function, and formats its result (a one-line summary, or JSON with --json)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from evorec.cli.common import byte_progress, count_progress, emit_json, err, parse_options, user_errors

app = typer.Typer(help="Ingest behaviour logs, describe datasets, simulate, prepare sequences and splits.", no_args_is_help=True)


@app.command("ingest")
def ingest(
    source: Path = typer.Argument(..., help="Source file (plain, .gz or .zip)."),
    fmt: str | None = typer.Option(
        None, "--format", "-f",
        help="Source format (`evorec data formats` lists them); without it the file is sniffed and read only when certain.",
    ),
    store: Path = typer.Option(..., "--store", "-s", help="DuckDB store file (created if missing)."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset name (default: from the file name)."),
    mapping: str | None = typer.Option(
        None, "--map", help="Column mapping for your own files: user_id=COL,item_id=COL,ts=COL[,behavior=..]."
    ),
    option: list[str] = typer.Option(None, "--option", "-o", help="Reader option key=value (repeatable)."),
    no_pseudonymize: bool = typer.Option(
        False, "--no-pseudonymize", help="Store raw user ids (default: keyed HMAC-SHA256 pseudonyms)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Read SOURCE into the store: valid rows become events, the rest go to quarantine with a reason."""
    from evorec.data.ingest import ingest_file

    options = parse_options(option)
    if mapping:
        options["map"] = mapping
    with user_errors(), byte_progress(f"ingest {source.name}", enabled=not as_json) as progress:
        result = ingest_file(
            store, source, fmt, dataset, options=options, pseudonymize=not no_pseudonymize, progress=progress
        )
    if as_json:
        emit_json(result.to_dict())
        return
    if result.skipped:
        typer.echo(f"{source}: already ingested into dataset {result.dataset!r} (same content); nothing added")
        return
    if result.layout:
        how = "recognised" if result.sniffed else "read"
        typer.echo(f"{how} {source}: format {result.format!r}, layout {result.layout}")
    rate = result.rows_read / result.seconds if result.seconds else 0.0
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(result.quarantine_reasons.items(), key=lambda kv: -kv[1]))
    no_cat = ""
    if result.events_without_category:
        missing = result.events_without_item_metadata
        no_cat = f"; {result.events_without_category:,} events without a category" + (
            f" ({missing:,} of products missing from the item metadata)" if missing else ""
        )
    typer.echo(
        f"ingested {result.rows_ingested:,} events into {result.dataset!r} from {result.rows_read:,} rows "
        f"({result.rows_quarantined:,} quarantined{': ' + reasons if reasons else ''}; "
        f"{result.items_ingested:,} items{no_cat}"
        f"{f'; {result.users_ingested:,} user profiles' if result.users_ingested else ''}) "
        f"in {result.seconds:.1f}s ({rate:,.0f} rows/s)"
    )


@app.command("sniff")
def sniff(
    source: Path = typer.Argument(..., help="A CSV/TSV, JSON lines or Parquet file (plain, .gz or .zip)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Look at the first rows of SOURCE: the format and layout it is in, or the --map that reads it.

    Exit code 0 when the format is certain (`ingest` without --format will read it), 1 otherwise."""
    from evorec.data.sniff import describe
    from evorec.data.sniff import sniff as run_sniff

    with user_errors():
        result = run_sniff(source)
    if as_json:
        emit_json(result.to_dict())
    else:
        typer.echo(result.summary())
        for line in describe(result):
            typer.echo(line)
    if not result.certain:
        raise typer.Exit(1)


@app.command("formats")
def formats(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the source formats `ingest` reads."""
    from evorec.data.readers import known_formats

    known = known_formats()
    if as_json:
        emit_json(known)
        return
    table = Table("format", "what it reads")
    for name, desc in known.items():
        table.add_row(name, desc)
    err.print(table)
    typer.echo(f"{len(known)} formats")


@app.command("describe")
def describe(
    store: Path = typer.Option(..., "--store", "-s", help="DuckDB store file."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Users, items, categories, events per behaviour, time span, lengths, quarantine by reason."""
    from evorec.data.describe import describe_dataset

    with user_errors():
        d = describe_dataset(store, dataset)
    if as_json:
        emit_json(d)
        return
    t = Table(title=f"dataset {dataset} ({d['time_kind']} time{', pseudonymised ids' if d['pseudonymized'] else ''})")
    t.add_column("what")
    t.add_column("value", justify="right")
    for key in ("rows_read", "events", "quarantined", "users", "items", "categories", "items_metadata",
                "events_without_category", "events_without_item_metadata", "events_with_basket_id", "user_profiles"):
        if d.get(key) is not None:
            t.add_row(key, f"{d[key]:,}")
    t.add_row("time span", f"{d['time_min']} .. {d['time_max']}")
    for b, n in d["by_behavior"].items():
        t.add_row(f"events: {b}", f"{n:,}")
    for q, v in d["sequence_length"].items():
        t.add_row(f"length {q}", f"{v:,.1f}" if isinstance(v, float) else f"{v:,}")
    for r, n in d["quarantined_by_reason"].items():
        t.add_row(f"quarantined: {r}", f"{n:,}")
    err.print(t)
    typer.echo(
        f"{dataset}: {d['events']:,} events, {d['users']:,} users, {d['items']:,} items, "
        f"{d['categories']:,} categories, {d['quarantined']:,} quarantined, {d['time_min']} .. {d['time_max']}"
    )


@app.command("simulate")
def simulate(
    users: int = typer.Option(1000, "--users", min=1, help="Number of users."),
    days: int = typer.Option(365, "--days", min=1, help="Days of behaviour to simulate."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same file)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output Parquet file (+ .items/.truth/.planted beside it)."),
    setting: list[str] = typer.Option(None, "--set", help="Other SimConfig fields, key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write simulated users whose category interests drift, emerge and fade, with ground truth."""
    from evorec.data.simulate import SimConfig, write_simulation

    extra = parse_options(setting, "--set")
    with user_errors():
        cfg = SimConfig(users=users, days=days, seed=seed, **extra)
        with count_progress("simulate", None, enabled=not as_json) as progress:
            summary = write_simulation(cfg, out, progress=progress)
    data = summary.model_dump(mode="json") if hasattr(summary, "model_dump") else dict(summary.__dict__)
    if as_json:
        emit_json(data)
        return
    typer.echo(
        f"simulated {data.get('events', 0):,} events of {data.get('users', users):,} users over {days} days -> {out}"
    )


@app.command("prepare")
def prepare(
    store: Path = typer.Option(..., "--store", "-s", help="DuckDB store file."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name."),
    config: Path = typer.Option(..., "--config", "-c", help="PrepareConfig YAML (clean, sequences, split)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for sequences, vocabularies and splits."),
    setting: list[str] = typer.Option(None, "--set", help="Override one config field, e.g. clean.kcore.item_min=5."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Clean -> vocabularies -> memory-mapped sequences -> leak-checked splits, written atomically."""
    from evorec.data.prepare import PrepareConfig
    from evorec.data.prepare import prepare as run_prepare
    from evorec.utils.config import load_config

    with user_errors():
        cfg = load_config(PrepareConfig, config, list(setting or []))
        with count_progress("prepare", None, enabled=not as_json) as progress:
            result = run_prepare(store, dataset, cfg, out, progress=progress)
    data = result.to_dict() if hasattr(result, "to_dict") else result.model_dump(mode="json")
    if as_json:
        emit_json(data)
        return
    typer.echo(
        f"prepared {dataset!r} -> {out}: {data.get('users', 0):,} users, {data.get('items', 0):,} items, "
        f"{data.get('events', 0):,} events after cleaning; split {data.get('split', '')}"
    )


@app.command("forget")
def forget(
    user_ids: list[str] = typer.Argument(..., help="User ids as in the source files (raw; pseudonymised like at ingest)."),
    store: Path = typer.Option(..., "--store", "-s", help="DuckDB store file."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Only this dataset (default: every dataset of the store)."),
    prepared: list[Path] = typer.Option(
        None, "--prepared", help="Prepared sequence directory, or a folder of them (e.g. .evorec-cache/prepared); repeatable."
    ),
    runs: list[Path] = typer.Option(None, "--runs", help="Run directory, or a folder of them; repeatable."),
    pseudonymized: bool = typer.Option(False, "--pseudonymized", help="The ids are already pseudonymised (as stored)."),
    missing_ok: bool = typer.Option(False, "--missing-ok", help="Exit 0 even when none of the users is found."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove users from the store (events, quarantine), prepared sequences and run outputs.

    Exit code 1 when none of the users was found anywhere (unless --missing-ok): a typo must not
    look like success. Users found nowhere are always listed. Forgetting twice is harmless."""
    from evorec.experiments.forget import forget_users

    with user_errors():
        report = forget_users(
            user_ids, store, dataset=dataset, prepared=list(prepared or []), runs=list(runs or []), pseudonymized=pseudonymized
        )
    missing = report["not_found"]
    if as_json:
        emit_json(report)
    else:
        for w in report["warnings"]:
            err.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        tables = ", ".join(f"{t} {n:,}" for t, n in sorted(report["tables"].items())) or "no rows"
        dirs = sum(1 for d in report["sequence_dirs"] if d["rewritten"])
        files = sum(1 for f in report["files"] if f["rewritten"])
        typer.echo(
            f"forgot {len(report['users']) - len(missing)} of {len(report['users'])} users: store {tables}; "
            f"{dirs} of {len(report['sequence_dirs'])} sequence directories and {files} of {len(report['files'])} files rewritten"
        )
        if missing:
            err.print(f"not found (never ingested, already forgotten, or another dataset): {', '.join(missing)}", highlight=False)
    if missing and len(missing) == len(report["users"]) and not missing_ok:
        raise typer.Exit(1)
