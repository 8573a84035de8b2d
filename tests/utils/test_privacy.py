"""The pseudonymisation key: no key given and none can be created is one clear error naming
what to give (the container case, also checked in the real image by `make image-test`)."""

from __future__ import annotations

import pytest

from evorec.utils.privacy import Pseudonymizer, SecretError, load_or_create_key


def test_a_key_file_that_cannot_be_created_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "run"
    blocker.write_text("a file where the key's folder should be")
    monkeypatch.delenv("EVOREC_SECRET", raising=False)
    monkeypatch.setenv("EVOREC_SECRET_FILE", str(blocker / "secrets" / "evorec_secret"))
    with pytest.raises(SecretError, match=r"no pseudonymisation key: .*give the key as EVOREC_SECRET or mount a key file"):
        Pseudonymizer.from_environment()
    assert not (tmp_path / "run").is_dir()


def test_the_key_file_is_created_once_and_then_read(tmp_path):
    path = tmp_path / "k" / "secret.key"
    first = load_or_create_key(path)
    assert (path.stat().st_mode & 0o777) == 0o600 and load_or_create_key(path) == first
