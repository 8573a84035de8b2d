"""Ingest: one source file -> canonical events in the store, in one transaction.

Guarantees (tested in tests/data/test_ingest.py):

- every row read ends in ``events`` or in ``quarantine`` (with file, line, raw text, reason):
  ``rows_ingested + rows_quarantined == rows_read``;
- a file that is not of the stated format fails before anything is written;
- the whole file is one transaction: a killed or failed ingest leaves the store as it was;
- re-ingesting a file whose content is already recorded for the dataset adds nothing;
- user ids are pseudonymised with a keyed HMAC-SHA256 inside the database, unless turned off;
- the result counts the events left without a category, and (when the source has item
  metadata) those whose item is missing from it: they are kept, never dropped;
- without a format, the file is sniffed (``evorec.data.sniff``) and read only when exactly one
  format's layout fits it; otherwise nothing is written and the error carries the proposal;
- user profile fields on the event rows, or in a profile file beside the events (Tmall's
  ``user_info_format1.csv``, MovieLens' ``users.dat``, RecBole's ``.user``), go to ``users``
  (pseudonymised like the events; a side file's profiles only for users with events).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from evorec.data import store as store_mod
from evorec.data.readers import get_reader
from evorec.data.readers.base import (
    CHECK_BAD_FRACTION,
    CHECK_MIN_ROWS,
    ITEM_SCHEMA_EXTRA,
    PROFILE_SCHEMA,
    FormatMismatch,
    Reader,
    sql_str,
)
from evorec.data.sniff import SniffResult, mismatch_hint, refusal, sniff
from evorec.data.store import USER_FIELDS
from evorec.errors import MissingPathError, StateError
from evorec.types import BEHAVIORS, REJECT_SCHEMA, TS_MAX, TS_MIN, TimeKind
from evorec.utils.privacy import Pseudonymizer

log = logging.getLogger(__name__)


class IngestError(StateError):
    """Ingest cannot proceed (dataset conflicts, key mismatch...). Nothing was written."""


@dataclass
class IngestResult:
    dataset: str
    source: str
    format: str
    content_hash: str
    ingest_id: int | None
    rows_read: int
    rows_ingested: int
    rows_quarantined: int
    items_ingested: int
    skipped: bool  # the same content was already ingested into this dataset
    seconds: float
    quarantine_reasons: dict[str, int]
    events_without_category: int = 0  # ingested events with no category (neither on the row nor from the item)
    events_without_item_metadata: int | None = None  # ... whose item the item metadata lacks (None: no metadata)
    layout: str = ""  # the variant of the format the reader recognised
    users_ingested: int = 0  # user profile rows (users table)
    sniffed: bool = False  # the format was found by the sniffer (no --format given)

    def to_dict(self) -> dict:
        return asdict(self)


def content_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def resolve_format(source: str | Path, fmt: str | None, options: dict[str, str]) -> tuple[str, dict[str, str], SniffResult | None]:
    """The format to read ``source`` with: ``fmt`` as given, or the sniffer's when it is certain.

    Without a format and without a certain answer, raise :class:`IngestError` with the proposal.
    """
    if fmt:
        return fmt, options, None
    result = sniff(source, options)
    if not result.certain:
        raise IngestError(refusal(result))
    assert result.recognised is not None
    log.info("sniffed %s: format %s, layout %s", source, result.recognised.format, result.recognised.layout)
    return result.recognised.format, {**result.recognised.options, **options}, result


def ingest_file(
    store: str | Path,
    source: str | Path,
    fmt: str | None,
    dataset: str | None = None,
    *,
    options: dict[str, str] | None = None,
    pseudonymize: bool = True,
    pseudonymizer: Pseudonymizer | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> IngestResult:
    """Read ``source`` in format ``fmt`` into ``dataset`` of the store at ``store``.

    ``fmt`` None: the sniffer picks it (see :func:`resolve_format`). ``options`` are reader
    options (``--map``/``--option`` on the command line). ``progress`` is called with (bytes
    done, total bytes or None).
    """
    t0 = time.perf_counter()
    given = Path(source)
    fmt, options, sniffed = resolve_format(given, fmt, dict(options or {}))
    reader = get_reader(fmt)(given, options)
    source = reader.path  # a reader may resolve the name it is given (a directory, an installed package)
    if not source.exists():
        raise MissingPathError(f"source file not found: {source}")
    try:
        reader.check()  # fail fast, before the store is even opened
    except FormatMismatch as exc:
        raise exc.add_hint(mismatch_hint(source)) from None
    dataset = dataset or default_dataset_name(given, fmt)
    digest = content_hash([source, *reader.side_files()])
    pseudo = (pseudonymizer or Pseudonymizer.from_environment()) if pseudonymize else None

    con = store_mod.connect(store)
    try:
        done = con.execute(
            "SELECT ingest_id, rows_read, rows_ingested, rows_quarantined, items_ingested FROM ingests "
            "WHERE dataset = ? AND content_hash = ?",
            [dataset, digest],
        ).fetchall()
        done = done[0] if done else None
        if done is not None:
            log.info("%s already ingested into %s (ingest %s): nothing to do", source, dataset, done[0])
            return IngestResult(
                dataset, str(source), fmt, digest, done[0], done[1], 0, 0, 0, True, time.perf_counter() - t0, {}
            )
        _check_dataset(con, dataset, reader, pseudo)
        con.execute("BEGIN TRANSACTION")
        try:
            result = _ingest_in_transaction(con, reader, dataset, digest, pseudo, progress)
            con.execute("COMMIT")
        except FormatMismatch as exc:
            con.execute("ROLLBACK")
            raise exc.add_hint(mismatch_hint(source)) from None
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    result.seconds = time.perf_counter() - t0
    result.sniffed = sniffed is not None
    return result


def default_dataset_name(source: Path, fmt: str) -> str:
    name = source.name
    for suffix in (".gz", ".zip"):
        name = name.removesuffix(suffix)
    return Path(name).stem.lower().replace(" ", "_").replace("-", "_")


def _check_dataset(con: duckdb.DuckDBPyConnection, dataset: str, reader: Reader, pseudo: Pseudonymizer | None) -> None:
    row = con.execute(
        "SELECT time_kind, pseudonymized, (SELECT value FROM meta WHERE key = 'key_fingerprint:' || ?) "
        "FROM datasets WHERE dataset = ?",
        [dataset, dataset],
    ).fetchall()
    if not row:
        return
    row = row[0]
    time_kind, was_pseudo, fingerprint = row
    if time_kind != reader.time_kind.value:
        raise IngestError(
            f"dataset {dataset!r} holds {time_kind} timestamps but format {reader.format!r} gives "
            f"{reader.time_kind.value} ones; ingest it into another dataset"
        )
    if bool(was_pseudo) != (pseudo is not None):
        state = "pseudonymised" if was_pseudo else "raw (--no-pseudonymize)"
        raise IngestError(f"dataset {dataset!r} holds {state} user ids; ingest with the same setting")
    if pseudo is not None and fingerprint and fingerprint != pseudo.fingerprint:
        raise IngestError(
            f"dataset {dataset!r} was pseudonymised with another key (fingerprint {fingerprint}); "
            "set EVOREC_SECRET / EVOREC_SECRET_FILE to the key used before"
        )


def _ingest_in_transaction(
    con: duckdb.DuckDBPyConnection,
    reader: Reader,
    dataset: str,
    digest: str,
    pseudo: Pseudonymizer | None,
    progress: Callable[[int, int | None], None] | None,
) -> IngestResult:
    """Load one file inside the caller's transaction.

    Each block is transformed and validated in a private in-memory DuckDB (autocommit), and the
    store sees exactly one streaming INSERT per table. Registering a new Arrow view per block
    inside the store's transaction would keep every block alive until commit (memory growing
    with the file); streaming keeps memory bounded by the block size.
    """
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    ingest_id = con.execute("SELECT nextval('ingest_seq')").fetchall()[0][0]
    con.execute(
        "INSERT INTO datasets VALUES (?, ?, ?, ?) ON CONFLICT (dataset) DO NOTHING",
        [dataset, reader.time_kind.value, pseudo is not None, started],
    )
    if pseudo is not None:
        con.execute(
            "INSERT INTO meta VALUES ('key_fingerprint:' || ?, ?) ON CONFLICT (key) DO NOTHING",
            [dataset, pseudo.fingerprint],
        )

    # Item metadata first, so events without a category can take it from their item.
    items_in = _load_items(con, reader, dataset, ingest_id)
    has_items = con.execute("SELECT count(*) > 0 FROM items WHERE dataset = ?", [dataset]).fetchall()[0][0]

    state = _BlockLoader(con, reader, dataset, ingest_id, pseudo, has_items, progress)
    state.run()
    profiles_in = _load_profiles(con, reader, dataset, ingest_id, pseudo)
    users_in = _dedupe_users(con, dataset) if state.users is not None or profiles_in else 0
    rows_read, rows_in, rows_q = state.rows_read, state.rows_in, state.rows_q
    if rows_in + rows_q != rows_read:  # the invariant the store promises; never commit without it
        raise IngestError(f"internal error: {rows_read} rows read but {rows_in} + {rows_q} accounted for")
    finished = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute(
        "INSERT INTO ingests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [ingest_id, dataset, str(reader.path), digest, reader.format, rows_read, rows_in, rows_q, items_in, started, finished],
    )
    no_cat, no_item = _uncategorised(con, dataset, ingest_id, has_items)
    log.info("ingested %s: %d rows read, %d events, %d quarantined", reader.path, rows_read, rows_in, rows_q)
    if no_cat:
        log.info(
            "%s: %d event(s) without a category%s (kept)", reader.path, no_cat,
            f", {no_item} of them of items missing from the item metadata" if no_item else "",
        )
    return IngestResult(
        dataset, str(reader.path), reader.format, digest, ingest_id, rows_read, rows_in, rows_q, items_in, False, 0.0,
        state.reasons, no_cat, no_item, reader.layout(), users_in,
    )


def _load_profiles(
    con: duckdb.DuckDBPyConnection, reader: Reader, dataset: str, ingest_id: int, pseudo: Pseudonymizer | None
) -> int:
    """Profiles from the reader's side file into ``users`` (after the events): ids pseudonymised
    like the events', and only the users with events in the dataset (a profile file lists every
    user of the full dataset; nobody else is kept). Returns the rows written."""
    tables = [t.select(PROFILE_SCHEMA.names).cast(PROFILE_SCHEMA) for t in reader.profiles()]
    if not tables:
        return 0
    mem = duckdb.connect()
    try:
        mem.register("_p", pa.concat_tables(tables))
        clean = "SELECT NULLIF(trim(user_id), '') AS user_id, " + ", ".join(
            f"NULLIF(trim({f}), '') AS {f}" for f in USER_FIELDS
        ) + " FROM _p"
        uid = pseudo.duckdb_sql("user_id") if pseudo is not None else "user_id"
        profiles = mem.sql(  # noqa: F841 - scanned by name below
            f"SELECT DISTINCT ON (user_id) {uid} AS user_id, {', '.join(USER_FIELDS)} FROM ({clean}) "
            "WHERE user_id IS NOT NULL"
        ).to_arrow_table()
    finally:
        mem.close()
    before = con.execute("SELECT count(*) FROM users WHERE dataset = ?", [dataset]).fetchall()[0][0]
    con.execute(
        f"INSERT INTO users (dataset, user_id, {', '.join(USER_FIELDS)}, ingest_id) "
        f"SELECT $dataset, p.user_id, {', '.join('p.' + f for f in USER_FIELDS)}, $ingest_id FROM profiles p "
        "WHERE p.user_id IN (SELECT user_id FROM events WHERE dataset = $dataset)",
        {"dataset": dataset, "ingest_id": ingest_id},
    )
    after = con.execute("SELECT count(*) FROM users WHERE dataset = ?", [dataset]).fetchall()[0][0]
    log.info("%s: %d user profile(s) from the side file", reader.path, after - before)
    return int(after - before)


def _dedupe_users(con: duckdb.DuckDBPyConnection, dataset: str) -> int:
    """One profile row per user: the latest ingest's (the rows of one file agree, or the last wins)."""
    con.execute(
        "DELETE FROM users WHERE rowid IN (SELECT rowid FROM (SELECT rowid, row_number() OVER "
        "(PARTITION BY user_id ORDER BY ingest_id DESC, rowid DESC) AS k FROM users WHERE dataset = ?) WHERE k > 1)",
        [dataset],
    )
    return int(con.execute("SELECT count(*) FROM users WHERE dataset = ?", [dataset]).fetchall()[0][0])


