"""The event store: one DuckDB file holding every dataset's canonical events.

Tables (all keyed by ``dataset``):

- ``datasets``   one row per dataset: how to read its time column, whether ids are pseudonymised.
- ``ingests``    one row per ingested source file (content hash, counts): re-ingesting a file
                 already recorded for a dataset is a no-op, so events are never duplicated.
- ``events``     the canonical events (see ``evorec.types``), ``ts`` as TIMESTAMP (UTC);
                 ``basket_id`` (nullable, the last column) was added in schema version 2: a
                 store written before gets it (all NULL) when it is next opened for writing,
                 and read-only readers treat its absence as NULL (``clean.select_dataset``).
- ``items``      item metadata (category, path, brand, title, price), all but the id nullable.
- ``quarantine`` every source row that could not be used: file, line, raw text, reason.
- ``users``      user profile fields some sources carry on their event rows (Tmall's
                 ``age_range``, ``gender``, ``province``) or in a profile file beside them
                 (Tmall's ``user_info_format1.csv``, MovieLens' ``users.dat``, RecBole's ``.user``:
                 the zip code is the region), one row per user, the id pseudonymised
                 like the events' (schema version 3; ``evorec data forget`` removes them too).
                 ``items.merchant`` (the seller, Tmall's ``merchant_id``) came with it.

The store is only written inside transactions (see ``evorec.data.ingest``), so a killed job
leaves it as it was before the job started.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb

from evorec.errors import StateError

SCHEMA_VERSION = 3  # 2: events.basket_id; 3: users table, items.merchant

USER_FIELDS = ("age_range", "gender", "region")  # the users table's profile columns, all text, nullable

DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS datasets (
    dataset VARCHAR PRIMARY KEY,
    time_kind VARCHAR NOT NULL,          -- 'unix' | 'ordinal'
    pseudonymized BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS ingest_seq START 1;
CREATE TABLE IF NOT EXISTS ingests (
    ingest_id INTEGER PRIMARY KEY,
    dataset VARCHAR NOT NULL,
    source_file VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    rows_read BIGINT NOT NULL,
    rows_ingested BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    items_ingested BIGINT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    dataset VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    behavior VARCHAR NOT NULL,
    category_id VARCHAR,
    value DOUBLE,
    ingest_id INTEGER NOT NULL,
    source_row BIGINT NOT NULL,
    basket_id VARCHAR
);
CREATE TABLE IF NOT EXISTS items (
    dataset VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    category_id VARCHAR,
    category_path VARCHAR,
    brand VARCHAR,
    title VARCHAR,
    price DOUBLE,
    ingest_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    dataset VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,
    age_range VARCHAR,
    gender VARCHAR,
    region VARCHAR,
    ingest_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    dataset VARCHAR NOT NULL,
    ingest_id INTEGER NOT NULL,
    source_file VARCHAR NOT NULL,
    source_row BIGINT,
    raw VARCHAR,
    reason VARCHAR NOT NULL
);
"""


def _duckdb_config() -> dict[str, str]:
    """Bound DuckDB's memory so a big ingest spills to disk instead of growing with the file.

    ``EVOREC_DUCKDB_MEMORY`` (e.g. ``4GB``) overrides the default of 512 MB: ingest speed is the
    same at 256 MB (measured), and peak memory stays flat as files grow.
    """
    return {"memory_limit": os.environ.get("EVOREC_DUCKDB_MEMORY", "512MB")}


class StoreError(StateError):
    """The store file is missing, unreadable, or not an evorec store."""


def connect(path: str | Path, *, read_only: bool = False, create: bool = True) -> duckdb.DuckDBPyConnection:
    """Open (and if needed create) an evorec store.

    ``read_only`` stores must already exist. A missing store with ``create=False`` is an error
    that names the path, rather than an empty database appearing silently.
    """
    path = Path(path)
    if (read_only or not create) and not path.exists():
        raise StoreError(f"store not found: {path} (create it with `evorec data ingest ... --store {path}`)")
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only, config=_duckdb_config())
    except duckdb.Error as exc:  # a file that is not a DuckDB database, a lock held by another writer...
        raise StoreError(f"cannot open store {path}: {exc}") from exc
    con.execute("SET enable_progress_bar = false")  # evorec draws its own progress bars
    if not read_only:
        con.execute(DDL)
        _migrate(con)
        con.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [str(SCHEMA_VERSION)],
        )
    else:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "events" not in tables:
            con.close()
            raise StoreError(f"{path} is not an evorec store (no events table)")
    return con


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a store written by an earlier evorec up to ``SCHEMA_VERSION`` (columns only added,
    never changed, so older code reading by name keeps working)."""
    if "basket_id" not in event_columns(con):
        con.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS basket_id VARCHAR")
    if "merchant" not in table_columns(con, "items"):
        con.execute("ALTER TABLE items ADD COLUMN merchant VARCHAR")


def event_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The ``events`` table's columns, in order."""
    return table_columns(con, "events")


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """A table's columns, in order (empty if there is no such table)."""
    return [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_schema = current_schema() ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]


@contextlib.contextmanager
def open_store(path: str | Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(path, read_only=read_only, create=not read_only)
    try:
        yield con
    finally:
        con.close()


def dataset_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("SELECT dataset FROM datasets ORDER BY dataset").fetchall()]


def require_dataset(con: duckdb.DuckDBPyConnection, dataset: str) -> dict:
    """Return the dataset's row, or raise naming the datasets that do exist."""
    row = con.execute(
        "SELECT dataset, time_kind, pseudonymized FROM datasets WHERE dataset = ?", [dataset]
    ).fetchall()
    row = row[0] if row else None
    if row is None:
        known = dataset_names(con)
        raise StoreError(f"dataset {dataset!r} not in store; known datasets: {known or 'none'}")
    return {"dataset": row[0], "time_kind": row[1], "pseudonymized": bool(row[2])}


def latest_item_fields(store_path: str | Path, dataset: str, fields: Sequence[str]) -> list[tuple]:
    """``(item_id, *fields)`` rows of the dataset's ``items`` table, one per item: per field the
    value of the latest ingest that has a non-blank one (NULL where none has)."""
    con = connect(store_path, read_only=True)
    try:
        require_dataset(con, dataset)
        aggs = ", ".join(f"arg_max({f}, ingest_id) FILTER (WHERE {f} IS NOT NULL AND trim({f}) <> '') AS {f}" for f in fields)
        return con.execute(f"SELECT item_id, {aggs} FROM items WHERE dataset = ? GROUP BY item_id", [dataset]).fetchall()
    finally:
        con.close()
