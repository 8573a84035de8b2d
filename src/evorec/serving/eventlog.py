"""The serving event store and API keys, through SQLAlchemy Core (SQLite in WAL mode by default,
PostgreSQL through the same code).

Events carry an optional ``event_id``: a retried batch never duplicates (unique index; rows whose
id is already stored count as duplicates, not as new events). Everything a user left is keyed
by their (pseudonymised) id, so :meth:`EventStore.delete_user` removes every trace.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from evorec.errors import InputError

ROLES = ("read", "write", "admin")  # each role can do everything the ones before it can

metadata = MetaData()
events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(128), nullable=True, unique=True),
    Column("user_id", String(256), nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("category_id", String(256), nullable=True),
    Column("behavior", String(16), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Index("ix_events_user_ts", "user_id", "ts"),
)
# Users forgotten through the API, as a one-way hash of their pseudonymised id (neither the raw
# nor the pseudonymised id is kept): every replica sharing the store drops them from the
# forecasts it holds in memory, also after a restart (see ServiceState.forecast_synced).
forgotten = Table(
    "forgotten", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tombstone", String(64), nullable=False, unique=True),
    Column("at", BigInteger, nullable=False),
)
api_keys = Table(
    "api_keys", metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("role", String(8), nullable=False),
    Column("label", String(128), nullable=True),
    Column("created_at", BigInteger, nullable=False),
)


@dataclass
class StoredEvent:
    item_id: str
    category_id: str | None
    behavior: str
    ts: int


def tombstone(user_key: str) -> str:
    """The forgotten-users entry of a pseudonymised user id: a salted SHA-256 (one-way)."""
    return hashlib.sha256(b"evorec-forgotten\0" + user_key.encode("utf-8")).hexdigest()


def hash_key(key: str) -> str:
    """SHA-256 of an API key (keys are 256-bit random tokens, so a fast hash is enough)."""
    return hashlib.sha256(key.encode()).hexdigest()


class EventStore:
    def __init__(self, url: str):
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _wal(dbapi_conn, _record):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()
        metadata.create_all(self.engine)

    # -- events -----------------------------------------------------------------------------

    def add_events(self, rows: list[dict[str, Any]], *, attempts: int = 3) -> tuple[int, list[int]]:
        """Insert ``rows`` in one transaction. Returns (inserted, indices of duplicate rows):
        a row whose ``event_id`` is already stored, or repeats an earlier row of the batch.

        A concurrent writer (another request or replica retrying the same batch) can commit the
        same ``event_id`` between our check and our insert; the unique index then rolls our whole
        transaction back and we run it again, now seeing those rows as duplicates."""
        for attempt in range(attempts):
            try:
                return self._add_events_once(rows)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _add_events_once(self, rows: list[dict[str, Any]]) -> tuple[int, list[int]]:
        now = int(time.time())
        dup: list[int] = []
        seen: set[str] = set()
        ids = [r["event_id"] for r in rows if r.get("event_id")]
        with self.engine.begin() as conn:
            existing = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                existing |= {x for (x,) in conn.execute(select(events.c.event_id).where(events.c.event_id.in_(chunk)))}
            fresh = []
            for j, r in enumerate(rows):
                eid = r.get("event_id")
                if eid and (eid in existing or eid in seen):
                    dup.append(j)
                    continue
                if eid:
                    seen.add(eid)
                fresh.append({**r, "event_id": eid or None, "received_at": now})
            if fresh:
                conn.execute(events.insert(), fresh)
        return len(fresh), dup

    def recent(self, user_id: str, limit: int) -> list[StoredEvent]:
        """The user's latest ``limit`` events, oldest first."""
        q = (
            select(events.c.item_id, events.c.category_id, events.c.behavior, events.c.ts)
            .where(events.c.user_id == user_id).order_by(events.c.ts.desc(), events.c.id.desc()).limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [StoredEvent(*r) for r in reversed(rows)]

    def user_summary(self, user_id: str) -> dict[str, Any] | None:
        q = select(func.count(), func.min(events.c.ts), func.max(events.c.ts)).where(events.c.user_id == user_id)
        with self.engine.connect() as conn:
            n, lo, hi = conn.execute(q).one()
        return None if not n else {"events": int(n), "first_ts": int(lo), "last_ts": int(hi)}

    def delete_user(self, user_id: str) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(delete(events).where(events.c.user_id == user_id)).rowcount or 0)

    def record_forgotten(self, user_id: str) -> None:
        """Note that ``user_id`` (pseudonymised) was forgotten, once; see ``forgotten``."""
        t = tombstone(user_id)
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(forgotten.c.id).where(forgotten.c.tombstone == t)).first() is None:
                    conn.execute(forgotten.insert(), [{"tombstone": t, "at": int(time.time())}])
        except IntegrityError:  # another replica recorded it at the same moment
            pass

    def forgotten_after(self, after_id: int) -> list[tuple[int, str]]:
        """(id, tombstone) of the users forgotten since entry ``after_id``, oldest first."""
        q = select(forgotten.c.id, forgotten.c.tombstone).where(forgotten.c.id > after_id).order_by(forgotten.c.id)
        with self.engine.connect() as conn:
            return [(int(i), str(t)) for i, t in conn.execute(q).all()]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())

    def item_counts(self, since_ts: int | None = None) -> dict[str, int]:
        q = select(events.c.item_id, func.count()).group_by(events.c.item_id)
        if since_ts is not None:
            q = q.where(events.c.ts >= since_ts)
        with self.engine.connect() as conn:
            return {i: int(n) for i, n in conn.execute(q).all()}

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(select(1))
        return True

    # -- API keys ---------------------------------------------------------------------------

    def create_key(self, role: str, label: str | None = None) -> str:
        """A new random key with ``role``; only its hash is stored, the key is returned once."""
        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        key = "evk_" + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert(), {"key_hash": hash_key(key), "role": role, "label": label, "created_at": int(time.time())})
        return key

    def role_of(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(api_keys.c.role).where(api_keys.c.key_hash == hash_key(key))).first()
        return None if r is None else str(r[0])

    def list_keys(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys.c.key_hash, api_keys.c.role, api_keys.c.label, api_keys.c.created_at)).all()
        return [{"key_hash_prefix": h[:12], "role": r, "label": lb, "created_at": c} for h, r, lb, c in rows]
