"""Ingest guarantees: nothing lost, bad rows quarantined with reasons, fail fast, atomic, idempotent."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evorec.data.ingest import IngestError, ingest_file
from evorec.data.readers import FormatMismatch, ReaderOptionError
from evorec.utils.privacy import Pseudonymizer, SecretError, load_or_create_key

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

TAOBAO = SHARED / "taobao_userbehavior_head84k" / "UserBehavior_head.csv"
TIANCHI = SHARED / "tianchi_mobile2014_sample2k"
ENRICHED = SHARED / "taobao_userbehavior_enriched_tianchi216549" / "UserBehavior_enriched.csv"
needs_shared = pytest.mark.skipif(not TAOBAO.exists(), reason="../shared/data not present")


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("EVOREC_SECRET", "test-secret")


def counts(store: Path) -> dict[str, int]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
            for t in ("events", "quarantine", "ingests", "items", "datasets")
        }
    finally:
        con.close()


def rows(store: Path, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@needs_shared
def test_taobao_real_file_all_rows_accounted_and_pseudonymised(tmp_path):
    store = tmp_path / "s.duckdb"
    r = ingest_file(store, TAOBAO, "taobao", "taobao")
    assert r.rows_read == 84_475 and r.rows_ingested + r.rows_quarantined == r.rows_read
    assert r.rows_quarantined == 0
    (n_users, n_items, n_cats), = rows(
        store, "SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(DISTINCT category_id) FROM events"
    )
    assert (n_users, n_items, n_cats) == (815, 55_368, 2_914)
    # Line 1 of the file is `1,2268318,2520377,pv,1511544070`.
    (uid, item, ts, beh, cat), = rows(
        store, "SELECT user_id, item_id, epoch(ts)::BIGINT, behavior, category_id FROM events WHERE source_row = 1"
    )
    assert (item, ts, beh, cat) == ("2268318", 1511544070, "view", "2520377")
    expected = hmac.new(b"test-secret", b"1", hashlib.sha256).hexdigest()[:32]
    assert uid == expected == Pseudonymizer(b"test-secret")("1")
    # The raw id is never stored.
    assert rows(store, "SELECT count(*) FROM events WHERE user_id = '1'") == [(0,)]
    by = dict(rows(store, "SELECT behavior, count(*) FROM events GROUP BY 1"))
    assert by == {"view": 75_872, "cart": 4_497, "fav": 2_356, "buy": 1_750}


DIRTY = (
    "1,100,7,pv,1511544070\n"  # 1 ok
    "1,101,7,pv\n"  # 2 wrong column count
    "\n"  # 3 empty line
    "1,102,7,pv,notatime\n"  # 4 unparseable timestamp
    "1,103,7,pv,99999999999\n"  # 5 out of range (year 5138)
    "1,104,7,like,1511544071\n"  # 6 unknown behaviour
    ",105,7,buy,1511544072\n"  # 7 missing user id
    "2,,7,buy,1511544073\n"  # 8 missing item id
    "2,106,7,cart,1511544074,extra\n"  # 9 too many fields
    "2,107,,fav,1511544075\n"  # 10 ok, no category
)


def test_dirty_rows_are_quarantined_with_line_and_reason(tmp_path):
    src = tmp_path / "dirty.csv"
    src.write_bytes(DIRTY.encode() + b"3,10\xff8,7,pv,1511544076\n")  # 11 invalid UTF-8
    store = tmp_path / "s.duckdb"
    r = ingest_file(store, src, "taobao", "d")
    assert r.rows_read == 11
    assert r.rows_ingested == 2 and r.rows_quarantined == 9
    q = {line: reason for line, reason in rows(store, "SELECT source_row, reason FROM quarantine")}
    assert q[2].startswith("wrong column count: expected 5, found 4")
    assert q[3] == "empty line"
    assert q[4] == "unparseable timestamp: 'notatime'"
    assert q[5].startswith("timestamp out of range")
    assert q[6] == "unknown behaviour code: 'like'"
    assert q[7] == "missing user_id"
    assert q[8] == "missing item_id"
    assert q[9].startswith("wrong column count: expected 5, found 6")
    assert q[11].startswith("invalid UTF-8")
    raw = dict(rows(store, "SELECT source_row, raw FROM quarantine"))
    assert raw[6] == "1,104,7,like,1511544071" and raw[9] == "2,106,7,cart,1511544074,extra"
    assert sorted(r[0] for r in rows(store, "SELECT source_row FROM events")) == [1, 10]
    assert rows(store, "SELECT category_id FROM events WHERE source_row = 10") == [(None,)]
    assert set(rows(store, "SELECT DISTINCT source_file FROM quarantine")) == {(str(src),)}


def test_wrong_format_fails_fast_and_store_unchanged(tmp_path):
    store = tmp_path / "s.duckdb"
    good = tmp_path / "good.csv"
    good.write_text("1,100,7,pv,1511544070\n")
    ingest_file(store, good, "taobao", "d")
    before = counts(store)
    tsv = tmp_path / "events.tsv"
    tsv.write_text("1\t100\t7\tpv\t1511544070\n")
    with pytest.raises(FormatMismatch) as e:
        ingest_file(store, tsv, "taobao", "d")
    msg = str(e.value)
    assert str(tsv) in msg and "line 1" in msg and "5 comma-separated fields" in msg and "found 1 field" in msg
    js = tmp_path / "events.json"
    js.write_text('{"user": 1, "item": 2}\n')
    with pytest.raises(FormatMismatch, match="events.json, line 1"):
        ingest_file(store, js, "tianchi-mobile", "d")
    # Right field count but nothing usable (e.g. another 5-column log): refused, not 100% quarantined.
    other = tmp_path / "other.csv"
    other.write_text("".join(f"a{i},b,c,d,e\n" for i in range(100)))
    with pytest.raises(FormatMismatch, match="mostly unusable rows"):
        ingest_file(store, other, "taobao", "d")
    assert counts(store) == before


def test_reingest_same_content_adds_nothing(tmp_path):
    store = tmp_path / "s.duckdb"
    src = tmp_path / "a.csv"
    src.write_text(DIRTY)
    first = ingest_file(store, src, "taobao", "d")
    c1 = counts(store)
    copy = tmp_path / "copy_of_a.csv"
    copy.write_text(DIRTY)  # same content under another name: still the same file
    again = ingest_file(store, copy, "taobao", "d")
    assert again.skipped and not first.skipped
    assert counts(store) == c1
    # Another dataset gets its own copy.
    ingest_file(store, src, "taobao", "d2")
    assert counts(store)["events"] == 2 * c1["events"]


def test_gzip_and_zip_inputs(tmp_path):
    text = "1,100,7,pv,1511544070\n2,101,8,buy,1511544071\n"
    gz = tmp_path / "a.csv.gz"
    with gzip.open(gz, "wt") as f:
        f.write(text)
    zp = tmp_path / "b.zip"
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("UserBehavior.csv", text + "3,102,9,fav,1511544072\n")
    store = tmp_path / "s.duckdb"
    assert ingest_file(store, gz, "taobao", "g").rows_ingested == 2
    assert ingest_file(store, zp, "taobao", "z").rows_ingested == 3
    bad_zip = tmp_path / "two.zip"
    with zipfile.ZipFile(bad_zip, "w") as z:
        z.writestr("a.csv", text)
        z.writestr("b.csv", text)
    with pytest.raises(FormatMismatch, match="one data file"):
        ingest_file(store, bad_zip, "taobao", "z2")


@pytest.mark.skipif(not TIANCHI.exists(), reason="../shared/data not present")
def test_tianchi_mobile_with_items(tmp_path):
    store = tmp_path / "s.duckdb"
    r = ingest_file(
        store,
        TIANCHI / "sample_user_behavior.csv",
        "tianchi-mobile",
        "tm",
        options={"items": str(TIANCHI / "sample_item_info.csv")},
    )
    assert r.rows_read == 1999 and r.rows_ingested + r.rows_quarantined == 1999  # header + 1,999 rows
    assert r.items_ingested > 0
    (tmin, tmax), = rows(store, "SELECT min(ts)::VARCHAR, max(ts)::VARCHAR FROM events")
    assert tmin >= "2014-11-18" and tmax < "2014-12-19"
    # behaviour codes 1..4 map to view/fav/cart/buy
    assert set(dict(rows(store, "SELECT behavior, count(*) FROM events GROUP BY 1"))) <= {"view", "fav", "cart", "buy"}
    # `2014-12-06 02` is 02:00 UTC
    assert rows(store, "SELECT count(*) FROM events WHERE minute(ts) <> 0 OR second(ts) <> 0") == [(0,)]


@pytest.mark.skipif(not ENRICHED.exists(), reason="../shared/data not present")
def test_tianchi_216549_enriched_items_and_prices(tmp_path):
    store = tmp_path / "s.duckdb"
    r = ingest_file(store, ENRICHED, "tianchi-216549", "en")
    assert r.rows_ingested + r.rows_quarantined == r.rows_read > 0
    (n_items, n_brand, n_title, n_price), = rows(
        store, "SELECT count(*), count(brand), count(title), count(price) FROM items"
    )
    assert n_items == 165 and n_brand == n_title == n_price == 165
    assert rows(store, "SELECT count(DISTINCT category_path) FROM items") == [(6,)]
    assert rows(store, "SELECT count(*) FROM events WHERE value IS NULL") == [(0,)]


def test_generic_csv_with_map_and_options(tmp_path):
    src = tmp_path / "mine.tsv"
    src.write_text(
        "uid\titem\twhen\taction\tprice\textra\n"
        "u1\ti1\t2024-03-01T10:00:00Z\tpv\t\tx\n"
        "u1\ti2\t2024-03-01T10:05:00+01:00\tbuy\t9.5\tx\n"
        "u2\ti1\tyesterday\tpv\t\tx\n"
        "u2\ti3\t2024-03-02T00:00:00Z\tpv\tcheap\tx\n"
    )
    store = tmp_path / "s.duckdb"
    r = ingest_file(
        store,
        src,
        "csv",
        "mine",
        options={
            "map": "user_id=uid,item_id=item,ts=when,behavior=action,value=price",
            "delimiter": "tab",
            "ts_format": "iso",
            "behavior_map": "pv:view;buy:buy",
        },
        pseudonymize=False,
    )
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined) == (4, 2, 2)
    assert rows(store, "SELECT user_id, item_id, ts::VARCHAR, behavior, value FROM events ORDER BY source_row") == [
        ("u1", "i1", "2024-03-01 10:00:00", "view", None),
        ("u1", "i2", "2024-03-01 09:05:00", "buy", 9.5),
    ]
    assert dict(rows(store, "SELECT source_row, reason FROM quarantine")) == {
        4: "unparseable timestamp: 'yesterday'",
        5: "unparseable value: 'cheap'",
    }
    with pytest.raises(ReaderOptionError, match="no column for"):
        ingest_file(store, src, "csv", "x", options={"map": "user_id=uid,item_id=item", "delimiter": "tab"})
    with pytest.raises(FormatMismatch, match="missing"):
        ingest_file(store, src, "csv", "x", options={"map": "user_id=uid,item_id=item,ts=time", "delimiter": "tab"})
    with pytest.raises(FormatMismatch, match="delimiter"):
        ingest_file(store, src, "csv", "x", options={"map": "user_id=uid,item_id=item,ts=when"})
    with pytest.raises(ReaderOptionError, match="unknown column"):
        ingest_file(store, src, "csv", "x", options={"map": "person=uid"})


def test_generic_parquet_canonical_and_jsonl(tmp_path):
    t = pa.table(
        {
            "user_id": ["a", "a", "b"],
            "item_id": ["1", "2", "3"],
            "ts": pa.array([1_700_000_000, 1_700_000_100, None], pa.int64()),
            "behavior": ["view", "buy", "view"],
            "category_id": ["c1", "c2", None],
            "value": [None, 3.0, None],
        }
    )
    pq.write_table(t, tmp_path / "ev.parquet")
    store = tmp_path / "s.duckdb"
    r = ingest_file(store, tmp_path / "ev.parquet", "parquet", "p")
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined) == (3, 2, 1)
    assert rows(store, "SELECT source_row, reason FROM quarantine") == [(3, "unparseable timestamp: (empty)")]
    js = tmp_path / "ev.jsonl"
    js.write_text(
        '{"u": "a", "i": 1, "t": 1700000000000}\n'
        "not json\n"
        '{"u": "b", "i": 2, "t": 1700000001000}\n'
        "[1, 2]\n"
    )
    r = ingest_file(store, js, "jsonl", "j", options={"map": "user_id=u,item_id=i,ts=t", "ts_format": "unix_ms"})
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined) == (4, 2, 2)
    q = dict(rows(store, "SELECT source_row, reason FROM quarantine WHERE dataset = 'j'"))
    assert q[2].startswith("invalid JSON") and q[4].startswith("not a JSON object")


def test_pseudonymisation_settings_must_match_per_dataset(tmp_path, monkeypatch):
    store = tmp_path / "s.duckdb"
    a = tmp_path / "a.csv"
    a.write_text("1,100,7,pv,1511544070\n")
    b = tmp_path / "b.csv"
    b.write_text("2,100,7,pv,1511544070\n")
    ingest_file(store, a, "taobao", "d")
    with pytest.raises(IngestError, match="pseudonymised"):
        ingest_file(store, b, "taobao", "d", pseudonymize=False)
    monkeypatch.setenv("EVOREC_SECRET", "another-secret")
    with pytest.raises(IngestError, match="another key"):
        ingest_file(store, b, "taobao", "d")
    ingest_file(store, b, "taobao", "raw", pseudonymize=False)
    assert rows(store, "SELECT user_id FROM events WHERE dataset = 'raw'") == [("2",)]


def test_key_file_created_0600_and_unsafe_permissions_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("EVOREC_SECRET")
    keyfile = tmp_path / "keys" / "secret.key"
    monkeypatch.setenv("EVOREC_SECRET_FILE", str(keyfile))
    p1 = Pseudonymizer.from_environment()
    assert keyfile.stat().st_mode & 0o777 == 0o600
    assert Pseudonymizer.from_environment() == p1  # stable across runs
    keyfile.chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_or_create_key(keyfile)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from evorec.data.ingest import ingest_file
    marker = Path(sys.argv[3])
    def progress(done, total):
        marker.write_text(str(done))  # the first block is inside the transaction now
        time.sleep(60)
    ingest_file(sys.argv[1], sys.argv[2], "taobao", "big", progress=progress)
    """
)


