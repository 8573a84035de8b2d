"""Forgetting users offline (``evorec data forget``) on a real slice of the Taobao head file:
store rows and quarantine, prepared sequences and splits, run outputs; no trace left in any
byte of any file; other users untouched; idempotent; unknown users reported; a killed job
leaves the old or the new state and the next run finishes the work."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import TAOBAO_CSV, require
from typer.testing import CliRunner

from evorec.data.forget import PENDING_KEY, ForgetError
from evorec.data.ingest import ingest_file
from evorec.data.prepare import PrepareConfig, prepare
from evorec.data.sequences import SequenceData
from evorec.data.splits import check_no_leakage, load_split
from evorec.experiments.forget import forget_users
from evorec.utils.privacy import Pseudonymizer

SECRET = "forget-test-secret"
KEY = Pseudonymizer(SECRET.encode())
GONE = ("1000040", "1000114")  # forgotten: 466 and 270 events in the first 4,000 rows
KEPT = "1000004"  # has a quarantined row that must stay
N_ROWS = 4000
# Real rows, plus rejected ones: two of a forgotten user (bad behaviour code, bad timestamp),
# one of a kept user. Quarantine keeps their raw text, raw user id included.
BAD_ROWS = ["1000040,2268318,2520377,??,1511544070", "1000040,2333346,2520771,pv,yesterday", f"{KEPT},2576651,149192,??,1511572885"]
TIME_SPLIT = {"kind": "time", "valid_start": "2017-12-01", "test_start": "2017-12-02"}


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("EVOREC_SECRET", SECRET)


@pytest.fixture
def world(tmp_path) -> dict:
    """Store (pseudonymised ingest of the slice), two prepared directories (leave-one-out and a
    time split, one with an item-text cache file) and a run directory with a per_user.parquet."""
    lines = require(TAOBAO_CSV).read_text().splitlines()[:N_ROWS]
    src = tmp_path / "source" / "slice.csv"
    src.parent.mkdir()
    src.write_text("\n".join(lines + BAD_ROWS) + "\n")
    store = tmp_path / "store.duckdb"
    res = ingest_file(store, src, "taobao", "tb", pseudonymizer=KEY)
    assert res.rows_ingested == N_ROWS and res.rows_quarantined == 3
    prep = tmp_path / "prepared"
    prepare(store, "tb", PrepareConfig(), prep / "loo")
    prepare(store, "tb", PrepareConfig.model_validate({"split": TIME_SPLIT}), prep / "time")
    np.save(prep / "loo" / "item_text-0123abcd.npy", np.zeros((3, 4), np.float32))  # per-item cache: carried over
    seq = SequenceData(prep / "loo")
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    users = seq.users.ids
    per_user = pa.table({"fold": ["test"] * len(users), "user_row": np.arange(len(users), dtype=np.int64),
                         "rank": np.arange(1, len(users) + 1, dtype=np.int64), "user": users})
    pq.write_table(per_user, run / "per_user.parquet")
    (run / "metrics.json").write_text(json.dumps({"users": len(users)}))
    return {"tmp": tmp_path, "src": src, "store": store, "prep": prep, "run": run}


def traces(roots: list[Path], needles: list[str]) -> list[str]:
    """Every place in ``roots`` (files, or folders searched recursively) where a needle lies: in
    the raw bytes of any file (a raw id as a whole number, a pseudonym anywhere), in the decoded
    string columns of Parquet files (their pages are compressed, so bytes alone could miss one),
    and in every text column of DuckDB files."""
    found = []
    pats = [re.compile(rb"(?<![0-9])" + re.escape(n.encode()) + rb"(?![0-9])") for n in needles]
    files = [f for r in roots for f in ([r] if r.is_file() else sorted(r.rglob("*")))]
    for f in (f for f in files if f.is_file()):
        data = f.read_bytes()
        found += [f"{f}: bytes {n}" for n, pat in zip(needles, pats) if pat.search(data)]
        if f.suffix == ".parquet":
            t = pq.read_table(f)
            for name, col in zip(t.column_names, t.columns):
                if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                    found += [f"{f}: column {name} {n}" for n in needles if pc.any(pc.equal(col, n)).as_py()]
        if data[8:12] == b"DUCK":
            con = duckdb.connect(str(f), read_only=True)
            try:
                cols = con.execute("SELECT table_name, column_name FROM information_schema.columns WHERE data_type = 'VARCHAR'").fetchall()
                for table, col in cols:
                    for n in needles:
                        if con.execute(f'SELECT count(*) FROM "{table}" WHERE contains("{col}", ?)', [n]).fetchall()[0][0]:
                            found.append(f"{f}: {table}.{col} {n}")
            finally:
                con.close()
    return found


def everything(world: dict) -> list[Path]:
    """What forget rewrites in these tests (the source file is the user's, not evorec's)."""
    return [p for p in world["tmp"].iterdir() if p != world["src"].parent]


def needles() -> list[str]:
    return [*GONE, *(KEY(u) for u in GONE)]


def snapshot(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Each user's events, by user id (copies, not memory maps)."""
    seq = SequenceData(path)
    out = {}
    for row, uid in enumerate(seq.users.ids.to_pylist()):
        u = seq.user(row)
        out[uid] = {k: np.array(getattr(u, k)) for k in ("item", "category", "behavior", "ts")}
    return out


