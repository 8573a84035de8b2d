"""Ingest: one source file -> canonical events in the store, in one transaction.

Guarantees (tested in tests/data/test_ingest.py):

- every row read ends in ``events`` or in ``quarantine`` (with file, line, raw text, reason):
  ``rows_ingested + rows_quarantined == rows_read``;
- a file that is not of the stated format fails before anything is written;
- the whole file is one transaction: a killed or failed ingest leaves the store as it was;
- re-ingesting a file whose content is already recorded for the dataset adds nothing;
- user ids are pseudonymised with a keyed HMAC-SHA256 inside the database, unless turned off.
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
from evorec.data.readers.base import CHECK_BAD_FRACTION, CHECK_MIN_ROWS, FormatMismatch, Reader, sql_str
from evorec.types import BEHAVIORS, REJECT_SCHEMA, TS_MAX, TS_MIN, TimeKind
from evorec.utils.privacy import PSEUDONYM_HEX_CHARS, Pseudonymizer

log = logging.getLogger(__name__)


class IngestError(RuntimeError):
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


def ingest_file(
    store: str | Path,
    source: str | Path,
    fmt: str,
    dataset: str | None = None,
    *,
    options: dict[str, str] | None = None,
    pseudonymize: bool = True,
    pseudonymizer: Pseudonymizer | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> IngestResult:
    """Read ``source`` in format ``fmt`` into ``dataset`` of the store at ``store``.

    ``options`` are reader options (``--map``/``--option`` on the command line). ``progress`` is
    called with (bytes done, total bytes or None).
    """
    t0 = time.perf_counter()
    source = Path(source)
    reader = get_reader(fmt)(source, options)
    if not source.exists():
        raise FileNotFoundError(f"source file not found: {source}")
    reader.check()  # fail fast, before the store is even opened
    dataset = dataset or default_dataset_name(source, fmt)
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
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    result.seconds = time.perf_counter() - t0
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
    items_in = 0
    for items in reader.items():
        con.register("_items_chunk", items)
        con.execute(
            "DELETE FROM items WHERE dataset = ? AND item_id IN (SELECT item_id FROM _items_chunk)", [dataset]
        )
        con.execute(
            "INSERT INTO items SELECT ?, item_id, category_id, category_path, brand, title, price, ? "
            "FROM (SELECT *, row_number() OVER (PARTITION BY item_id) AS _k FROM _items_chunk) WHERE _k = 1",
            [dataset, ingest_id],
        )
        items_in += items.num_rows
        con.unregister("_items_chunk")
    has_items = con.execute("SELECT count(*) > 0 FROM items WHERE dataset = ?", [dataset]).fetchall()[0][0]

    stage_sql = _stage_sql(reader, has_items)
    user_sql = "m.user_id"
    params_user: list = []
    if pseudo is not None:
        outer, inner = pseudo.sql_pads()
        user_sql = f"substr(sha256($outer || unhex(sha256($inner || m.user_id::BLOB))), 1, {PSEUDONYM_HEX_CHARS})"
        params_user = [outer, inner]

    total = reader.total_bytes()
    rows_read = rows_in = rows_q = 0
    reasons: dict[str, int] = {}
    checked = False
    for chunk in reader.chunks():
        t = chunk.table.append_column("__row", pa.array(chunk.source_row, pa.int64()))
        con.register("_chunk", t)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _stage AS {stage_sql}",
            _params(stage_sql, dataset=dataset, lo=TS_MIN, hi=TS_MAX),
        )
        con.unregister("_chunk")
        n_ok, n_bad = con.execute(
            "SELECT count(*) FILTER (WHERE reason IS NULL), count(*) FILTER (WHERE reason IS NOT NULL) FROM _stage"
        ).fetchall()[0]
        n_bad += len(chunk.rejects)
        n = chunk.rows_read
        if not checked and n:
            # Judge the format on the first block: no usable row at all, or (with enough rows to
            # judge) a majority of bad ones, means the file is not of this format.
            checked = True
            if n_bad == n or (n >= CHECK_MIN_ROWS and n_bad > n * CHECK_BAD_FRACTION):
                raise FormatMismatch(reader.path, _first_bad_line(con, chunk), reader_expected(reader), _bad_summary(con, chunk))
        params = {"dataset": dataset, "ingest_id": ingest_id}
        if pseudo is not None:
            params.update(outer=params_user[0], inner=params_user[1])
        con.execute(
            f"INSERT INTO events SELECT $dataset, {user_sql}, m.item_id, make_timestamp(m.ts * 1000000), "
            "m.behavior, m.category_id, m.value, $ingest_id, m.source_row FROM _stage m WHERE m.reason IS NULL",
            params,
        )
        con.execute(
            "INSERT INTO quarantine SELECT $dataset, $ingest_id, $file, source_row, raw, reason "
            "FROM _stage WHERE reason IS NOT NULL",
            {"dataset": dataset, "ingest_id": ingest_id, "file": str(reader.path)},
        )
        for reason, cnt in con.execute(
            "SELECT split_part(reason, ':', 1), count(*) FROM _stage WHERE reason IS NOT NULL GROUP BY 1"
        ).fetchall():
            reasons[reason] = reasons.get(reason, 0) + cnt
        if chunk.rejects:
            rej = pa.table(
                {
                    "source_row": [r[0] for r in chunk.rejects],
                    "raw": [r[1] for r in chunk.rejects],
                    "reason": [r[2] for r in chunk.rejects],
                },
                schema=REJECT_SCHEMA,
            )
            con.register("_rej", rej)
            con.execute(
                "INSERT INTO quarantine SELECT $dataset, $ingest_id, $file, source_row, raw, reason FROM _rej",
                {"dataset": dataset, "ingest_id": ingest_id, "file": str(reader.path)},
            )
            con.unregister("_rej")
            for r in chunk.rejects:
                key = r[2].split(":", 1)[0]
                reasons[key] = reasons.get(key, 0) + 1
        rows_read += n
        rows_in += n_ok
        rows_q += n_bad
        if progress is not None:
            progress(chunk.bytes_done, total)
    con.execute("DROP TABLE IF EXISTS _stage")
    assert rows_in + rows_q == rows_read, "ingest lost rows"  # the invariant the store promises
    finished = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute(
        "INSERT INTO ingests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [ingest_id, dataset, str(reader.path), digest, reader.format, rows_read, rows_in, rows_q, items_in, started, finished],
    )
    log.info("ingested %s: %d rows read, %d events, %d quarantined", reader.path, rows_read, rows_in, rows_q)
    return IngestResult(
        dataset, str(reader.path), reader.format, digest, ingest_id, rows_read, rows_in, rows_q, items_in, False, 0.0, reasons
    )


def _params(sql: str, **values) -> dict:
    """Only the named parameters the statement uses (DuckDB rejects extra ones)."""
    return {k: v for k, v in values.items() if f"${k}" in sql}


def _stage_sql(reader: Reader, has_items: bool) -> str:
    """One SELECT over the registered chunk giving canonical columns plus a rejection reason."""
    cols = reader.columns_sql()
    for required in ("user_id", "item_id", "ts", "behavior"):
        if required not in cols:
            raise TypeError(f"reader {reader.format} gives no SQL for {required}")
    cat = cols.get("category_id", "NULL")
    behaviors = ", ".join(sql_str(b) for b in BEHAVIORS)
    base = f"""
        SELECT CAST({cols['user_id']} AS VARCHAR) AS user_id,
               CAST({cols['item_id']} AS VARCHAR) AS item_id,
               CAST({cols['ts']} AS BIGINT) AS ts,
               CAST({cols['behavior']} AS VARCHAR) AS behavior,
               CAST({cat} AS VARCHAR) AS category_id,
               CAST({cols.get('value', 'NULL')} AS DOUBLE) AS value,
               CAST({reader.ts_raw_sql} AS VARCHAR) AS ts_raw,
               CAST({reader.value_raw_sql} AS VARCHAR) AS value_raw,
               CAST({cols.get('reason', 'NULL')} AS VARCHAR) AS reason0,
               {reader.raw_sql()} AS raw,
               __row AS source_row
        FROM _chunk"""
    if has_items:
        base = f"""
        SELECT b.* REPLACE (coalesce(b.category_id, i.category_id) AS category_id)
        FROM ({base}) b LEFT JOIN items i ON i.dataset = $dataset AND i.item_id = b.item_id"""
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


def _first_bad_line(con: duckdb.DuckDBPyConnection, chunk) -> int | None:
    lines = [r[0] for r in chunk.rejects if r[0] is not None]
    row = con.execute("SELECT min(source_row) FROM _stage WHERE reason IS NOT NULL").fetchall()[0]
    if row and row[0] is not None:
        lines.append(row[0])
    return min(lines) if lines else None


def _bad_summary(con: duckdb.DuckDBPyConnection, chunk) -> str:
    rows = [(r[0], r[1], r[2]) for r in chunk.rejects[:1]]
    rows += con.execute(
        "SELECT source_row, raw, reason FROM _stage WHERE reason IS NOT NULL ORDER BY source_row LIMIT 1"
    ).fetchall()
    rows = sorted((r for r in rows if r[0] is not None), key=lambda r: r[0])[:1] or rows[:1]
    if not rows:
        return "mostly unusable rows"
    line, raw, reason = rows[0]
    raw = raw if raw is None or len(raw) < 120 else raw[:120] + "..."
    return f"mostly unusable rows, e.g. line {line}: {raw!r} ({reason})"
