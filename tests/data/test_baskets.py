"""Basket ids through the data path: events.basket_id -> cleaning -> SequenceData.basket.

Hand-made logs: the same purchases with and without basket ids (two baskets on one day are two
baskets with ids, one basket by day without), ties, dedup inside and across baskets, and the
compatibility of stores and sequence directories written before baskets existed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from evorec.data import store as store_mod
from evorec.data.clean import CleanConfig, clean_events, open_store_events
from evorec.data.describe import describe_dataset
from evorec.data.ingest import ingest_file
from evorec.data.prepare import PrepareConfig, prepare
from evorec.data.sequences import FORMAT_VERSION, SequenceData, _fingerprint, baskets_by_time, is_current, write_sequences
from evorec.types import EVENT_SCHEMA

DAY = 86_400
T0 = 1_483_228_800  # 2017-01-01 00:00:00 UTC
COLS = ["dataset", "user_id", "item_id", "ts", "behavior", "category_id", "value", "ingest_id", "source_row", "basket_id"]

# (user, item, seconds after T0, value, basket id): user u buys in two baskets on day 0 (10:00,
# 15:00) and one on day 1; user w in one basket on day 0 and one on day 2.
LOG = [
    ("u", "milk", 10 * 3600, 1.0, "b1"),
    ("u", "eggs", 10 * 3600, 2.0, "b1"),
    ("u", "milk", 15 * 3600, 1.0, "b2"),
    ("u", "tea", DAY + 9 * 3600, 3.0, "b3"),
    ("w", "tea", 8 * 3600, 3.0, "b7"),
    ("w", "milk", 2 * DAY + 23 * 3600 + 59 * 60, 1.0, "b8"),
]


def make_store(path: Path, log: list[tuple], dataset: str, *, with_ids: bool = True, time_kind: str = "unix") -> Path:
    table = pa.table(
        {
            "user_id": [r[0] for r in log],
            "item_id": [r[1] for r in log],
            "ts_s": pa.array([T0 + r[2] for r in log], pa.int64()),
            "value": pa.array([r[3] for r in log], pa.float64()),
            "basket_id": pa.array([r[4] if with_ids else None for r in log], pa.string()),
            "source_row": pa.array(range(2, len(log) + 2), pa.int64()),
        }
    )
    con = store_mod.connect(path)
    try:
        con.execute("INSERT INTO datasets VALUES (?, ?, false, now()::TIMESTAMP) ON CONFLICT DO NOTHING", [dataset, time_kind])
        con.register("log_rows", table)
        con.execute(
            f"INSERT INTO events ({', '.join(COLS)}) SELECT ?, user_id, item_id, make_timestamp(ts_s * 1000000), "
            "'buy', NULL, value, 1, source_row, basket_id FROM log_rows",
            [dataset],
        )
    finally:
        con.close()
    return path


def test_event_schema_and_store_have_a_nullable_basket_id(tmp_path):
    assert EVENT_SCHEMA.field("basket_id").type == pa.string() and EVENT_SCHEMA.field("basket_id").nullable
    con = store_mod.connect(tmp_path / "s.duckdb")
    try:
        assert store_mod.event_columns(con)[-1] == "basket_id"
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [(str(store_mod.SCHEMA_VERSION),)]
    finally:
        con.close()


def test_two_baskets_of_one_day_with_ids_and_by_day_without(tmp_path, caplog):
    store = make_store(tmp_path / "s.duckdb", LOG, "ids")
    make_store(store, LOG, "days", with_ids=False)
    with caplog.at_level(logging.INFO, logger="evorec.data.prepare"):
        ids = prepare(store, "ids", PrepareConfig(), tmp_path / "ids").open()
    assert "baskets: the log's basket ids" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="evorec.data.prepare"):
        res = prepare(store, "days", PrepareConfig(), tmp_path / "days")
    days = res.open()
    assert "a basket is a user's events of one calendar day (UTC)" in caplog.text
    assert res.baskets == "day" and res.to_dict()["baskets"] == "day"

    for seq in (ids, days):
        assert seq.basket.dtype == np.int64 and len(seq.basket) == len(seq.item) == 6
        assert (seq.path / "basket.npy").exists()
    u, w = ids.row_of("u"), ids.row_of("w")
    assert ids.items.reverse(ids.user(u).item) == ["milk", "eggs", "milk", "tea"]  # same second: source order
    assert ids.user(u).basket.tolist() == [0, 0, 1, 2]  # b1 (10:00), b2 (15:00), b3 (next day)
    assert ids.user(w).basket.tolist() == [0, 1]
    assert days.user(days.row_of("u")).basket.tolist() == [0, 0, 0, 1]  # day 0, day 1
    assert days.user(days.row_of("w")).basket.tolist() == [0, 1]  # day 0, day 2 (23:59 is still day 2)
    assert (ids.basket_source, days.basket_source) == ("basket_id", "day")
    assert (ids.meta["baskets"], days.meta["baskets"]) == ("basket_id", "day")
    # without basket ids the writer and the on-the-fly derivation agree
    assert np.array_equal(days.basket, baskets_by_time(days.ts, days.offsets))
    # the arrays other than baskets do not depend on the basket ids
    for arr in ("offsets", "item", "category", "behavior", "ts"):
        assert np.array_equal(getattr(ids, arr), getattr(days, arr)), arr
    assert ids.fingerprint != days.fingerprint  # the baskets are part of the identity


def test_ties_mixed_and_interleaved_baskets(tmp_path):
    log = [
        ("u", "a", 100, 1.0, "z9"),  # two baskets at the same second: numbered and ordered by basket id
        ("u", "b", 100, 1.0, "a1"),
        ("u", "f", 100, 1.0, "z9"),  # interleaved in the file: grouped with z9's first line
        ("u", "c", 200, 1.0, None),  # no id: the day's pseudo-basket (starts at 200)
        ("u", "d", 300, 1.0, "z9"),  # a later line of z9 keeps z9's number (z9 spans c's time)
        ("u", "e", DAY + 5, 1.0, None),
    ]
    store = make_store(tmp_path / "s.duckdb", log, "mix")
    seq = prepare(store, "mix", PrepareConfig(), tmp_path / "mix").open()
    assert seq.basket_source == "mixed"
    u = seq.user(seq.row_of("u"))
    assert seq.items.reverse(u.item) == ["b", "a", "f", "c", "d", "e"]  # same second: basket a1, then z9
    assert u.basket.tolist() == [0, 1, 1, 2, 1, 3]


def test_ordinal_dataset_without_ids_every_event_is_a_basket(tmp_path):
    log = [("u", "a", 1, None, None), ("u", "b", 2, None, None), ("w", "a", 1, None, None)]
    store = make_store(tmp_path / "s.duckdb", log, "ord", time_kind="ordinal")
    seq = prepare(store, "ord", PrepareConfig(), tmp_path / "ord").open()
    assert seq.basket_source == "event" and seq.basket.tolist() == [0, 1, 0]


def test_dedup_merges_repeated_lines_of_one_basket_only(tmp_path):
    log = [
        ("u", "milk", 100, 1.0, "b1"),
        ("u", "milk", 100, 1.0, "b1"),  # the same line again in the same basket: merged
        ("u", "milk", 100, 1.0, "b2"),  # the same line in another basket at the same second: kept
    ]
    store = make_store(tmp_path / "s.duckdb", log, "ids")
    make_store(store, log, "days", with_ids=False)
    for dataset, kept in (("ids", [2, 4]), ("days", [2])):
        backend, events, tk = open_store_events(store, dataset)
        with clean_events(events, CleanConfig(dedup=True), time_kind=tk) as cleaned:
            got = sorted(cleaned.events.to_pyarrow().column("source_row").to_pylist())
        backend.disconnect()
        assert got == kept, dataset


# --------------------------------------------------------------------------------------------
# stores and sequence directories written before baskets existed
# --------------------------------------------------------------------------------------------

def old_store(path: Path) -> Path:
    """A store as evorec wrote it before schema version 2: today's tables, events without basket_id."""
    ddl = store_mod.DDL.replace("source_row BIGINT NOT NULL,\n    basket_id VARCHAR\n", "source_row BIGINT NOT NULL\n")
    assert "basket_id" not in ddl
    con = duckdb.connect(str(path))
    con.execute(ddl)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute("INSERT INTO datasets VALUES ('old', 'unix', false, now()::TIMESTAMP)")
    con.execute(
        "INSERT INTO events VALUES "
        f"('old', 'u', 'milk', make_timestamp({T0 + 3600}::BIGINT * 1000000), 'buy', 'dairy', 1.0, 1, 2), "
        f"('old', 'u', 'tea', make_timestamp({T0 + 7200}::BIGINT * 1000000), 'buy', NULL, 3.0, 1, 3), "
        f"('old', 'u', 'eggs', make_timestamp({T0 + DAY}::BIGINT * 1000000), 'buy', NULL, 2.0, 1, 4)"
    )
    con.close()
    return path


