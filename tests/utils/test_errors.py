"""User errors are the library's own types (one line, exit 2); everything else keeps its traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from evorec.cli.common import user_errors
from evorec.cli.main import app
from evorec.errors import EvorecError, InputError, MissingExtraError, MissingPathError, NotFoundError, StateError, require_extra


@pytest.mark.parametrize("exc", [InputError("bad --top"), NotFoundError("unknown user 'x'"), StateError("no best.pt"),
                                 MissingPathError("no such file"), FileNotFoundError("typed path"), MissingExtraError("evorec serve", "serve")])
def test_user_errors_exit_2_with_the_message(exc, capsys):
    with pytest.raises(typer.Exit) as info, user_errors():
        raise exc
    assert info.value.exit_code == 2
    assert str(exc) in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("exc", [RuntimeError("CUDA out of memory"), KeyError("x"), ValueError("a bug"), ZeroDivisionError()])
def test_other_errors_keep_their_traceback(exc):
    with pytest.raises(type(exc)), user_errors():
        raise exc


def test_settings_from_the_environment_are_a_user_error(monkeypatch):
    """pydantic validates settings read from the environment: a bad value is the user's to fix."""
    from evorec.serving.settings import ServeSettings

    monkeypatch.setenv("EVOREC_SERVE_MAX_K", "many")
    with pytest.raises(typer.Exit) as info, user_errors():
        ServeSettings()
    assert info.value.exit_code == 2


def test_library_errors_keep_their_old_bases():
    """Callers and tests that catch ValueError / KeyError / RuntimeError go on working."""
    from evorec.data.readers.base import FormatMismatch, ReaderOptionError
    from evorec.data.splits import LeakageError, SplitError
    from evorec.data.store import StoreError
    from evorec.models.checkpoint import CheckpointError
    from evorec.models.registry import UnknownModelError
    from evorec.utils.config import ConfigError

    for cls, old in [(ConfigError, ValueError), (ReaderOptionError, ValueError), (FormatMismatch, ValueError), (SplitError, ValueError),
                     (LeakageError, AssertionError), (StoreError, RuntimeError), (CheckpointError, RuntimeError), (UnknownModelError, KeyError)]:
        assert issubclass(cls, EvorecError) and issubclass(cls, old), cls
    assert str(NotFoundError("unknown user 'x'")) == "unknown user 'x'"  # not KeyError's quoted repr


def test_missing_extra_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "no_such_module_for_evorec", None)  # None: import raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'evorec\[serve\]'") as info:
        require_extra("no_such_module_for_evorec", "evorec serve", "serve")
    assert info.value.extra == "serve" and isinstance(info.value, ImportError)


def test_an_unexpected_error_in_a_command_shows_its_traceback(monkeypatch, tmp_path):
    """A bug (here a RuntimeError as CUDA out of memory raises) is not turned into a one-line error."""
    import evorec.data.sniff

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(evorec.data.sniff, "sniff", boom)
    src = tmp_path / "events.csv"
    src.write_text("1,2,3,pv,1511544070\n")
    r = CliRunner().invoke(app, ["data", "sniff", str(src)])
    assert r.exit_code != 2
    assert isinstance(r.exception, RuntimeError) and "out of memory" in str(r.exception)
    monkeypatch.undo()  # the same command with a user error: one line, exit 2
    r = CliRunner().invoke(app, ["data", "sniff", str(tmp_path / "missing.csv")])
    assert r.exit_code == 2 and "not found" in r.output and "Traceback" not in r.output


def test_a_bad_key_role_is_a_user_error(tmp_path):
    r = CliRunner().invoke(app, ["keys", "create", "--role", "owner", "--db", f"sqlite:///{tmp_path / 'keys.db'}"])
    assert r.exit_code == 2 and "role must be one of read, write, admin" in r.output