def test_killed_ingest_leaves_store_as_before_and_can_rerun(tmp_path):
    store = tmp_path / "s.duckdb"
    small = tmp_path / "small.csv"
    small.write_text("1,100,7,pv,1511544070\n")
    ingest_file(store, small, "taobao", "small")
    before = counts(store)
    big = tmp_path / "big.csv"
    line = "1,100,7,pv,1511544070\n"
    big.write_text(line * 1_200_000)  # > one 16 MB block, so the kill lands between blocks
    marker = tmp_path / "marker"
    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, str(script), str(store), str(big), str(marker)], env=env)
    try:
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "ingest never reached its first block"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert counts(store) == before
    r = ingest_file(store, big, "taobao", "big")  # and a rerun completes
    assert r.rows_ingested == 1_200_000


def test_tmall_ijcai15_user_log_fixture(tmp_path):
    """Tmall IJCAI-15 `user_log_format1.csv` layout (no real copy in ../shared/data)."""
    src = tmp_path / "user_log_format1.csv"
    src.write_text(
        "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n"
        "328862,323294,833,2882,2661,829,0\n"  # 2: click on 2015-08-29
        "328862,844400,1271,2882,2661,1111,2\n"  # 3: buy on 11-11
        "328862,575153,1271,2882,,0511,3\n"  # 4: fav, no brand, zero-padded date
        "234512,575153,1271,2882,2661,1301,1\n"  # 5: month 13 -> unparseable
        "234512,575153,1271,2882,2661,0601,9\n"  # 6: unknown action code
    )
    store = tmp_path / "s.duckdb"
    r = ingest_file(store, src, "tmall", "tmall", pseudonymize=False)
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined) == (5, 3, 2)
    assert rows(store, "SELECT source_row, ts::DATE::VARCHAR, behavior, category_id FROM events ORDER BY source_row") == [
        (2, "2015-08-29", "click", "833"),
        (3, "2015-11-11", "buy", "1271"),
        (4, "2015-05-11", "fav", "1271"),
    ]
    q = dict(rows(store, "SELECT source_row, reason FROM quarantine"))
    assert q[5].startswith("unparseable timestamp") and q[6] == "unknown behaviour code: '9'"
    assert dict(rows(store, "SELECT item_id, brand FROM items WHERE item_id = '323294'")) == {"323294": "2661"}
    # Another year through --option; a bad year is refused before anything is written.
    r2 = ingest_file(store, src, "tmall", "tmall14", options={"year": "2014"}, pseudonymize=False)
    assert r2.rows_ingested == 3
    with pytest.raises(ReaderOptionError, match="4-digit year"):
        ingest_file(store, src, "tmall", "t3", options={"year": "15"}, pseudonymize=False)