def test_old_store_reads_and_prepares_without_change(tmp_path):
    store = old_store(tmp_path / "old.duckdb")
    seq = prepare(store, "old", PrepareConfig(), tmp_path / "seq").open()  # read-only: not migrated
    assert seq.basket_source == "day" and seq.basket.tolist() == [0, 0, 1]
    d = describe_dataset(store, "old")
    assert (d["events"], d["events_with_basket_id"], d["events_without_category"]) == (3, 0, 2)
    con = duckdb.connect(str(store), read_only=True)
    assert "basket_id" not in [r[0] for r in con.execute("DESCRIBE events").fetchall()]
    con.close()


def test_old_store_gets_the_column_when_opened_for_writing(tmp_path):
    store = old_store(tmp_path / "old.duckdb")
    con = store_mod.connect(store)
    try:
        assert store_mod.event_columns(con)[-1] == "basket_id"
        assert con.execute("SELECT count(*), count(basket_id) FROM events").fetchall() == [(3, 0)]
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [(str(store_mod.SCHEMA_VERSION),)]
    finally:
        con.close()
    # and an ingest into it keeps the new rows' basket ids
    csv = tmp_path / "log.csv"
    csv.write_text("uid,iid,t,order\nv,milk,1483232400,o1\nv,tea,1483232400,o1\n")
    r = ingest_file(store, csv, "csv", "new", options={"map": "user_id=uid,item_id=iid,ts=t,basket_id=order"},
                    pseudonymize=False)
    assert r.rows_ingested == 2
    con = store_mod.connect(store, read_only=True)
    try:
        got = con.execute("SELECT dataset, item_id, basket_id FROM events ORDER BY dataset, source_row").fetchall()
    finally:
        con.close()
    assert got == [("new", "milk", "o1"), ("new", "tea", "o1"), ("old", "milk", None), ("old", "tea", None), ("old", "eggs", None)]


