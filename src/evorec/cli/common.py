"""Shared bits of the thin CLI edge: progress bars, JSON output, error formatting."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from evorec.errors import EvorecError

err = Console(stderr=True)

# Errors a user can fix: printed as one clear line, exit code 2, no traceback. The library's own
# (evorec.errors.EvorecError: bad options, configs, data, run directories, missing extras), a
# path the user named that does not exist, and pydantic's ValidationError (settings read from the
# environment, e.g. EVOREC_SERVE_MAX_K=abc; looked up only once pydantic is loaded, so that
# `evorec data sniff` does not import it). Anything else (a bug, CUDA out of memory) is not
# caught: it keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (EvorecError, FileNotFoundError)


def _user_errors() -> tuple[type[BaseException], ...]:
    pydantic = sys.modules.get("pydantic")
    return USER_ERRORS + (pydantic.ValidationError,) if pydantic is not None else USER_ERRORS


def fail(message: str, code: int = 2) -> None:
    # escaped: a message may hold brackets (pip install 'evorec[tracking]') that are not markup
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except _user_errors() as exc:
        fail(str(exc))


def _finite(obj: Any) -> Any:
    """NaN / inf become null: the output must be strict JSON that any parser reads."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(_finite(obj), indent=2, default=str, ensure_ascii=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def byte_progress(label: str, enabled: bool = True) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar over bytes; shown only on a terminal-ish stderr and when enabled."""
    if not enabled:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@contextlib.contextmanager
def count_progress(label: str, total: int | None, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}" if total else "{task.completed:,}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)

        def update(n: int) -> None:
            progress.update(task, completed=n)

        yield update


def parse_options(values: list[str] | None, flag: str = "--option") -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        if "=" not in v:
            fail(f"{flag} {v!r} is not of the form key=value")
        k, val = v.split("=", 1)
        out[k.strip()] = val.strip()
    return out
