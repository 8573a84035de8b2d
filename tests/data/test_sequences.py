"""Vocabularies, sequence arrays on disk, memory-mapped reading, prepare() end to end."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import make_beauty_ordinal_store, make_event_store

from evorec.data.clean import CleanConfig, KCoreConfig, clean_events, open_store_events
from evorec.data.prepare import PrepareConfig, prepare
from evorec.data.sequences import (
    NpyAppender,
    SequenceConfig,
    SequenceData,
    SequenceError,
    write_sequences,
)
from evorec.data.vocab import PAD, Vocab, behavior_indices
from evorec.types import BEHAVIOR_INDEX


@pytest.fixture(scope="module")
def taobao_seq(taobao_store, tmp_path_factory) -> SequenceData:
    out = tmp_path_factory.mktemp("seq") / "taobao"
    prepare(taobao_store, "taobao", PrepareConfig(), out)
    return SequenceData(out)


# --------------------------------------------------------------------------------------------
# vocabularies
# --------------------------------------------------------------------------------------------


def test_vocab_sorted_by_id_string_with_padding(tmp_path):
    v = Vocab.from_ids(["9", "10", "b", None, "a", "10", "\u00e9", "B"], name="items")
    assert v.ids.to_pylist() == ["10", "9", "B", "a", "b", "\u00e9"]  # code-point order, not numeric
    assert len(v) == 6 and v.size == 7
    assert v.lookup(["10", "9", "zzz", None, "\u00e9"]).tolist() == [1, 2, PAD, PAD, 6]
    assert v.reverse([0, 1, 6, 99]) == [None, "10", "\u00e9", None]
    v.save(tmp_path / "items.parquet")
    w = Vocab.load(tmp_path / "items.parquet")
    assert w == v and w.fingerprint() == v.fingerprint()


def test_behavior_indices_use_fixed_vocabulary():
    idx = behavior_indices(["view", "buy", "nonsense", None])
    assert idx.dtype == np.int8
    assert idx.tolist() == [BEHAVIOR_INDEX["view"], BEHAVIOR_INDEX["buy"], PAD, PAD]


def test_vocab_and_arrays_are_deterministic(taobao_store, taobao_seq, tmp_path):
    again = prepare(taobao_store, "taobao", PrepareConfig(), tmp_path / "again")
    seq2 = again.open()
    assert seq2.fingerprint == taobao_seq.fingerprint
    for name in ("users", "items", "categories"):
        assert getattr(seq2, name) == getattr(taobao_seq, name)
    for arr in ("offsets", "item", "category", "behavior", "ts"):
        assert np.array_equal(getattr(seq2, arr), getattr(taobao_seq, arr))
    ids = taobao_seq.items.ids.to_pylist()
    assert ids == sorted(ids)


# --------------------------------------------------------------------------------------------
# arrays: round trip against an independent DuckDB query
# --------------------------------------------------------------------------------------------


def test_mmap_round_trip_matches_store(taobao_store, taobao_seq):
    seq = taobao_seq
    assert isinstance(seq.item, np.memmap) and isinstance(seq.ts, np.memmap)
    assert seq.item.dtype == np.int32 and seq.category.dtype == np.int32
    assert seq.behavior.dtype == np.int8 and seq.ts.dtype == np.int64 and seq.offsets.dtype == np.int64
    assert len(seq) == 815 and seq.n_events == 84_475  # default config: dedup only, nothing to drop
    con = duckdb.connect(str(taobao_store), read_only=True)
    ref = con.execute(
        """
        SELECT user_id, item_id, category_id, behavior, epoch(ts)::BIGINT
        FROM events ORDER BY user_id, ts, ingest_id, source_row
        """
    ).fetchall()
    con.close()
    users = [r[0] for r in ref]
    assert seq.users.reverse(seq.user_of(np.arange(seq.n_events)) + 1) == users
    assert seq.items.reverse(seq.item) == [r[1] for r in ref]
    assert seq.categories.reverse(seq.category) == [r[2] for r in ref]
    inv_beh = {v: k for k, v in BEHAVIOR_INDEX.items()}
    assert [inv_beh[int(b)] for b in seq.behavior] == [r[3] for r in ref]
    assert seq.ts.tolist() == [r[4] for r in ref]
    # per-user views
    row = seq.row_of("1")
    u = seq.user(row)
    a, b = int(seq.offsets[row]), int(seq.offsets[row + 1])
    assert len(u) == b - a and np.shares_memory(u.item, seq.item)
    assert (np.diff(u.ts) >= 0).all()
    assert seq.lengths.sum() == seq.n_events
    q = seq.length_quantiles((0.0, 0.5, 1.0))
    assert q[0.0] == seq.lengths.min() and q[1.0] == seq.lengths.max()
    assert seq.row_of("no such user") == -1
    meta = json.loads((seq.path / "meta.json").read_text())
    assert meta["dataset"] == "taobao" and meta["time_kind"] == "unix"
    assert meta["n_items"] == 55_368 and meta["n_categories"] == 2_914
    assert {"created_at", "fingerprint", "config"} <= set(meta)


def test_ties_keep_source_order(tmp_path):
    rows = [
        # same second for every event of user u; source rows out of insertion order
        ("u", "i3", 100, "view", "c1", None, 2, 1),
        ("u", "i1", 100, "buy", "c1", None, 1, 7),
        ("u", "i2", 100, "cart", "c2", None, 1, 3),
        ("u", "i0", 50, "view", None, None, 9, 99),
        ("w", "i1", 100, "view", "c1", None, 1, 2),
    ]
    path = make_event_store(tmp_path / "s.duckdb", rows)
    backend, events, tk = open_store_events(path, "toy")
    with clean_events(events, CleanConfig(), time_kind=tk) as cleaned:
        seq = write_sequences(cleaned.events, tmp_path / "seq", dataset="toy", time_kind=tk)
    backend.disconnect()
    u = seq.user(seq.row_of("u"))
    # time first, then (ingest_id, source_row): i0 @50, then i2 (1,3), i1 (1,7), i3 (2,1)
    assert seq.items.reverse(u.item) == ["i0", "i2", "i1", "i3"]
    assert u.ts.tolist() == [50, 100, 100, 100]
    assert seq.categories.reverse(u.category) == [None, "c2", "c1", "c1"]  # no category -> 0
    assert u.category[0] == PAD


def test_sub_second_times_order_by_time_and_truncate(tmp_path):
    path = make_event_store(tmp_path / "s.duckdb", [])
    con = duckdb.connect(str(path))
    con.execute(
        """
        INSERT INTO events (dataset, user_id, item_id, ts, behavior, category_id, value, ingest_id, source_row) VALUES
          ('toy', 'u', 'late',  make_timestamp(100600000), 'view', NULL, NULL, 1, 1),
          ('toy', 'u', 'early', make_timestamp(100200000), 'view', NULL, NULL, 1, 2)
        """
    )
    con.close()
    backend, events, tk = open_store_events(path, "toy")
    seq = write_sequences(events, tmp_path / "seq", dataset="toy", time_kind=tk)
    backend.disconnect()
    assert seq.items.reverse(seq.item) == ["early", "late"]
    assert seq.ts.tolist() == [100, 100]  # truncated, never rounded up


def test_max_length_keeps_most_recent(taobao_store, tmp_path):
    res = prepare(taobao_store, "taobao", PrepareConfig(sequences=SequenceConfig(max_length=20)), tmp_path / "s")
    seq = res.open()
    assert seq.lengths.max() == 20
    con = duckdb.connect(str(taobao_store), read_only=True)
    last = con.execute(
        "SELECT epoch(ts)::BIGINT FROM events WHERE user_id = '1' ORDER BY ts DESC, source_row DESC LIMIT 20"
    ).fetchall()
    con.close()
    assert seq.user(seq.row_of("1")).ts.tolist() == [r[0] for r in reversed(last)]


def test_ordinal_dataset_sequences(tmp_path):
    path = make_beauty_ordinal_store(tmp_path / "b.duckdb", n_users=500)
    res = prepare(path, "beauty", PrepareConfig(), tmp_path / "seq")
    seq = res.open()
    assert seq.time_kind.value == "ordinal" and res.time_kind.value == "ordinal"
    assert len(seq.categories) == 0 and (np.asarray(seq.category) == PAD).all()
    # ts are the 1-based positions of each user's line
    for row in (0, 1, len(seq) - 1):
        assert seq.user(row).ts.tolist() == list(range(1, len(seq.user(row)) + 1))
    line1 = (Path(__file__).parents[2] / ".." / "shared" / "data" / "amazon_s3rec_seq" / "Beauty.txt").open().readline().split()
    assert seq.items.reverse(seq.user(seq.row_of(line1[0])).item) == line1[1:]


# --------------------------------------------------------------------------------------------
# writing: .npy appender, atomicity
# --------------------------------------------------------------------------------------------


def test_npy_appender_round_trip(tmp_path):
    for dtype in ("<i4", "i1", "<i8"):
        w = NpyAppender(tmp_path / f"a{dtype}.npy", dtype)
        chunks = [np.arange(0), np.arange(5), np.arange(100, 103)]
        for c in chunks:
            w.append(c)
        w.close()
        got = np.load(tmp_path / f"a{dtype}.npy", mmap_mode="r")
        assert got.dtype == np.dtype(dtype) and got.tolist() == [0, 1, 2, 3, 4, 100, 101, 102]
    empty = NpyAppender(tmp_path / "e.npy", "<i8")
    empty.close()
    assert np.load(tmp_path / "e.npy").shape == (0,)
    assert len(NpyAppender(tmp_path / "h.npy", "<i8")._header(10**15)) == NpyAppender.HEADER_BYTES


def test_write_is_atomic(taobao_store, tmp_path):
    target = tmp_path / "seq"

    seen: list[int] = []

    def boom(done: int) -> None:
        seen.append(done)
        if done >= 3000:
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        prepare(taobao_store, "taobao", PrepareConfig(sequences=SequenceConfig(batch_rows=1000)), target, progress=boom)
    assert seen == [1000, 2000, 3000]
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temp directory left behind

    prepare(taobao_store, "taobao", PrepareConfig(), target)
    with pytest.raises(FileExistsError):
        prepare(taobao_store, "taobao", PrepareConfig(), target)
    cfg = PrepareConfig(clean=CleanConfig(kcore=KCoreConfig(user_min=10, item_min=2)))
    res = prepare(taobao_store, "taobao", cfg, target, overwrite=True)
    assert SequenceData(target).n_events == res.n_events < 84_475
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_sequence_data_rejects_incomplete_directory(taobao_seq, tmp_path):
    with pytest.raises(SequenceError):
        SequenceData(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in taobao_seq.path.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    np.save(bad / "item.npy", np.asarray(taobao_seq.item[:-1]))
    with pytest.raises(SequenceError, match="item.npy"):
        SequenceData(bad)