def _make_format_1(seq: SequenceData) -> dict:
    """Turn a directory into what format 1 wrote: no basket.npy, no basket keys in meta.json."""
    path = seq.path
    meta = json.loads((path / "meta.json").read_text())
    (path / "basket.npy").unlink()
    for key in ("baskets", "compatible_fingerprints"):
        meta.pop(key)
    meta["digests"].pop("basket")
    meta["format_version"] = 1
    (path / "meta.json").write_text(json.dumps(meta))
    return meta


def test_old_sequence_directory_opens_and_derives_baskets_by_day(tmp_path):
    store = make_store(tmp_path / "s.duckdb", LOG, "ids")
    backend, events, tk = open_store_events(store, "ids")
    new = write_sequences(events, tmp_path / "seq", dataset="ids", time_kind=tk)
    backend.disconnect()
    assert is_current(new.path) and new.meta["format_version"] == FORMAT_VERSION == 2
    compatible = new.meta["compatible_fingerprints"][0]
    assert new.derived_from(compatible) and new.derived_from(new.fingerprint)

    meta = _make_format_1(new)
    old = SequenceData(new.path)
    assert not is_current(old.path)
    assert old.basket_source == "day"  # no basket.npy: derived by day, whatever the log had
    assert old.basket.dtype == np.int64 and old.basket.tolist() == [0, 0, 0, 1, 0, 1]
    assert old.user(old.row_of("u")).basket.tolist() == [0, 0, 0, 1]
    # what format 1 fingerprinted is what format 2 calls compatible: runs trained on it still fit
    assert _fingerprint(meta["digests"], old.vocabs) == compatible