def _uncategorised(con: duckdb.DuckDBPyConnection, dataset: str, ingest_id: int, has_items: bool) -> tuple[int, int | None]:
    """(events of this ingest without a category, those whose item has no metadata row or None)."""
    if not has_items:
        n = con.execute(
            "SELECT count(*) FROM events WHERE dataset = ? AND ingest_id = ? AND category_id IS NULL", [dataset, ingest_id]
        ).fetchall()[0][0]
        return int(n), None
    no_cat, no_item = con.execute(
        "SELECT count(*) FILTER (WHERE e.category_id IS NULL), count(*) FILTER (WHERE i.item_id IS NULL) "
        "FROM events e LEFT JOIN (SELECT DISTINCT item_id FROM items WHERE dataset = $d) i ON i.item_id = e.item_id "
        "WHERE e.dataset = $d AND e.ingest_id = $i",
        {"d": dataset, "i": ingest_id},
    ).fetchall()[0]
    return int(no_cat), int(no_item)


def _load_items(con: duckdb.DuckDBPyConnection, reader: Reader, dataset: str, ingest_id: int) -> int:
    """Stream the reader's item metadata into ``items``; a re-ingested item keeps its newest row."""
    counted = [0]

    def batches():
        for table in reader.items():
            counted[0] += table.num_rows
            if "merchant" not in table.column_names:
                table = table.append_column("merchant", pa.nulls(table.num_rows, pa.string()))
            yield from table.cast(ITEM_SCHEMA_EXTRA).to_batches()

    stream = pa.RecordBatchReader.from_batches(ITEM_SCHEMA_EXTRA, batches())  # noqa: F841 - scanned by name below
    con.execute(
        "INSERT INTO items (dataset, item_id, category_id, category_path, brand, title, price, ingest_id, merchant) "
        "SELECT $dataset, item_id, category_id, category_path, brand, title, price, $ingest_id, merchant "
        "FROM stream WHERE item_id IS NOT NULL",
        {"dataset": dataset, "ingest_id": ingest_id},
    )
    if counted[0]:
        con.execute(
            "DELETE FROM items WHERE rowid IN (SELECT rowid FROM (SELECT rowid, row_number() OVER "
            "(PARTITION BY item_id ORDER BY ingest_id DESC, rowid) AS k FROM items WHERE dataset = ?) WHERE k > 1)",
            [dataset],
        )
    return counted[0]


