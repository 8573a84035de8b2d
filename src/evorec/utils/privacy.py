"""Pseudonymisation of user ids with a keyed HMAC-SHA256.

The key comes from ``EVOREC_SECRET`` (the key itself) or from a key file (``EVOREC_SECRET_FILE``,
default ``~/.evorec/secret.key``) that is created with 0600 permissions on first use. The raw id
is never stored: ingest and serving both map ids through :func:`pseudonymize` with the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from evorec.errors import StateError

log = logging.getLogger(__name__)

# 128 bits of the HMAC output, hex: short enough to keep the store small, long enough that a
# collision among even billions of users is out of reach.
PSEUDONYM_HEX_CHARS = 32


class SecretError(StateError):
    """The pseudonymisation key cannot be read or has unsafe permissions."""


def default_key_file() -> Path:
    return Path(os.environ.get("EVOREC_SECRET_FILE", Path.home() / ".evorec" / "secret.key"))


@dataclass(frozen=True)
class Pseudonymizer:
    key: bytes

    @classmethod
    def from_environment(cls) -> Pseudonymizer:
        env = os.environ.get("EVOREC_SECRET")
        if env:
            return cls(env.encode("utf-8"))
        return cls(load_or_create_key(default_key_file()))

    @property
    def fingerprint(self) -> str:
        """Identifies the key without revealing it (stored with each dataset)."""
        return hmac.new(self.key, b"evorec-key-fingerprint", hashlib.sha256).hexdigest()[:16]

    def __call__(self, user_id: str) -> str:
        return hmac.new(self.key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]

    def sql_pads(self) -> tuple[bytes, bytes]:
        """(outer, inner) padded keys, for computing the same HMAC inside SQL engines.

        HMAC(k, m) = H((k' ^ opad) || H((k' ^ ipad) || m)) with k' the key padded to the block size.
        """
        k = self.key if len(self.key) <= 64 else hashlib.sha256(self.key).digest()
        k = k.ljust(64, b"\0")
        return bytes(b ^ 0x5C for b in k), bytes(b ^ 0x36 for b in k)

    def duckdb_sql(self, expr: str) -> str:
        """A DuckDB expression giving ``self(expr)`` for a VARCHAR expression ``expr``."""
        outer, inner = (p.hex() for p in self.sql_pads())
        return (
            f"substr(sha256(unhex('{outer}') || unhex(sha256(unhex('{inner}') || ({expr})::BLOB))), "
            f"1, {PSEUDONYM_HEX_CHARS})"
        )


def _no_key(path: Path, exc: OSError) -> SecretError:
    """No key given and none can be made (e.g. a container without the key mounted: /run/secrets
    is not the user's, or the root file system is read-only): say what to give."""
    return SecretError(
        f"no pseudonymisation key: the key file {path} does not exist and cannot be created ({exc.strerror or exc}); "
        "give the key as EVOREC_SECRET or mount a key file there (EVOREC_SECRET_FILE names another path)"
    )


def load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it (0600, 32 random bytes) if it does not exist."""
    path = Path(path)
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SecretError(f"key file {path} has permissions {oct(mode)}; it must be readable by its owner only (chmod 600)")
        key = path.read_bytes().strip()
        if len(key) < 16:
            raise SecretError(f"key file {path} holds {len(key)} bytes; at least 16 are needed")
        return key
    key = secrets.token_hex(32).encode("ascii")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise _no_key(path, exc) from exc
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return load_or_create_key(path)
    except OSError as exc:
        raise _no_key(path, exc) from exc
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    log.info("created pseudonymisation key file %s (0600)", path)
    return key
