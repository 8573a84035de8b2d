"""The library's own errors: what a user can fix, told apart from bugs.

Every error that reports bad user input (an option, a config value, a data file, a run directory, a
name that is not known, an optional extra that is not installed) derives from ``EvorecError``. The
command line (``evorec.cli.common.user_errors``) prints those as one line with exit code 2;
anything else (a bug, CUDA out of memory, a broken install) keeps its traceback.

Each subclass also keeps the built-in base it had before (``ValueError``, ``KeyError``,
``RuntimeError``, ``FileNotFoundError``, ``ImportError``), so ``except ValueError`` in callers and
tests goes on working. The bottom layer: this module imports nothing of evorec.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class EvorecError(Exception):
    """Base of the errors a user can fix; the CLI shows the message alone (exit code 2)."""


class InputError(EvorecError, ValueError):
    """A value the user gave is not valid: an option, a config field, a time, a horizon, data content."""


class NotFoundError(EvorecError, KeyError):
    """A name the user gave is not known: a user, an item, a category, a dataset, a model."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class StateError(EvorecError, RuntimeError):
    """What is on disk does not allow the command: a run directory, a store or a cache in the wrong state."""


class MissingPathError(EvorecError, FileNotFoundError):
    """A file or directory the user named does not exist."""


class MissingExtraError(EvorecError, ImportError):
    """A feature needs an optional extra that is not installed; the message says which one."""

    def __init__(self, feature: str, extra: str, missing: str | None = None) -> None:
        self.feature = feature
        self.extra = extra
        self.missing = missing
        hint = f" (missing: {missing})" if missing else ""
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'evorec[{extra}]'{hint}", name=missing)


def require_extra(module: str, feature: str, extra: str) -> ModuleType:
    """``import module``, or a ``MissingExtraError`` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(feature, extra, exc.name or module) from exc