def store_counts(store: Path, pid: str) -> tuple[int, int]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        events = con.execute("SELECT count(*) FROM events WHERE user_id = ?", [pid]).fetchall()[0][0]
        quarantine = con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0]
    finally:
        con.close()
    return events, quarantine


def test_forget_removes_every_trace_and_keeps_everyone_else(world):
    store, prep, run = world["store"], world["prep"], world["run"]
    # Positive controls: before forgetting, the scan finds both users (so its silence later means something).
    before = traces(everything(world), needles())
    assert any(KEY(GONE[0]) in t for t in before) and any(KEY(GONE[1]) in t for t in before)
    assert any(f"bytes {GONE[0]}" in t and "store.duckdb" in t for t in before)  # raw id in quarantine's raw text
    expected = [store_counts(store, KEY(u))[0] for u in GONE]
    assert expected == [466, 270]
    old = {name: snapshot(prep / name) for name in ("loo", "time")}
    old_fp = SequenceData(prep / "loo").fingerprint
    old_loo = load_split(prep / "loo" / "split")
    items_before = (prep / "loo" / "items.parquet").read_bytes()

    report = forget_users(list(GONE), store, prepared=[prep], runs=[run.parent], pseudonymizer=KEY)

    assert report["not_found"] == [] and report["datasets"] == ["tb"] and report["store_compacted"]
    assert report["tables"] == {"events": sum(expected), "quarantine": 2}
    by_user = {u["user"]: u for u in report["users"]}
    assert by_user[GONE[0]]["store_rows"] == 466 + 2 and by_user[GONE[1]]["store_rows"] == 270
    assert all(u["sequence_dirs"] == 2 and u["file_rows"] == 1 and u["pseudonym"] == KEY(u["user"]) for u in report["users"])
    assert [d["rewritten"] for d in report["sequence_dirs"]] == [True, True]
    # Items only they touched stay in the vocabulary (catalogue data), without events.
    only_theirs = set(np.concatenate([old["loo"][KEY(u)]["item"] for u in GONE]).tolist())
    only_theirs -= {i for uid, a in old["loo"].items() if uid not in {KEY(u) for u in GONE} for i in a["item"].tolist()}
    assert report["sequence_dirs"][0]["items_without_events"] == len(only_theirs) > 0
    assert [f["rows_removed"] for f in report["files"]] == [2]
    assert report["warnings"] == []

    assert traces(everything(world), needles()) == []
    assert sorted(p.name for p in world["tmp"].iterdir()) == ["prepared", "runs", "source", "store.duckdb"]  # no leftovers
    assert sorted(p.name for p in prep.iterdir()) == ["loo", "time"]
    assert store_counts(store, KEY(KEPT))[1] == 1  # the kept user's quarantined row stays

    for name in ("loo", "time"):
        seq = SequenceData(prep / name)
        assert len(seq) == len(old[name]) - 2 and seq.meta["n_users"] == len(seq)
        assert seq.n_events == seq.meta["n_events"] == sum(len(v["item"]) for v in old[name].values()) - sum(expected)
        assert seq.fingerprint != old_fp and seq.derived_from(old_fp) and seq.meta["forgotten"]["users"] == 2
        new = snapshot(prep / name)
        assert set(new) == set(old[name]) - {KEY(u) for u in GONE}
        for uid, arrays in new.items():  # everyone else's events, value for value
            for k, v in arrays.items():
                assert np.array_equal(v, old[name][uid][k]) and v.dtype == old[name][uid][k].dtype
        split = load_split(prep / name / "split")
        check_no_leakage(split, seq)
        assert split.seq_fingerprint == seq.fingerprint
        assert json.loads((prep / name / "prepare.json").read_text())["fingerprint"] == seq.fingerprint
        assert (prep / name / "items.parquet").read_bytes() == items_before  # item vocabulary as it was
    # Leave-one-out targets are per user: every kept user keeps the same test target.
    seq, split = SequenceData(prep / "loo"), load_split(prep / "loo" / "split")
    old_ids = list(old["loo"])
    old_test = {old_ids[r]: int(p) for r, p in zip(old_loo.folds["test"].users, old_loo.folds["test"].tgt_pos)}
    old_offsets = np.cumsum([0] + [len(old["loo"][u]["item"]) for u in old_ids])
    ids = seq.users.ids.to_pylist()
    for r, p in zip(split.folds["test"].users, split.folds["test"].tgt_pos):
        uid = ids[r]
        assert p - seq.offsets[r] == old_test[uid] - old_offsets[old_ids.index(uid)]
    assert (prep / "loo" / "item_text-0123abcd.npy").exists()
    assert pq.read_table(run / "per_user.parquet").num_rows == len(old["loo"]) - 2

    # Twice: nothing to do, nothing touched, both users reported as not found.
    stamp = {p: p.stat().st_mtime_ns for p in [store, *prep.rglob("*"), *run.rglob("*")]}
    again = forget_users(list(GONE), store, prepared=[prep], runs=[run], pseudonymizer=KEY)
    assert again["tables"] == {} and again["not_found"] == list(GONE) and not again["store_compacted"]
    assert not any(d["rewritten"] for d in again["sequence_dirs"]) and not any(f["rewritten"] for f in again["files"])
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    # Re-ingesting the same source adds nothing (its content hash is recorded): the user stays gone.
    assert ingest_file(store, world["src"], "taobao", "tb", pseudonymizer=KEY).skipped
    assert store_counts(store, KEY(GONE[0]))[0] == 0