def test_hand_made_directory_without_baskets(tmp_path):
    """Directories written by hand (as some tests and tools do) keep opening."""
    path = tmp_path / "hand"
    path.mkdir()
    offsets = np.array([0, 3, 3, 5], "<i8")
    np.save(path / "offsets.npy", offsets)
    np.save(path / "item.npy", np.array([1, 2, 3, 1, 2], "<i4"))
    np.save(path / "category.npy", np.zeros(5, "<i4"))
    np.save(path / "behavior.npy", np.ones(5, "i1"))
    np.save(path / "ts.npy", np.array([0, 10, DAY, 5, 6], "<i8"))
    (path / "meta.json").write_text(json.dumps({"n_users": 3, "time_kind": "unix", "fingerprint": "x"}))
    seq = SequenceData(path)
    assert seq.basket.tolist() == [0, 0, 1, 0, 0] and seq.basket_source == "day"
    (path / "meta.json").write_text(json.dumps({"n_users": 3, "time_kind": "ordinal", "fingerprint": "x"}))
    seq = SequenceData(path)
    assert seq.basket.tolist() == [0, 1, 2, 0, 1] and seq.basket_source == "event"
    np.save(path / "basket.npy", np.zeros(4, "<i8"))  # a basket.npy of the wrong length is an error
    with pytest.raises(Exception, match="basket.npy"):
        SequenceData(path)


def test_pipeline_prepares_a_stale_cache_again(tmp_path, monkeypatch):
    from evorec.experiments.config import DataSourceConfig, ExperimentConfig
    from evorec.experiments.training import prepared_data

    monkeypatch.setenv("EVOREC_SECRET", "test-secret")
    csv = tmp_path / "log.csv"
    lines = ["uid,iid,t,order"] + [f"u{k % 7},i{k % 11},{T0 + k * 5000},o{k // 3}" for k in range(200)]
    csv.write_text("\n".join(lines) + "\n")
    cfg = ExperimentConfig(
        data=DataSourceConfig(path=str(csv), format="csv", dataset="toy",
                              options={"map": "user_id=uid,item_id=iid,ts=t,basket_id=order"}),
        model={"name": "pop"}, cache_dir=str(tmp_path / "cache"),
    )
    seq, _ = prepared_data(cfg)
    assert seq.basket_source == "basket_id"
    first = seq.basket.copy()
    path = seq.path
    del seq
    _make_format_1(SequenceData(path))
    assert not is_current(path)
    seq, _ = prepared_data(cfg)  # the stale cache is prepared again, with baskets
    assert is_current(seq.path) and seq.basket_source == "basket_id"
    assert np.array_equal(seq.basket, first)


def test_forgetting_users_in_an_old_directory_writes_its_baskets(tmp_path):
    from evorec.data.forget import forget_users

    store = make_store(tmp_path / "s.duckdb", LOG, "ids")
    seq = prepare(store, "ids", PrepareConfig(), tmp_path / "seq").open()
    _make_format_1(seq)
    del seq
    forget_users(["w"], store, prepared=[tmp_path / "seq"])
    seq = SequenceData(tmp_path / "seq")
    assert len(seq) == 1 and (seq.path / "basket.npy").exists() and is_current(seq.path)
    assert seq.basket_source == "day" and seq.basket.tolist() == [0, 0, 0, 1]  # by day, as the old directory read
