"""Forgetting users in the offline data (the right to be forgotten): ``evorec data forget``.

:func:`forget_users` removes every trace of some users from

- **the event store** (a DuckDB file written by ``evorec data ingest``): their rows in every
  table of the dataset that has a ``user_id`` column (``events``; the cleaned caches of
  ``prepare`` are temporary tables and never reach the file), and the ``quarantine`` rows whose
  raw text holds the user's id. All deletions are one transaction. DuckDB only marks deleted
  rows, and freed blocks keep their old bytes, so the file is then *compacted*: copied into a
  fresh file beside it (``COPY FROM DATABASE``) that replaces it with one ``os.replace``;
  afterwards no byte of the file holds the user's id;
- **prepared sequence directories** (``evorec data prepare``, the pipeline's cache under
  ``CACHE/prepared/``): a directory holding one of the users is written again without them into
  a sibling, then the two are exchanged in one atomic step, so a reader (or a killed job) sees
  either the old or the new directory, never half of one. The user leaves the user vocabulary;
  ``meta.json`` gets the new counts, digests and fingerprint, with the previous fingerprint kept
  under ``forgotten.previous_fingerprints`` (so runs trained before still load:
  :meth:`SequenceData.derived_from`). The split is made again over the new sequences with its
  saved config, and checked for leakage. Other files (the item-text cache) are carried over;
- **run directories** (``evorec train`` / ``evaluate``): every Parquet file with a ``user`` or
  ``user_id`` column (``per_user.parquet``) is rewritten without the user's rows, atomically.

Ids. The caller passes raw ids; on a pseudonymised dataset they are mapped through the same
keyed HMAC as at ingest (the key must be the one the dataset was ingested with: another key is
an error, never an empty result). With ``pseudonymized=True`` the ids are taken as stored.

What stays, on purpose:

- **item and category vocabularies** are left as they are (item ids are catalogue data, not
  personal data), so models keep fitting the data. An item that only a forgotten user touched
  stays in the item vocabulary with no event left (counted as ``items_without_events``); that is
  accepted: with the user's events gone, nothing links the item id to them;
- **models**: no model in evorec keeps per-user parameters. Sequence models (SASRec, BERT4Rec,
  GRU4Rec, Caser, HSTU, DIEN) hold item, category and position embeddings; Mult-VAE encodes a
  user's item bag at query time (no per-user latent table); ItemKNN, Markov and Pop hold
  item-item, transition or popularity statistics; checkpoints carry the item and category
  vocabularies and item popularity, never user ids; the forecaster holds network weights,
  calibrators and category transitions. Their weights were still *fitted* on the user's events:
  to remove that influence too, train again on the forgotten data;
- **aggregates**: ``metrics.json``, ``backtest.json``, the clean report in ``prepare.json`` and
  the per-file counts in the store's ``ingests`` table are means and counts over all users; they
  are not rewritten (evaluate again for numbers without the user);
- a forgotten prepared directory is the old one *minus the user*, not what ``prepare`` would give
  now: cleaning thresholds (k-core, bots) were computed with the user; prepare again for that;
- the **source files** are outside evorec. Re-ingesting a file already ingested adds nothing
  (its content hash is recorded), but a new file with the user brings them back, and so does a
  pipeline whose cached store was deleted (it ingests its source again).

Not found. A user found nowhere (never ingested, already forgotten, another dataset) is listed
under ``not_found``; forgetting twice is harmless and reports zero rows the second time.

Crash safety. A job killed at any point leaves each store, directory and file either as before
or as after; the store may be left with the rows deleted but not yet compacted (a marker in its
``meta`` table says so) and leftovers named ``.NAME.forget-*`` may lie beside what was being
rewritten: the next run compacts the store and removes the leftovers. Do not run two forgets
on the same store or directories at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import TypeAdapter

from evorec.data import store as store_mod
from evorec.data.readers.base import sql_str
from evorec.data.sequences import ARRAYS, FORMAT_VERSION, NpyAppender, SequenceData, Vocabularies, _fingerprint
from evorec.data.splits import SplitConfig, check_no_leakage, make_split
from evorec.data.vocab import Vocab
from evorec.errors import StateError
from evorec.utils.io import atomic_directory, atomic_write_parquet, atomic_write_text, fsync_directory
from evorec.utils.privacy import Pseudonymizer

log = logging.getLogger(__name__)

PENDING_KEY = "forget_compaction_pending"
"""Key in the store's ``meta`` table while deleted rows may still lie in the file's blocks."""
TAG = ".forget-"
"""Leftovers of a killed forget are named ``.NAME.forget-*`` beside NAME."""
_CHUNK = 1 << 22  # events copied at once
# Characters that separate the fields in a quarantined row's raw text (CSV/TSV, ``::``, JSON).
_SEP = r"""[\s,;|"':=\[\]{}()]"""
_SEQ_FILES = {"meta.json", "offsets.npy", "users.parquet", "items.parquet", "categories.parquet", "prepare.json", "split"}
_SEQ_FILES |= {f"{name}.npy" for name in ARRAYS}

RunFiles = Callable[[Path], "list[Path] | None"]
"""A run directory's files that may hold per-user rows (None: the path is not a run directory).
Runs are the experiments layer's (``evorec.experiments.forget`` passes ``run_files``)."""


class ForgetError(StateError):
    """Forgetting cannot proceed (no such dataset or directory, another key...)."""


def forget_users(
    user_ids: Sequence[str],
    store: str | Path,
    *,
    dataset: str | None = None,
    prepared: Sequence[str | Path] = (),
    runs: Sequence[str | Path] = (),
    run_files: RunFiles | None = None,
    pseudonymized: bool = False,
    pseudonymizer: Pseudonymizer | None = None,
) -> dict[str, Any]:
    """Remove ``user_ids`` from the store at ``store`` (``dataset``, or every dataset), from the
    sequence directories ``prepared`` and from the run directories ``runs``.

    Each path in ``prepared`` / ``runs`` is such a directory or a folder of them (one level, as
    ``CACHE/prepared/`` or ``runs/``). ``pseudonymized``: the ids are already pseudonymised.
    ``pseudonymizer`` defaults to the environment's key (:meth:`Pseudonymizer.from_environment`).
    ``run_files`` tells run directories and their per-user files (needed with ``runs``; the
    experiments layer knows runs: use ``evorec.experiments.forget.forget_users``).

    Returns a report: per user whether they were found and how many rows went; rows removed per
    store table; each sequence directory and file rewritten; ``not_found`` and ``warnings``.
    Raises :class:`ForgetError` (or ``StoreError``) before changing anything when a dataset or
    directory does not exist or the key is not the dataset's.
    """
    t0 = time.perf_counter()
    ids = [str(u) for u in user_ids]
    if not ids or any(not u for u in ids):
        raise ForgetError("give at least one user id, and no empty ones")
    ids = list(dict.fromkeys(ids))
    key = _Key(pseudonymizer)
    seq_dirs = _discover(prepared, _is_sequence_dir, "a sequence directory (meta.json)")
    if runs and run_files is None:
        raise TypeError("forget_users(runs=...) needs run_files (see evorec.experiments.forget)")
    run_dirs = _discover(runs, lambda p: run_files(p) is not None, "a run directory (a checkpoint, a forecaster, per-user results...)")
    users = [{"user": u, "pseudonym": None, "found": False, "store_rows": 0, "sequence_dirs": 0, "file_rows": 0} for u in ids]
    report: dict[str, Any] = {"store": str(store), "datasets": [], "users": users, "tables": {}, "store_compacted": False,
                              "sequence_dirs": [], "files": [], "not_found": [], "warnings": []}

    forms_by_dataset = _forget_in_store(Path(store), dataset, ids, pseudonymized, key, report)
    fallback: dict[str, int] | None = None

    def forms_for(ds: str | None) -> dict[str, int]:
        nonlocal fallback
        if ds in forms_by_dataset:
            return forms_by_dataset[ds]
        if fallback is None:  # a dataset this store does not hold: try the ids both ways
            fallback = {u: i for i, u in enumerate(ids)}
            if not pseudonymized:
                fallback.update({key.get()(u): i for i, u in enumerate(ids)})
        return fallback

    for d in seq_dirs:
        entry = _forget_in_sequences(d, forms_for, report)
        report["sequence_dirs"].append(entry)
    all_forms: dict[str, int] = {}
    for ds in forms_by_dataset:
        all_forms.update(forms_for(ds))
    if run_dirs:
        all_forms.update(forms_for(None))
    for d in run_dirs:
        report["files"].extend(_forget_in_files(run_files(d) or [], all_forms, report))

    for u in users:
        u["found"] = bool(u["store_rows"] or u["sequence_dirs"] or u["file_rows"])
    report["not_found"] = [u["user"] for u in users if not u["found"]]
    report["seconds"] = time.perf_counter() - t0
    log.info(
        "forget: %d of %d users found; %d store rows, %d sequence directories, %d files rewritten",
        len(users) - len(report["not_found"]), len(users), sum(report["tables"].values()),
        sum(1 for s in report["sequence_dirs"] if s["rewritten"]), sum(1 for f in report["files"] if f["rewritten"]),
    )
    return report


class _Key:
    """The pseudonymisation key, read only when needed (raw datasets never need one)."""

    def __init__(self, given: Pseudonymizer | None) -> None:
        self._p = given

    def get(self) -> Pseudonymizer:
        if self._p is None:
            self._p = Pseudonymizer.from_environment()
        return self._p


# --------------------------------------------------------------------------------------------
# The event store
# --------------------------------------------------------------------------------------------


def _forget_in_store(
    path: Path, dataset: str | None, ids: list[str], pseudonymized: bool, key: _Key, report: dict[str, Any]
) -> dict[str, dict[str, int]]:
    """Delete the users' rows in one transaction, then compact the file. Returns, per dataset,
    the stored form of each id -> its index in ``ids``."""
    _remove_leftovers(path)
    con = store_mod.connect(path, create=False)
    try:
        names = [dataset] if dataset else store_mod.dataset_names(con)
        infos = [store_mod.require_dataset(con, d) for d in names]
        forms: dict[str, dict[str, int]] = {}
        for info in infos:  # every check before the first change
            ds = info["dataset"]
            if info["pseudonymized"] and not pseudonymized:
                _check_key(con, ds, key.get())
                forms[ds] = {key.get()(u): i for i, u in enumerate(ids)}
                for form, i in forms[ds].items():
                    report["users"][i]["pseudonym"] = form
            else:
                forms[ds] = {u: i for i, u in enumerate(ids)}
        report["datasets"] = names
        tables = _user_tables(con)
        con.execute("BEGIN TRANSACTION")
        try:
            removed = 0
            for info in infos:
                removed += _delete_rows(con, info, forms[info["dataset"]], tables, ids, pseudonymized, key, report)
            pending = bool(con.execute("SELECT count(*) FROM meta WHERE key = ?", [PENDING_KEY]).fetchall()[0][0])
            if removed and not pending:
                con.execute("INSERT INTO meta VALUES (?, '1')", [PENDING_KEY])
                pending = True
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if pending:
            _compact(con, path)
            report["store_compacted"] = True
    finally:
        con.close()
    return forms


def _check_key(con, dataset: str, pseudo: Pseudonymizer) -> None:
    row = con.execute("SELECT value FROM meta WHERE key = 'key_fingerprint:' || ?", [dataset]).fetchall()
    if row and row[0][0] != pseudo.fingerprint:
        raise ForgetError(
            f"dataset {dataset!r} was pseudonymised with another key (fingerprint {row[0][0]}, this one "
            f"{pseudo.fingerprint}); set EVOREC_SECRET / EVOREC_SECRET_FILE to the key used at ingest, "
            "or pass the stored (pseudonymised) ids with --pseudonymized"
        )


def _user_tables(con) -> dict[str, bool]:
    """Tables of the store with a ``user_id`` column -> whether they also have ``dataset``."""
    rows = con.execute(
        "SELECT table_name, bool_or(column_name = 'dataset') FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name IN ("
        "SELECT table_name FROM information_schema.columns WHERE table_catalog = current_database() "
        "AND table_schema = 'main' AND column_name = 'user_id') GROUP BY table_name ORDER BY table_name"
    ).fetchall()
    return {t: bool(has) for t, has in rows}


def _delete_rows(con, info: dict, forms: dict[str, int], tables: dict[str, bool], ids: list[str],
                 pseudonymized: bool, key: _Key, report: dict[str, Any]) -> int:
    ds = info["dataset"]
    stored = list(forms)
    total = 0
    for table, has_dataset in tables.items():
        where = "user_id IN (SELECT unnest($ids))" + (" AND dataset = $ds" if has_dataset else "")
        params = {"ids": stored, **({"ds": ds} if has_dataset else {})}
        counts = con.execute(f'SELECT user_id, count(*) FROM "{table}" WHERE {where} GROUP BY user_id', params).fetchall()
        if not counts:
            continue
        con.execute(f'DELETE FROM "{table}" WHERE {where}', params)
        for form, n in counts:
            report["users"][forms[form]]["store_rows"] += n
            total += n
        report["tables"][table] = report["tables"].get(table, 0) + sum(n for _, n in counts)
    # Quarantined rows have no user column, only the source's raw text, which holds raw ids.
    per_user: dict[int, list[int]] = {}
    if info["pseudonymized"] and pseudonymized:
        pseudo = key.get()
        if con.execute("SELECT value FROM meta WHERE key = 'key_fingerprint:' || ?", [ds]).fetchall() != [(pseudo.fingerprint,)]:
            report["warnings"].append(f"dataset {ds!r}: quarantine not searched (the ids are pseudonyms and this key is not the dataset's)")
        else:  # hash every field of every quarantined row: the key turns raw fields into pseudonyms
            rows = con.execute(
                f"SELECT DISTINCT rid, {pseudo.duckdb_sql('tok')} AS pid FROM (SELECT rowid AS rid, "
                "unnest(regexp_split_to_array(coalesce(raw, ''), $sep)) AS tok FROM quarantine WHERE dataset = $ds) "
                f"WHERE tok <> '' AND {pseudo.duckdb_sql('tok')} IN (SELECT unnest($ids))",
                {"sep": _SEP, "ds": ds, "ids": stored},
            ).fetchall()
            for rid, pid in rows:
                per_user.setdefault(forms[pid], []).append(rid)
    else:  # the raw ids as given: a field of the raw text equal to one of them
        for i, u in enumerate(ids):
            pattern = f"(^|{_SEP}){_re2_literal(u)}($|{_SEP})"
            rows = con.execute(
                "SELECT rowid FROM quarantine WHERE dataset = ? AND contains(raw, ?) AND regexp_matches(raw, ?)", [ds, u, pattern]
            ).fetchall()
            if rows:
                per_user[i] = [r[0] for r in rows]
    rowids = sorted({r for rs in per_user.values() for r in rs})
    if rowids:
        con.execute("DELETE FROM quarantine WHERE rowid IN (SELECT unnest($r))", {"r": rowids})
        for i, rs in per_user.items():
            report["users"][i]["store_rows"] += len(rs)
        report["tables"]["quarantine"] = report["tables"].get("quarantine", 0) + len(rowids)
        total += len(rowids)
    return total


def _re2_literal(s: str) -> str:
    """``s`` as a literal inside a RE2 pattern (DuckDB's regex engine)."""
    return "".join(c if c.isalnum() or ord(c) > 127 else f"\\x{{{ord(c):x}}}" for c in s)


def _compact(con, path: Path) -> None:
    """Copy the database into a fresh file and put it in place of ``path``: deleted rows leave
    their bytes in DuckDB's blocks until those are reused; a fresh copy holds live rows only."""
    tmp = path.with_name(f".{path.name}{TAG}{uuid.uuid4().hex[:12]}")
    db = con.execute("SELECT current_database()").fetchall()[0][0]
    con.execute("CHECKPOINT")
    con.execute(f"ATTACH {sql_str(str(tmp))} AS forget_copy")
    try:
        con.execute('COPY FROM DATABASE "{}" TO forget_copy'.format(db.replace('"', '""')))
        con.execute("DELETE FROM forget_copy.meta WHERE key = ?", [PENDING_KEY])
        con.execute("CHECKPOINT forget_copy")
    finally:
        con.execute("DETACH forget_copy")
    con.close()
    # A write-ahead log left beside either file would be replayed onto the wrong database.
    for f in (path, tmp):
        if Path(f"{f}.wal").exists():
            raise ForgetError(f"{f}.wal is still there after a checkpoint; the store was not replaced (run forget again)")
    os.chmod(tmp, path.stat().st_mode & 0o777)
    _replace_store(tmp, path)


def _replace_store(tmp: Path, path: Path) -> None:
    """The one step that makes the compacted copy the store (separate so tests can stop here)."""
    os.replace(tmp, path)
    fsync_directory(path.parent)


# --------------------------------------------------------------------------------------------
# Sequence directories
# --------------------------------------------------------------------------------------------


def _forget_in_sequences(path: Path, forms_for: Callable[[str | None], dict[str, int]], report: dict[str, Any]) -> dict[str, Any]:
    seq = SequenceData(path)
    forms = forms_for(seq.meta.get("dataset"))
    idx = seq.users.lookup(list(forms))
    hit = idx > 0
    rows = np.unique(idx[hit]) - 1  # sorted user rows
    entry: dict[str, Any] = {"path": str(path), "dataset": seq.meta.get("dataset"), "users_removed": len(rows),
                             "events_removed": 0, "rewritten": False, "fingerprint_before": seq.fingerprint}
    _warn_stale_temporaries(path, report)
    if not len(rows):
        return entry
    # Exchanged with the old directory in one atomic step where the file system can; elsewhere a
    # job killed between two renames leaves the old one as .NAME.forget-old-*, which the next run
    # puts back (see _recover).
    with atomic_directory(path, overwrite=True, tag=TAG, fsync=True) as tmp:
        meta, carried = _write_without(seq, rows, tmp)
        del seq  # drop the memory maps of the old directory
        for name in carried:
            if not name.startswith("item_text-"):
                report["warnings"].append(f"{path}: {name} carried over unchanged (not an evorec file; check it for user data)")
        SequenceData(tmp)  # opens and validates
    for i in {i for i, h in zip(forms.values(), hit) if h}:
        report["users"][i]["sequence_dirs"] += 1
    entry.update(events_removed=meta["forgotten"]["last_events"], items_without_events=meta["forgotten"]["last_items_without_events"],
                 rewritten=True, fingerprint_after=meta["fingerprint"],
                 n_users=meta["n_users"], n_events=meta["n_events"], carried_over=carried)
    return entry


def _write_without(seq: SequenceData, rows: np.ndarray, out: Path) -> tuple[dict[str, Any], list[str]]:
    """Write ``seq`` minus user rows ``rows`` (sorted) into the empty directory ``out``.

    The kept users' events are copied span by span (between the removed users' spans), so the
    arrays are never all in memory and the other users' events are byte for byte the same."""
    offsets = np.asarray(seq.offsets, dtype=np.int64)
    keep = np.ones(len(seq), dtype=bool)
    keep[rows] = False
    spans, pos = [], 0
    for r in rows:
        a, b = int(offsets[r]), int(offsets[r + 1])
        if a > pos:
            spans.append((pos, a))
        pos = b
    if pos < seq.n_events:
        spans.append((pos, seq.n_events))
    writers = {name: NpyAppender(out / f"{name}.npy", dt) for name, dt in ARRAYS.items()}
    seen = np.zeros(seq.items.size, dtype=bool)  # items the kept users touched
    try:
        for a, b in spans:
            for s in range(a, b, _CHUNK):
                e = min(b, s + _CHUNK)
                for name, w in writers.items():
                    w.append(getattr(seq, name)[s:e])
                seen[np.asarray(seq.item[s:e])] = True
    finally:
        digests = {name: w.close() for name, w in writers.items()}
    gone = np.zeros(seq.items.size, dtype=bool)
    for r in rows:
        gone[np.asarray(seq.item[int(offsets[r]) : int(offsets[r + 1])])] = True
    orphans = int((gone & ~seen).sum())  # items only the forgotten users touched: kept in the vocabulary
    new_offsets = np.zeros(int(keep.sum()) + 1, dtype="<i8")
    np.cumsum(np.diff(offsets)[keep], out=new_offsets[1:])
    np.save(out / "offsets.npy", new_offsets)
    digests["offsets"] = hashlib.blake2b(new_offsets.tobytes(), digest_size=16).hexdigest()
    users = Vocab(seq.users.ids.filter(pa.array(keep)), name="users")
    users.save(out / "users.parquet")
    for name in ("items.parquet", "categories.parquet"):
        _link_or_copy(seq.path / name, out / name)
    vocabs = Vocabularies(users, seq.items, seq.categories)

    before = seq.meta.get("forgotten", {})
    n_events = int(new_offsets[-1])
    forgotten = {
        "users": int(before.get("users", 0)) + len(rows),
        "events": int(before.get("events", 0)) + seq.n_events - n_events,
        "last_events": seq.n_events - n_events,
        "last_items_without_events": orphans,
        "previous_fingerprints": [*before.get("previous_fingerprints", []), seq.fingerprint],
        "last_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # A directory of format 1 had no basket.npy: it is written now (by day), so say so.
    meta = {**seq.meta, "n_users": len(users), "n_events": n_events, "digests": digests,
            "fingerprint": _fingerprint(digests, vocabs), "forgotten": forgotten,
            "baskets": seq.basket_source, "format_version": FORMAT_VERSION}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, sort_keys=True))

    split_summary = None
    split_doc = seq.path / "split" / "split.json"
    if split_doc.exists():  # made again with its own config over the new sequences
        cfg = TypeAdapter(SplitConfig).validate_python(json.loads(split_doc.read_text())["config"])
        new_seq = SequenceData(out)
        split = make_split(new_seq, cfg)
        check_no_leakage(split, new_seq)
        (out / "split").mkdir()
        split.save_into(out / "split")
        split_summary = split.summary()
        del new_seq, split
    if (seq.path / "prepare.json").exists():
        doc = json.loads((seq.path / "prepare.json").read_text())
        doc.update(fingerprint=meta["fingerprint"], forgotten=forgotten)
        if split_summary is not None:
            doc["split"] = split_summary
        atomic_write_text(out / "prepare.json", json.dumps(doc, indent=2, sort_keys=True))
    carried = []
    for entry in sorted(seq.path.iterdir()):
        if entry.name in _SEQ_FILES:
            continue
        if entry.is_dir():
            shutil.copytree(entry, out / entry.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, out / entry.name)
        carried.append(entry.name)
    return meta, carried


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard link (evorec files are written once, never in place), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _recover(target: Path) -> None:
    """Undo what a killed forget left beside ``target``: put back a directory that was moved
    aside (only if ``target`` is missing), delete the rest."""
    parent = target.parent
    if not parent.is_dir():
        return
    leftovers = sorted(p for p in parent.iterdir() if p.name.startswith(f".{target.name}{TAG}"))
    if not target.exists():
        olds = [p for p in leftovers if p.name.startswith(f".{target.name}{TAG}old-") and (p / "meta.json").exists()]
        if olds:
            os.replace(olds[0], target)
            leftovers.remove(olds[0])
            log.warning("put back %s, moved aside by a forget that did not finish", target)
    for p in leftovers:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _remove_leftovers(path: Path) -> None:
    for p in path.parent.glob(f".{path.name}{TAG}*"):
        p.unlink()


