"""Shared fixtures for the data-layer tests.

The real ingest layer (``evorec.data.ingest``) is written in parallel; until it lands,
``make_taobao_store`` fills a store straight from DuckDB's CSV reader. It is the one place to
swap for the real ingest later.
"""

from __future__ import annotations

from pathlib import Path

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
    """Create an evorec store at ``path`` holding the Taobao head file as dataset ``dataset``.

    Events get ``ingest_id`` 1 and ``source_row`` = 1-based line number (the file has no header).
    """
    csv = require(TAOBAO_CSV).resolve()
    con = store.connect(path)
    try:
        con.execute(
            "INSERT INTO datasets VALUES (?, 'unix', false, now()::TIMESTAMP)",
            [dataset],
        )
        # One thread so that row_number() over () follows the file's line order.
        con.execute("SET threads = 1")
        con.execute(
            """
            INSERT INTO events
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
            INSERT INTO events
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
            INSERT INTO events
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
    con = store.connect(path)
    try:
        con.execute("INSERT INTO datasets VALUES (?, ?, false, now()::TIMESTAMP)", [dataset, time_kind])
        if rows:
            con.executemany(
                "INSERT INTO events VALUES (?, ?, ?, make_timestamp(CAST(? AS BIGINT) * 1000000), ?, ?, ?, ?, ?)",
                [(dataset, *r) for r in rows],
            )
    finally:
        con.close()
    return path


@pytest.fixture(scope="session")
def taobao_store(tmp_path_factory) -> Path:
    """A read-only-by-convention store with the Taobao head file (built once per session)."""
    return make_taobao_store(tmp_path_factory.mktemp("taobao") / "store.duckdb")