def test_cli_unknown_users_pseudonymised_ids_and_wrong_key(world, monkeypatch):
    from evorec.cli.main import app

    cli = CliRunner()
    store, prep = str(world["store"]), str(world["prep"])
    r = cli.invoke(app, ["data", "forget", "nobody", "--store", store, "--prepared", prep])
    assert r.exit_code == 1 and "not found" in r.output and "nobody" in r.output  # a typo is not a success
    r = cli.invoke(app, ["data", "forget", "nobody", "--store", store, "--missing-ok", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["not_found"] == ["nobody"]

    # Mixed: the known one goes, the unknown one is listed, the exit code is 0.
    r = cli.invoke(app, ["data", "forget", GONE[1], "nobody", "--store", store, "--prepared", prep, "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["not_found"] == ["nobody"] and rep["tables"] == {"events": 270}

    # Already pseudonymised ids: the quarantine is still searched (each raw field is hashed with the key).
    pid = KEY(GONE[0])
    r = cli.invoke(app, ["data", "forget", pid, "--pseudonymized", "--store", store, "--dataset", "tb", "--prepared", prep, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["tables"] == {"events": 466, "quarantine": 2}
    assert traces([world["store"], world["prep"]], [pid, KEY(GONE[1])]) == []

    # Another key: refused before anything changes, never "not found".
    monkeypatch.setenv("EVOREC_SECRET", "some-other-key")
    r = cli.invoke(app, ["data", "forget", KEPT, "--store", store])
    assert r.exit_code == 2 and "another key" in r.output
    assert store_counts(world["store"], KEY(KEPT))[0] > 0
    with pytest.raises(ForgetError, match="neither a sequence directory"):
        forget_users([KEPT], world["store"], prepared=[world["src"].parent], pseudonymizer=KEY)
    assert store_counts(world["store"], KEY(KEPT))[0] > 0  # a bad path fails before the store is touched


KILL = textwrap.dedent(
    """
    import os, sys
    from evorec.data import forget
    from evorec.utils import io
    from evorec.utils.privacy import Pseudonymizer
    def die(*a, **k):
        os._exit(9)
    setattr(io if sys.argv[1] == "swap_directory" else forget, sys.argv[1], die)
    forget.forget_users(sys.argv[5:], sys.argv[2], prepared=[sys.argv[3]], pseudonymizer=Pseudonymizer(sys.argv[4].encode()))
    """
)


@pytest.mark.parametrize("where", ["_replace_store", "swap_directory"])
def test_a_killed_job_leaves_old_or_new_and_a_rerun_finishes(world, where):
    store, loo = world["store"], world["prep"] / "loo"
    old_fp = SequenceData(loo).fingerprint
    proc = subprocess.run([sys.executable, "-c", KILL, where, str(store), str(loo), SECRET, *GONE], check=False, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    # Killed: the directory is the old one, whole and openable; a leftover lies beside what was being replaced.
    seq = SequenceData(loo)
    assert seq.fingerprint == old_fp and seq.row_of(KEY(GONE[0])) >= 0
    check_no_leakage(load_split(loo / "split"), seq)
    del seq
    con = duckdb.connect(str(store), read_only=True)
    try:
        left = con.execute("SELECT count(*) FROM events WHERE user_id = ?", [KEY(GONE[0])]).fetchall()[0][0]
        pending = con.execute("SELECT count(*) FROM meta WHERE key = ?", [PENDING_KEY]).fetchall()[0][0]
    finally:
        con.close()
    if where == "_replace_store":  # deleted and committed, not yet compacted: the marker says so
        assert (left, pending) == (0, 1)
        assert [p.name.startswith(".store.duckdb.forget-") for p in world["tmp"].iterdir() if p.name.startswith(".")] == [True]
    else:  # the store was finished before the directories
        assert (left, pending) == (0, 0)
        assert len(list(world["prep"].glob(".loo.forget-*"))) == 1

    report = forget_users(list(GONE), store, prepared=[loo], pseudonymizer=KEY)
    assert report["store_compacted"] == (where == "_replace_store") and report["tables"] == {}
    assert [d["rewritten"] for d in report["sequence_dirs"]] == [True]
    assert not list(world["tmp"].glob(".store.duckdb.forget-*")) and not list(world["prep"].glob(".*"))
    seq = SequenceData(loo)
    assert seq.derived_from(old_fp) and seq.row_of(KEY(GONE[0])) == -1
    assert traces([store, loo], needles()) == []


def test_without_an_atomic_exchange_two_renames_and_recovery(world, monkeypatch):
    """Where the file system cannot exchange two directories, forget moves the old one aside
    first; a job killed between the two renames leaves it as .NAME.forget-old-*, put back next time."""
    import errno

    from evorec.utils import io

    loo = world["prep"] / "loo"
    aside = loo.with_name(".loo.forget-old-0123456789ab")
    loo.rename(aside)  # as if killed right after the first rename
    (loo.parent / ".loo.forget-00000000beef").mkdir()  # and the new one never moved in
    (loo.parent / ".loo.forget-00000000beef" / "meta.json").write_text("{}")

    def no_exchange(a, b):
        raise OSError(errno.EINVAL, "no exchange here")

    monkeypatch.setattr(io, "exchange_paths", no_exchange)
    report = forget_users([GONE[0]], world["store"], prepared=[world["prep"]], pseudonymizer=KEY)
    assert [d["rewritten"] for d in report["sequence_dirs"]] == [True, True]
    assert sorted(p.name for p in world["prep"].iterdir()) == ["loo", "time"]
    assert SequenceData(loo).row_of(KEY(GONE[0])) == -1 and SequenceData(loo).row_of(KEY(GONE[1])) >= 0


def test_pipeline_caches_and_runs_end_to_end(world):
    """A real run (Pop, 1 epoch) through the pipeline's caches, evaluated; forgotten with the CLI;
    no trace in the cache, the run (checkpoints included) or its outputs; the run still evaluates."""
    from evorec.cli.main import app
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import evaluate_run, train

    tmp_path = world["tmp"] / "e2e"
    cache = tmp_path / "cache"
    base = {
        "data": {"path": str(world["src"]), "format": "taobao", "dataset": "tb"},
        "model": {"name": "pop", "config": {}},
        "train": {"epochs": 1, "batch_size": 64, "max_len": 20, "progress": False, "tensorboard": False, "eval_users": 50},
        "cache_dir": str(cache),
    }
    cfg = load_experiment(None, base=base)
    train(cfg, tmp_path / "runs" / "pop")
    first = evaluate_run(tmp_path / "runs" / "pop")
    scan = [KEY(u) for u in GONE]
    assert traces([tmp_path / "runs"], scan) and traces([cache], scan)  # the controls: both hold the users
    assert not [t for t in traces([tmp_path / "runs"], scan) if ".pt" in t]  # checkpoints never held user ids
    (store,) = cache.glob("*.duckdb")
    r = CliRunner().invoke(app, ["data", "forget", *GONE, "--store", str(store), "--prepared", str(cache / "prepared"),
                                 "--runs", str(tmp_path / "runs"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["tables"]["events"] == 736 and [d["rewritten"] for d in rep["sequence_dirs"]] == [True]
    assert traces([tmp_path / "runs", cache], scan) == []
    again = evaluate_run(tmp_path / "runs" / "pop")  # the model still fits the data without them
    assert again["users"] <= first["users"] and again["sequence_fingerprint"] != first["sequence_fingerprint"]


def test_a_forecaster_still_loads_and_forecasts_after_forgetting(tmp_path, monkeypatch):
    """The service opens a forecaster's prepared sequences directly: after a user is forgotten
    there it still loads (same item and category vocabularies) and forecasts everyone else."""
    from evorec.experiments.config import load_forecast_experiment
    from evorec.experiments.forecasting import forecast_backtest
    from evorec.experiments.runs import ForecastRun
    from evorec.forecasting.predict import forecast_at

    sim = Path(__file__).resolve().parents[2] / "configs" / "forecast" / "simulated.yaml"
    overrides = ["simulate.users=120", "forecast.model.epochs=1", "forecast.model.encoder=null", "forecast.bootstrap=0",
                 "forecast.horizons=[7d]", "forecast.baselines=[persistence]", "forecast.train_every=56d",
                 f"cache_dir={tmp_path / 'cache'}"]
    forecast_backtest(load_forecast_experiment(sim, overrides), tmp_path / "fc")
    run = ForecastRun.open(tmp_path / "fc")
    seq = run.trained_sequences()
    gone = seq.users.ids[3].as_py()
    n_users, old_fp = len(seq), seq.fingerprint
    del seq
    (store,) = (tmp_path / "cache").glob("*.duckdb")
    report = forget_users([gone], store, prepared=[tmp_path / "cache" / "prepared"], runs=[tmp_path / "fc"])
    assert report["tables"]["events"] > 0 and [d["rewritten"] for d in report["sequence_dirs"]] == [True]
    run = ForecastRun.open(tmp_path / "fc")
    seq = run.trained_sequences()
    assert len(seq) == n_users - 1 and seq.fingerprint != old_fp
    uf = forecast_at(run.payload, seq, "2025-10-01")
    assert gone not in list(uf.users) and len(uf.users) > 0
