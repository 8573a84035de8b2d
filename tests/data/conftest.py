"""Shared fixtures for the data-layer tests.

``make_taobao_store`` builds the Taobao store through the real ingest (``evorec.data.ingest``).
The other real-data stores are loaded with DuckDB directly, with the exact semantics the tests
rely on (Grocery reviews as ``rate`` events; Beauty as an ordinal dataset, ts = position).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from evorec.data import store

# tests/data/conftest.py -> parents[2] is the repository root; the shared data sits beside it.
DATA_DIR = Path(__file__).parents[2] / ".." / "shared" / "data"
TAOBAO_CSV = DATA_DIR / "taobao_userbehavior_head84k" / "UserBehavior_head.csv"
GROCERY_TSV = DATA_DIR / "amazon_grocery_rechorus" / "train.csv"
BEAUTY_TXT = DATA_DIR / "amazon_s3rec_seq" / "Beauty.txt"

TAOBAO_DATASET = "taobao"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected the shared data folder beside the repo)")
    return path


def make_taobao_store(path: Path, dataset: str = TAOBAO_DATASET) -> Path:
    """Create an evorec store at ``path`` holding the Taobao head file as dataset ``dataset``
    (ids not pseudonymised, so tests can name real users).

    Uses the real ingest (``evorec.data.ingest``); events get ``ingest_id`` 1 and
    ``source_row`` = 1-based line number (the file has no header). Where the ingest layer is
    missing, the same rows are loaded with DuckDB's CSV reader.
    """
    csv = require(TAOBAO_CSV).resolve()
    try:
        from evorec.data.ingest import ingest_file
    except ImportError:  # transitional: the ingest layer was written in parallel
        return _make_taobao_store_sql(path, csv, dataset)
    ingest_file(path, csv, "taobao", dataset, pseudonymize=False)
    return path


def _make_taobao_store_sql(path: Path, csv: Path, dataset: str) -> Path:
    con = store.connect(path)
    try:
        con.execute("INSERT INTO datasets VALUES (?, 'unix', false, now()::TIMESTAMP)", [dataset])
        # One thread so that row_number() over () follows the file's line order.
        con.execute("SET threads = 1")
        con.execute(
            """
            INSERT INTO events (dataset, user_id, item_id, ts, behavior, category_id, value, ingest_id, source_row)
            SELECT ?, CAST(c0 AS VARCHAR), CAST(c1 AS VARCHAR), make_timestamp(c4 * 1000000),
                   CASE c3 WHEN 'pv' THEN 'view' ELSE c3 END,
                   CAST(c2 AS VARCHAR), NULL, 1, row_number() OVER ()
            FROM read_csv(?, header = false, columns = {
                'c0': 'BIGINT', 'c1': 'BIGINT', 'c2': 'BIGINT', 'c3': 'VARCHAR', 'c4': 'BIGINT'})
            """,
            [dataset, str(csv)],
        )
        con.execute("RESET threads")
    finally:
        con.close()
    return path


def make_grocery_store(path: Path, dataset: str = "grocery") -> Path:
    """Amazon Grocery (ReChorus train.csv, TSV ``user_id item_id time``, a header line) as
    ``rate`` events (they are reviews), unix time, no category on the rows."""
    tsv = require(GROCERY_TSV).resolve()
    con = store.connect(path)
    try:
        con.execute("INSERT INTO datasets VALUES (?, 'unix', false, now()::TIMESTAMP)", [dataset])
        con.execute("SET threads = 1")
        con.execute(
            """
            INSERT INTO events (dataset, user_id, item_id, ts, behavior, category_id, value, ingest_id, source_row)
            SELECT ?, CAST(user_id AS VARCHAR), CAST(item_id AS VARCHAR), make_timestamp(time * 1000000),
                   'rate', NULL, NULL, 1, row_number() OVER () + 1
            FROM read_csv(?, header = true, delim = '\t',
                          columns = {'user_id': 'BIGINT', 'item_id': 'BIGINT', 'time': 'BIGINT'})
            """,
            [dataset, str(tsv)],
        )
        con.execute("RESET threads")
    finally:
        con.close()
    return path


def make_beauty_ordinal_store(path: Path, n_users: int = 2000, dataset: str = "beauty") -> Path:
    """The first ``n_users`` lines of S3-Rec's Beauty.txt (``user item item ...``, time order, no
    timestamps) as an *ordinal* dataset: ts = 1970-01-01 + position (1-based) seconds."""
    txt = require(BEAUTY_TXT).resolve()
    con = store.connect(path)
    try:
        con.execute("INSERT INTO datasets VALUES (?, 'ordinal', false, now()::TIMESTAMP)", [dataset])
        con.execute("SET threads = 1")
        con.execute(
            """
            INSERT INTO events (dataset, user_id, item_id, ts, behavior, category_id, value, ingest_id, source_row)
            WITH lines AS (
                SELECT row_number() OVER () AS line_no, string_split(trim(line), ' ') AS parts
                FROM read_csv(?, header = false, delim = '\x01', columns = {'line': 'VARCHAR'})
            ), ev AS (
                SELECT line_no, parts[1] AS user_id,
                       unnest(list_slice(parts, 2, len(parts))) AS item_id,
                       unnest(range(1, len(parts))) AS pos
                FROM lines WHERE line_no <= ?
            )
            SELECT ?, user_id, item_id, make_timestamp(pos * 1000000), 'rate', NULL, NULL, 1, line_no
            FROM ev
            """,
            [str(txt), n_users, dataset],
        )
        con.execute("RESET threads")
    finally:
        con.close()
    return path


def make_event_store(path: Path, rows: list[tuple], dataset: str = "toy", time_kind: str = "unix") -> Path:
    """A store with hand-written events.

    ``rows``: (user_id, item_id, ts_seconds, behavior, category_id, value, ingest_id, source_row).
    """
    cols = ["user_id", "item_id", "ts_s", "behavior", "category_id", "value", "ingest_id", "source_row"]
    types = [pa.string(), pa.string(), pa.int64(), pa.string(), pa.string(), pa.float64(), pa.int32(), pa.int64()]
    table = pa.table({c: pa.array([r[k] for r in rows], type=t) for k, (c, t) in enumerate(zip(cols, types))})
    con = store.connect(path)
    try:
        con.execute("INSERT INTO datasets VALUES (?, ?, false, now()::TIMESTAMP)", [dataset, time_kind])
        con.register("toy_rows", table)
        con.execute(
            """
            INSERT INTO events (dataset, user_id, item_id, ts, behavior, category_id, value, ingest_id, source_row)
            SELECT ?, user_id, item_id, make_timestamp(ts_s * 1000000), behavior, category_id, value,
                   ingest_id, source_row
            FROM toy_rows
            """,
            [dataset],
        )
    finally:
        con.close()
    return path


@pytest.fixture(scope="session")
def taobao_store(tmp_path_factory) -> Path:
    """A read-only-by-convention store with the Taobao head file (built once per session)."""
    return make_taobao_store(tmp_path_factory.mktemp("taobao") / "store.duckdb")