class _BlockLoader:
    """Loads the reader's blocks into ``events`` and ``quarantine`` of the store's open transaction.

    Each block is parsed, validated and pseudonymised in a private in-memory DuckDB (autocommit,
    so nothing accumulates there); the store's transaction only receives the finished rows, as
    Arrow *relations* (``from_arrow``), never as registered views: a view registered inside a
    transaction keeps its block alive until commit, which would make memory grow with the file.
    """

    def __init__(self, con, reader: Reader, dataset: str, ingest_id: int, pseudo, has_items: bool, progress):
        self.con, self.reader, self.progress = con, reader, progress
        self.rows_read = self.rows_in = self.rows_q = 0
        self.reasons: dict[str, int] = {}
        self.mem = duckdb.connect(config={"memory_limit": "256MB"})  # one block at a time
        self.mem.execute("SET enable_progress_bar = false")
        bounds = {"$lo": str(TS_MIN), "$hi": str(TS_MAX)}
        stage = _stage_sql(reader, with_raw=False)
        stage_raw = _stage_sql(reader, with_raw=True)
        for k, v in bounds.items():
            stage, stage_raw = stage.replace(k, v), stage_raw.replace(k, v)
        self.stage = f"CREATE OR REPLACE TEMP TABLE s AS {stage}"
        self.count = "SELECT count(*) FILTER (WHERE reason IS NOT NULL), count(*) FROM s"
        # Raw text is only built for the rows that go to quarantine.
        self.select_bad = f"SELECT source_row, raw, reason FROM ({stage_raw}) WHERE reason IS NOT NULL"
        if pseudo is not None:
            pid = pseudo.duckdb_sql("user_id")
            # Hash each distinct user of the block once, not once per event.
            users = f"WITH p AS (SELECT user_id, {pid} AS pid FROM (SELECT DISTINCT user_id FROM s WHERE reason IS NULL)) "
            src, uid = "s JOIN p ON p.user_id = s.user_id", "p.pid"
        else:
            users, src, uid = "", "s", "s.user_id"
        self.good = (
            f"{users}SELECT {sql_str(dataset)} AS dataset, {uid} AS user_id, s.item_id, "
            "make_timestamp(s.ts * 1000000) AS ts, s.behavior, s.category_id, s.value, "
            f"{int(ingest_id)}::INTEGER AS ingest_id, s.source_row, s.basket_id FROM {src} WHERE s.reason IS NULL"
        )
        # Events without a category take their item's (item metadata was loaded first).
        self.load = (
            "SELECT g.dataset, g.user_id, g.item_id, g.ts, g.behavior, coalesce(g.category_id, i.category_id), "
            f"g.value, g.ingest_id, g.source_row, g.basket_id FROM _g g LEFT JOIN items i ON i.dataset = {sql_str(dataset)} "
            "AND i.item_id = g.item_id"
            if has_items
            else None
        )
        # Profile fields on the rows: one row per user and block into ``users`` (deduplicated at the end).
        self.users = None
        if reader.user_columns_sql():
            fields = ", ".join(f"s.u_{f}" if f in reader.user_columns_sql() else "NULL::VARCHAR" for f in USER_FIELDS)
            self.users = (
                f"{users}SELECT DISTINCT ON ({uid}) {sql_str(dataset)} AS dataset, {uid} AS user_id, {fields}, "
                f"{int(ingest_id)}::INTEGER AS ingest_id FROM {src} WHERE s.reason IS NULL"
            )
        self.dataset, self.ingest_id = dataset, ingest_id

    def run(self) -> None:
        total = self.reader.total_bytes()
        checked = False
        mem = self.mem
        try:
            for chunk in self.reader.chunks():
                t = chunk.table.append_column("__row", pa.array(chunk.source_row, pa.int64()))
                mem.register("_chunk", t)
                mem.execute(self.stage)
                n_bad_sql, n_rows = mem.execute(self.count).fetchall()[0]
                n_bad = n_bad_sql + len(chunk.rejects)
                n_ok = n_rows - n_bad_sql
                n = chunk.rows_read
                bad = None
                if n_bad_sql:
                    bad = mem.sql(self.select_bad).to_arrow_table().cast(REJECT_SCHEMA)
                if chunk.rejects:
                    rej = pa.table(
                        {
                            "source_row": pa.array([r[0] for r in chunk.rejects], pa.int64()),
                            "raw": pa.array([r[1] for r in chunk.rejects], pa.string()),
                            "reason": pa.array([r[2] for r in chunk.rejects], pa.string()),
                        },
                        schema=REJECT_SCHEMA,
                    )
                    bad = rej if bad is None else pa.concat_tables([bad, rej])
                if not checked and n:
                    # Judge the format on the first block: no usable row at all, or (with enough
                    # rows to judge) a majority of bad ones, means the file is not of this format.
                    checked = True
                    if n_bad == n or (n >= CHECK_MIN_ROWS and n_bad > n * CHECK_BAD_FRACTION):
                        raise FormatMismatch(self.reader.path, *_mismatch_detail(self.reader, bad))
                if n_ok:
                    good = mem.sql(self.good).to_arrow_table()
                    rel = self.con.from_arrow(good)
                    (rel.query("_g", self.load) if self.load else rel).insert_into("events")
                    if self.users is not None:
                        self.con.from_arrow(mem.sql(self.users).to_arrow_table()).insert_into("users")
                mem.unregister("_chunk")
                if bad is not None and bad.num_rows:
                    self._quarantine(bad)
                self.rows_read += n
                self.rows_in += n_ok
                self.rows_q += n_bad
                if self.progress is not None:
                    self.progress(chunk.bytes_done, total)
        finally:
            mem.close()

    def _quarantine(self, bad: pa.Table) -> None:
        for reason in bad.column("reason").to_pylist():
            key = reason.split(":", 1)[0]
            self.reasons[key] = self.reasons.get(key, 0) + 1
        self.con.from_arrow(bad).query(
            "_bad",
            f"SELECT {sql_str(self.dataset)}, {int(self.ingest_id)}, {sql_str(str(self.reader.path))}, "
            "source_row, raw, reason FROM _bad",
        ).insert_into("quarantine")