def _warn_stale_temporaries(path: Path, report: dict[str, Any]) -> None:
    """A killed ``prepare`` leaves ``.NAME.tmp-*`` / ``.NAME.old-*`` beside NAME; they can hold
    the user, but might belong to a prepare running now, so they are reported, not deleted."""
    for p in sorted(path.parent.glob(f".{path.name}.tmp-*")) + sorted(path.parent.glob(f".{path.name}.old-*")):
        report["warnings"].append(f"{p}: a temporary directory left by an interrupted prepare; delete it if none is running")


# --------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------


def _forget_in_files(files: list[Path], forms: dict[str, int], report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rewrite each Parquet file of ``files`` with a ``user`` or ``user_id`` column without the users' rows."""
    out = []
    for f in files:
        names = pq.read_schema(f).names
        col = next((c for c in ("user", "user_id") if c in names), None)
        if col is None:
            continue
        table = pq.read_table(f)
        values = table.column(col)
        if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
            values = values.cast(pa.string())
        mask = pc.fill_null(pc.is_in(values, value_set=pa.array(list(forms), pa.string())), False)
        n = int(pc.sum(mask).as_py() or 0)
        if n:
            for d in pc.value_counts(pc.filter(values, mask)).to_pylist():
                report["users"][forms[d["values"]]]["file_rows"] += d["counts"]
            atomic_write_parquet(f, table.filter(pc.invert(mask)))
        out.append({"path": str(f), "rows_removed": n, "rewritten": bool(n)})
    return out


# --------------------------------------------------------------------------------------------
# Finding the directories
# --------------------------------------------------------------------------------------------


def _is_sequence_dir(p: Path) -> bool:
    return (p / "meta.json").exists() and (p / "offsets.npy").exists()


def _discover(paths: Sequence[str | Path], test: Callable[[Path], bool], what: str) -> list[Path]:
    """Each path is such a directory, or a folder whose subdirectories (one level) are; what a
    killed forget left behind is repaired first. Unknown paths fail before any change."""
    found: list[Path] = []
    for p in map(Path, paths):
        _recover(p)
        if p.is_dir():
            for child in sorted(p.iterdir()):
                if child.name.startswith(".") and TAG + "old-" in child.name:
                    _recover(child.with_name(child.name[1:].split(TAG, 1)[0]))
        if test(p):
            found.append(p)
            continue
        children = [c for c in sorted(p.iterdir()) if c.is_dir() and not c.name.startswith(".")] if p.is_dir() else []
        for c in children:
            _recover(c)
        children = [c for c in children if test(c)]
        if not children:
            raise ForgetError(f"{p} is neither {what} nor a folder of them")
        found.extend(children)
    return list(dict.fromkeys(found))