def _params(sql: str, **values) -> dict:
    """Only the named parameters the statement uses (DuckDB rejects extra ones)."""
    return {k: v for k, v in values.items() if f"${k}" in sql}


def _stage_sql(reader: Reader, with_raw: bool = True) -> str:
    """One SELECT over the registered chunk giving canonical columns plus a rejection reason."""
    cols = reader.columns_sql()
    for required in ("user_id", "item_id", "ts", "behavior"):
        if required not in cols:
            raise TypeError(f"reader {reader.format} gives no SQL for {required}")
    cat = cols.get("category_id", "NULL")
    profile = "".join(f"\n               CAST({sql} AS VARCHAR) AS u_{f}," for f, sql in reader.user_columns_sql().items())
    behaviors = ", ".join(sql_str(b) for b in BEHAVIORS)
    base = f"""
        SELECT CAST({cols['user_id']} AS VARCHAR) AS user_id,
               CAST({cols['item_id']} AS VARCHAR) AS item_id,
               CAST({cols['ts']} AS BIGINT) AS ts,
               CAST({cols['behavior']} AS VARCHAR) AS behavior,
               CAST({cat} AS VARCHAR) AS category_id,
               CAST({cols.get('value', 'NULL')} AS DOUBLE) AS value,
               NULLIF(trim(CAST({cols.get('basket_id', 'NULL')} AS VARCHAR)), '') AS basket_id,
               CAST({reader.ts_raw_sql} AS VARCHAR) AS ts_raw,
               CAST({reader.value_raw_sql} AS VARCHAR) AS value_raw,
               CAST({cols.get('reason', 'NULL')} AS VARCHAR) AS reason0,{profile}
               {reader.raw_sql() if with_raw else 'NULL::VARCHAR'} AS raw,
               __row AS source_row
        FROM _chunk"""
    ordinal = reader.time_kind is TimeKind.ORDINAL
    range_check = "" if ordinal else "WHEN m.ts < $lo OR m.ts > $hi THEN 'timestamp out of range: ' || coalesce(m.ts_raw, m.ts::VARCHAR)"
    return f"""
        SELECT m.*, CASE
            WHEN m.reason0 IS NOT NULL THEN m.reason0
            WHEN m.user_id IS NULL OR trim(m.user_id) = '' OR m.user_id IN ('NA', 'null', 'NULL') THEN 'missing user_id'
            WHEN m.item_id IS NULL OR trim(m.item_id) = '' OR m.item_id IN ('NA', 'null', 'NULL') THEN 'missing item_id'
            WHEN m.ts IS NULL THEN 'unparseable timestamp: ' || coalesce('''' || m.ts_raw || '''', '(empty)')
            {range_check}
            WHEN m.behavior IS NULL OR m.behavior NOT IN ({behaviors})
                THEN 'unknown behaviour code: ' || coalesce('''' || m.behavior || '''', '(empty)')
            WHEN m.value IS NULL AND m.value_raw IS NOT NULL AND trim(m.value_raw) <> ''
                THEN 'unparseable value: ''' || m.value_raw || ''''
            ELSE NULL END AS reason
        FROM ({base}) m"""


def reader_expected(reader: Reader) -> str:
    fn = getattr(reader, "expected_text", None)
    return fn() if fn else f"rows of format {reader.format!r}"


def _mismatch_detail(reader: Reader, bad: pa.Table | None) -> tuple[int | None, str, str]:
    """(line, expected, found) for a FormatMismatch, from the first bad row of the first block."""
    expected = reader_expected(reader)
    if bad is None or not bad.num_rows:
        return None, expected, "no usable rows"
    first = bad.sort_by("source_row").slice(0, 1).to_pylist()[0]
    raw = first["raw"] or ""
    raw = raw if len(raw) < 120 else raw[:120] + "..."
    return first["source_row"], expected, f"mostly unusable rows, e.g. line {first['source_row']}: {raw!r} ({first['reason']})"
