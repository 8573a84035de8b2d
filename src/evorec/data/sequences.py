"""Per-user, time-ordered event arrays on disk, memory-mapped at training time.

Layout of a sequence directory (all arrays little-endian ``.npy``)::

    meta.json         dataset, time_kind, counts, config, created_at, fingerprint
    offsets.npy       int64 (n_users + 1): user row u owns events offsets[u]:offsets[u+1]
    item.npy          int32 (n_events): item index (items vocabulary, 0 = padding/unknown)
    category.npy      int32 (n_events): category index (0 = no category)
    behavior.npy      int8  (n_events): evorec.types.BEHAVIOR_INDEX
    ts.npy            int64 (n_events): unix seconds (ordinal datasets: the position)
    basket.npy        int64 (n_events): the event's basket, numbered per user from 0 in time order
                      (events of one basket share it); see "Baskets" below
    users.parquet     users vocabulary: row u has user index u + 1
    items.parquet     items vocabulary
    categories.parquet categories vocabulary

Events of one user are ordered by (ts, basket, ingest_id, source_row): ties in time keep source
order, except that the lines of two baskets with the same time are grouped basket by basket.

Baskets: where the log has basket ids (``events.basket_id``), the lines of one basket id form a
basket; elsewhere a basket is a user's events of one calendar day (UTC), or, on ordinal
datasets (no dates), each event alone. ``meta["baskets"]`` says which: ``"basket_id"``,
``"day"``, ``"event"``, or ``"mixed"`` (some events with ids, the others by day/event). A user's
baskets are numbered 0, 1, ... by their first event's time (ties: basket id), so the number
never decreases along the user's events unless one basket's lines span another basket's time. Directories written
before format 2 have no ``basket.npy``: :attr:`SequenceData.basket` derives it by day on read.
The arrays are written by streaming the ordered Ibis result in Arrow record batches and
appending to the ``.npy`` files, so memory stays bounded whatever the number of events (on
DuckDB; see :func:`write_sequences_from_batches` for other engines). A directory is written
into a temporary sibling and renamed at the end (:func:`evorec.utils.io.atomic_directory`), so
readers never see half a directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from evorec.data.clean import SECONDS_PER_DAY, SOURCE_ORDER, with_seconds
from evorec.data.vocab import PAD, Vocab, behavior_indices, vocab_table
from evorec.errors import StateError
from evorec.types import BEHAVIOR_INDEX, TimeKind
from evorec.utils.io import atomic_directory

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: basket.npy and meta["baskets"]; a cache of an older version is prepared again
ARRAYS: dict[str, np.dtype] = {
    "item": np.dtype("<i4"),
    "category": np.dtype("<i4"),
    "behavior": np.dtype("i1"),
    "ts": np.dtype("<i8"),
    "basket": np.dtype("<i8"),
}
OPTIONAL_ARRAYS = ("basket",)  # absent from directories of format 1 (derived on read)
BASKET_SOURCES = ("basket_id", "day", "event", "mixed")
VOCAB_FILES = {"users": "users.parquet", "items": "items.parquet", "categories": "categories.parquet"}

BASKET_TEXT = {
    "basket_id": "the log's basket ids",
    "day": "the log has no basket ids: a basket is a user's events of one calendar day (UTC)",
    "event": "the log has no basket ids and no dates (ordinal): every event is its own basket",
    "mixed": "the log's basket ids where an event has one, else the user's calendar day (UTC)",
}

Progress = Callable[[int], None]
"""``progress(done)``: called while sequences are written, with the number of events so far."""


class SequenceConfig(BaseModel):
    """How sequences are cut and written."""

    model_config = ConfigDict(extra="forbid")

    max_length: int | None = Field(
        None, ge=1, description="keep only each user's most recent max_length events (None: all)"
    )
    batch_rows: int = Field(1 << 18, ge=1, description="rows per Arrow batch while streaming")


class SequenceError(StateError):
    """A sequence directory is missing, incomplete or inconsistent."""


# --------------------------------------------------------------------------------------------
# Appendable .npy files
# --------------------------------------------------------------------------------------------


class NpyAppender:
    """A 1-d ``.npy`` file written in chunks: a fixed-size header is reserved and rewritten with
    the final length on :meth:`close`. Also hashes the data as it goes."""

    HEADER_BYTES = 128  # magic(6) + version(2) + len(2) + dict padded; a multiple of 64

    def __init__(self, path: str | Path, dtype: np.dtype | str) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.n = 0
        self._hash = hashlib.blake2b(digest_size=16)
        self._f = open(self.path, "wb")  # closed in close()
        self._f.write(self._header(0))

    def _header(self, n: int) -> bytes:
        d = repr({"descr": self.dtype.str, "fortran_order": False, "shape": (n,)})
        body_len = self.HEADER_BYTES - 10
        if len(d) + 1 > body_len:
            raise ValueError(f"npy header too long for {n} rows")
        body = (d + " " * (body_len - len(d) - 1) + "\n").encode("latin1")
        return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body

    def append(self, values: np.ndarray) -> None:
        arr = np.ascontiguousarray(values, dtype=self.dtype)
        if arr.ndim != 1:
            raise ValueError("NpyAppender takes 1-d arrays")
        buf = arr.tobytes()
        self._f.write(buf)
        self._hash.update(buf)
        self.n += len(arr)

    def close(self) -> str:
        """Finalise the header; returns the hex digest of the data."""
        if not self._f.closed:
            self._f.seek(0)
            self._f.write(self._header(self.n))
            self._f.close()
        return self._hash.hexdigest()


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def limit_history(events: ir.Table, max_length: int) -> ir.Table:
    """Keep each user's most recent ``max_length`` events (ties resolved by source order)."""
    rn = ibis.row_number().over(
        group_by="user_id",
        order_by=[ibis.desc("ts"), *(ibis.desc(c) for c in SOURCE_ORDER)],
    )
    return events.mutate(_rn=rn).filter(lambda t: t._rn < max_length).drop("_rn")


@dataclass
class Vocabularies:
    users: Vocab
    items: Vocab
    categories: Vocab

    @classmethod
    def from_events(cls, events: ir.Table) -> Vocabularies:
        return cls(
            users=Vocab.from_table(events, "user_id", name="users"),
            items=Vocab.from_table(events, "item_id", name="items"),
            categories=Vocab.from_table(events, "category_id", name="categories"),
        )

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        for key, fname in VOCAB_FILES.items():
            getattr(self, key).save(directory / fname)

    @classmethod
    def load(cls, directory: str | Path) -> Vocabularies:
        directory = Path(directory)
        return cls(**{key: Vocab.load(directory / fname, name=key) for key, fname in VOCAB_FILES.items()})

    @property
    def behaviors(self) -> dict[str, int]:
        return dict(BEHAVIOR_INDEX)


def with_basket_id(events: ir.Table) -> ir.Table:
    """``events`` with a ``basket_id`` column (NULL everywhere when it has none)."""
    if "basket_id" in events.columns:
        return events
    return events.mutate(basket_id=ibis.null().cast("string"))


def basket_ordinals(t: ir.Table, time_kind: TimeKind | str = TimeKind.UNIX, user: str = "user_idx") -> ir.Table:
    """Add ``basket`` (int64): each event's basket, numbered per ``user`` from 0 by the basket's
    first time (ties: basket id). A basket is the events of one ``basket_id``; events without one
    group by calendar day (UTC), or stand alone on ordinal datasets. ``t`` needs ``ts_s``."""
    no_id = t.basket_id.isnull()
    unit = t.ts_s if TimeKind(time_kind) is TimeKind.ORDINAL else t.ts_s // SECONDS_PER_DAY
    t = t.mutate(_bgrp=no_id.ifelse(unit, ibis.literal(-1, type="int64")))
    t = t.mutate(_bstart=t.ts_s.min().over(group_by=[user, "basket_id", "_bgrp"]))
    # NULLs sort differently on DuckDB and Spark: order by a non-NULL stand-in.
    rank = ibis.dense_rank().over(group_by=user, order_by=["_bstart", t.basket_id.fill_null(""), "_bgrp"])
    return t.mutate(basket=rank.cast("int64")).drop("_bgrp", "_bstart")


def basket_source(events: ir.Table, time_kind: TimeKind | str = TimeKind.UNIX) -> str:
    """What the baskets of ``events`` are made of: ``basket_id``, ``day``, ``event`` or ``mixed``."""
    r = events.aggregate(n=events.count(), with_id=with_basket_id(events).basket_id.count()).to_pyarrow().to_pylist()[0]
    n, with_id = int(r["n"] or 0), int(r["with_id"] or 0)
    if n and with_id == n:
        return "basket_id"
    if with_id:
        return "mixed"
    return "event" if TimeKind(time_kind) is TimeKind.ORDINAL else "day"


def baskets_by_time(ts: np.ndarray, offsets: np.ndarray, time_kind: TimeKind | str = TimeKind.UNIX) -> np.ndarray:
    """Per-user basket numbers without basket ids (what :func:`basket_ordinals` gives then):
    a user's calendar days (UTC) numbered from 0, or each event alone on ordinal datasets.
    ``ts`` must be time-ordered within each user."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n = int(offsets[-1]) if len(offsets) else 0
    lengths = np.diff(offsets)
    starts = offsets[:-1][lengths > 0]
    if TimeKind(time_kind) is TimeKind.ORDINAL:
        new = np.ones(n, dtype=bool)
    else:
        day = np.floor_divide(np.asarray(ts, dtype=np.int64), SECONDS_PER_DAY)
        new = np.empty(n, dtype=bool)
        if n:
            new[0] = True
            np.not_equal(day[1:], day[:-1], out=new[1:])
    new[starts] = True
    count = np.cumsum(new, dtype=np.int64) - 1  # global basket number
    return (count - np.repeat(count[starts], lengths[lengths > 0])).astype("<i8")


def indexed_events(events: ir.Table, vocabs: Vocabularies, time_kind: TimeKind | str = TimeKind.UNIX) -> ir.Table:
    """Events as indices, in sequence order: columns ``user_idx, item_idx, category_idx,
    behavior, ts_s, basket`` ordered by (user, ts, basket, ingest_id, source_row).

    User indices follow the user id order, so ordering by ``user_idx`` is ordering by user.
    ``basket`` is the per-user basket number (:func:`basket_ordinals`).
    """
    t = with_basket_id(with_seconds(events))
    u, i, c = (vocab_table(v) for v in (vocabs.users, vocabs.items, vocabs.categories))
    t = t.join(u, t.user_id == u.id).mutate(user_idx=lambda x: x.idx).drop("id", "idx")
    t = t.join(i, t.item_id == i.id).mutate(item_idx=lambda x: x.idx).drop("id", "idx")
    t = t.left_join(c, t.category_id == c.id)
    t = t.mutate(category_idx=t.idx.fill_null(PAD).cast("int32")).drop("id", "idx")
    t = basket_ordinals(t, time_kind)
    t = t.order_by(["user_idx", "ts", "basket", *SOURCE_ORDER])  # two baskets at one time: one after the other
    return t.select("user_idx", "item_idx", "category_idx", "behavior", "ts_s", "basket")


def arrow_batches(expr: ir.Table, chunk_size: int) -> pa.RecordBatchReader:
    """Stream an Ibis table as Arrow record batches.

    On DuckDB the compiled SQL is run as a relation on the backend's connection and read with
    its streaming Arrow reader: Ibis 12's ``to_pyarrow_batches`` calls ``fetch_record_batch``,
    which DuckDB 2 removed, and a DB-API cursor's reader copies every row first. So memory
    stays bounded by the chunk size (plus DuckDB's own, spillable, sort buffers). Other
    backends use ``Table.to_pyarrow_batches`` (PySpark's collects the result on the driver).
    """
    backend = expr._find_backend()
    if getattr(backend, "name", None) == "duckdb":
        backend._run_pre_execute_hooks(expr)  # registers in-memory tables (vocabularies)
        rel = backend.con.sql(backend.compile(expr))
        for method in ("to_arrow_reader", "fetch_arrow_reader"):  # DuckDB >= 2, 1.x
            if hasattr(rel, method):
                return getattr(rel, method)(chunk_size)
    return expr.to_pyarrow_batches(chunk_size=chunk_size)


def write_sequences_from_batches(
    batches: Iterator[pa.RecordBatch] | pa.RecordBatchReader,
    directory: str | Path,
    *,
    n_users: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Append ordered, indexed record batches (as from :func:`indexed_events`) to the arrays
    in ``directory`` (which must exist and be empty of arrays). Returns counts and digests.

    Batches must be ordered by user index, every user index 1..n_users must occur, and
    ``behavior`` may be names (string) or indices (integers).
    """
    directory = Path(directory)
    writers = {name: NpyAppender(directory / f"{name}.npy", dt) for name, dt in ARRAYS.items()}
    starts: list[np.ndarray] = []
    prev_user = 0
    pos = 0
    unknown_behaviors = 0
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            user = batch.column("user_idx").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            change = np.empty(len(user), dtype=bool)
            change[0] = user[0] != prev_user
            np.not_equal(user[1:], user[:-1], out=change[1:])
            idx = np.flatnonzero(change)
            new_users = user[idx]
            expected = np.arange(prev_user + 1, prev_user + 1 + len(idx))
            if not np.array_equal(new_users, expected):
                raise SequenceError(
                    "events are not ordered by user index, or a user index is missing "
                    f"(after user {prev_user} got {new_users[:5].tolist()}...)"
                )
            starts.append(idx.astype(np.int64) + pos)
            if len(idx):
                prev_user = int(new_users[-1])
            beh_col = batch.column("behavior")
            if pa.types.is_string_view(beh_col.type) or pa.types.is_large_string(beh_col.type):
                beh_col = beh_col.cast(pa.string())
            if pa.types.is_string(beh_col.type):
                beh = behavior_indices(beh_col)
            else:
                beh = beh_col.to_numpy(zero_copy_only=False).astype(np.int8)
            unknown_behaviors += int((beh == PAD).sum())
            writers["item"].append(batch.column("item_idx").to_numpy(zero_copy_only=False))
            writers["category"].append(batch.column("category_idx").to_numpy(zero_copy_only=False))
            writers["behavior"].append(beh)
            writers["ts"].append(batch.column("ts_s").to_numpy(zero_copy_only=False))
            writers["basket"].append(batch.column("basket").to_numpy(zero_copy_only=False))
            pos += batch.num_rows
            if progress is not None:
                progress(pos)
    finally:
        digests = {name: w.close() for name, w in writers.items()}
    if prev_user != n_users:
        raise SequenceError(f"expected {n_users} users in the stream, saw {prev_user}")
    if unknown_behaviors:
        logger.warning("%d events have a behaviour outside evorec.types.BEHAVIORS (index 0)", unknown_behaviors)
    offsets = np.concatenate([*starts, np.array([pos], dtype=np.int64)]) if starts else np.zeros(1, np.int64)
    offsets = offsets.astype("<i8")
    np.save(directory / "offsets.npy", offsets)
    digests["offsets"] = hashlib.blake2b(offsets.tobytes(), digest_size=16).hexdigest()
    return {"n_events": pos, "n_users": n_users, "digests": digests, "unknown_behaviors": unknown_behaviors}


def _fingerprint(digests: dict[str, str], vocabs: Vocabularies) -> str:
    """Hash of the arrays' digests and the vocabularies: the identity of a sequence directory."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(digests):
        h.update(f"{name}={digests[name]};".encode())
    for key in VOCAB_FILES:
        h.update(f"{key}={getattr(vocabs, key).fingerprint()};".encode())
    return h.hexdigest()


def build_sequences_into(
    events: ir.Table,
    directory: str | Path,
    *,
    dataset: str,
    time_kind: TimeKind | str,
    config: SequenceConfig | None = None,
    extra_meta: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write vocabularies, arrays and ``meta.json`` into an existing directory (not atomic;
    :func:`write_sequences` wraps it). ``events`` are cleaned events on any Ibis backend.
    Returns the meta dict."""
    directory = Path(directory)
    config = config or SequenceConfig()
    time_kind = TimeKind(time_kind)
    events = with_basket_id(with_seconds(events))
    if config.max_length is not None:
        events = limit_history(events, config.max_length)
    vocabs = Vocabularies.from_events(events)
    vocabs.save(directory)
    baskets = basket_source(events, time_kind)
    ordered = indexed_events(events, vocabs, time_kind)
    reader = arrow_batches(ordered, config.batch_rows)
    stats = write_sequences_from_batches(reader, directory, n_users=len(vocabs.users), progress=progress)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "time_kind": time_kind.value,
        "n_users": stats["n_users"],
        "n_events": stats["n_events"],
        "n_items": len(vocabs.items),
        "n_categories": len(vocabs.categories),
        "n_behaviors": len(BEHAVIOR_INDEX),
        "behaviors": dict(BEHAVIOR_INDEX),
        "config": config.model_dump(mode="json"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "digests": stats["digests"],
        "fingerprint": _fingerprint(stats["digests"], vocabs),
        # The same arrays without basket.npy, as format 1 fingerprinted them: runs trained on
        # such a directory still fit this one (see SequenceData.derived_from).
        "compatible_fingerprints": [_fingerprint({k: v for k, v in stats["digests"].items() if k != "basket"}, vocabs)],
        "baskets": baskets,
    }
    if extra_meta:
        meta.update(extra_meta)
    (directory / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    logger.info(
        "sequences: %d users, %d events, %d items, %d categories; baskets: %s -> %s",
        meta["n_users"],
        meta["n_events"],
        meta["n_items"],
        meta["n_categories"],
        BASKET_TEXT[baskets],
        directory,
    )
    return meta


def is_current(directory: str | Path) -> bool:
    """Whether ``directory`` holds sequences in this :data:`FORMAT_VERSION` (a cache written by
    an older evorec, e.g. without ``basket.npy``, is stale and should be prepared again)."""
    meta_path = Path(directory) / "meta.json"
    if not meta_path.exists():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format_version") == FORMAT_VERSION and all(
        (Path(directory) / f"{name}.npy").exists() for name in ARRAYS
    )


def write_sequences(
    events: ir.Table,
    out_dir: str | Path,
    *,
    dataset: str,
    time_kind: TimeKind | str,
    config: SequenceConfig | None = None,
    extra_meta: dict[str, Any] | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> SequenceData:
    """Build a sequence directory from cleaned events, atomically. Returns it opened."""
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        build_sequences_into(
            events,
            tmp,
            dataset=dataset,
            time_kind=time_kind,
            config=config,
            extra_meta=extra_meta,
            progress=progress,
        )
    return SequenceData(out_dir)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserSequence:
    """One user's events: read-only views into the memory-mapped arrays."""

    item: np.ndarray
    category: np.ndarray
    behavior: np.ndarray
    ts: np.ndarray
    basket: np.ndarray | None = None  # per-user basket numbers (SequenceData.basket)

    def __len__(self) -> int:
        return len(self.item)


class SequenceData:
    """A sequence directory opened with ``np.load(mmap_mode="r")``.

    Row ``u`` (0-based, ``0 <= u < len(self)``) is the user whose vocabulary index is ``u + 1``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            raise SequenceError(f"not a sequence directory (no meta.json): {self.path}")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.offsets: np.ndarray = np.load(self.path / "offsets.npy", mmap_mode="r")
        arrays = {
            name: np.load(self.path / f"{name}.npy", mmap_mode="r")
            for name in ARRAYS
            if name not in OPTIONAL_ARRAYS or (self.path / f"{name}.npy").exists()
        }
        self._basket: np.ndarray | None = arrays.get("basket")
        self.item: np.ndarray = arrays["item"]
        self.category: np.ndarray = arrays["category"]
        self.behavior: np.ndarray = arrays["behavior"]
        self.ts: np.ndarray = arrays["ts"]
        n = int(self.offsets[-1]) if len(self.offsets) else 0
        for name, arr in arrays.items():
            if len(arr) != n or arr.dtype != ARRAYS[name]:
                raise SequenceError(f"{self.path}/{name}.npy: expected {n} x {ARRAYS[name]}, got {len(arr)} x {arr.dtype}")
        if len(self.offsets) != self.meta["n_users"] + 1:
            raise SequenceError(f"{self.path}: offsets has {len(self.offsets)} entries for {self.meta['n_users']} users")
        self._vocabs: Vocabularies | None = None

    # -- sizes ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    @property
    def basket(self) -> np.ndarray:
        """(n_events,) int64: each event's basket, numbered per user from 0 in time order
        (events of one basket share it; the module doc says how baskets are made). A
        directory of format 1 has no ``basket.npy``: baskets are then derived by day (ordinal
        datasets: per event) once, in memory."""
        if self._basket is None:
            self._basket = baskets_by_time(self.ts, self.offsets, self.time_kind)
        return self._basket

    @property
    def basket_source(self) -> str:
        """What :attr:`basket` groups: ``"basket_id"`` (the log's basket ids), ``"day"`` (a user's
        calendar day, UTC), ``"event"`` (each event; ordinal data) or ``"mixed"``."""
        if "baskets" in self.meta:
            return self.meta["baskets"]
        return "event" if self.time_kind is TimeKind.ORDINAL else "day"

    @property
    def time_kind(self) -> TimeKind:
        return TimeKind(self.meta["time_kind"])

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def derived_from(self, fingerprint: str | None) -> bool:
        """Whether these are the sequences with ``fingerprint``, or were made from them by
        forgetting users (``evorec data forget``): same item and category vocabularies, the
        other users' events unchanged, so a model trained on those still fits these."""
        if not fingerprint:
            return False
        return (
            fingerprint == self.fingerprint
            or fingerprint in self.meta.get("forgotten", {}).get("previous_fingerprints", [])
            or fingerprint in self.meta.get("compatible_fingerprints", [])
        )

    @property
    def lengths(self) -> np.ndarray:
        """Events per user row (int64)."""
        return np.diff(np.asarray(self.offsets))

    def length_quantiles(self, qs: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)) -> dict[float, float]:
        lengths = self.lengths
        if len(lengths) == 0:
            return {q: 0.0 for q in qs}
        return {q: float(v) for q, v in zip(qs, np.quantile(lengths, qs))}

    # -- access ---------------------------------------------------------------------------

    def user(self, row: int) -> UserSequence:
        """Views of user row ``row``'s events, oldest first."""
        if not -len(self) <= row < len(self):
            raise IndexError(f"user row {row} out of range for {len(self)} users")
        row = row % len(self)
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        return UserSequence(self.item[a:b], self.category[a:b], self.behavior[a:b], self.ts[a:b], self.basket[a:b])

    def user_of(self, positions: np.ndarray | int) -> np.ndarray:
        """The user row owning each global event position."""
        return np.searchsorted(np.asarray(self.offsets), positions, side="right") - 1

    @property
    def vocabs(self) -> Vocabularies:
        if self._vocabs is None:
            self._vocabs = Vocabularies.load(self.path)
        return self._vocabs

    @property
    def users(self) -> Vocab:
        return self.vocabs.users

    @property
    def items(self) -> Vocab:
        return self.vocabs.items

    @property
    def categories(self) -> Vocab:
        return self.vocabs.categories

    def item_category(self) -> np.ndarray:
        """(n_items,) int64 category index of every item: the category its events carry (0 for
        padding and for items without events). The one item -> category lookup (a fresh array)."""
        cat = np.zeros(self.items.size, dtype=np.int64)
        if self.n_events:
            cat[np.asarray(self.item)] = np.asarray(self.category)
        return cat

    def row_of(self, user_id: str) -> int:
        """Row of a user id, or -1 if unknown."""
        return self.users.index_of(user_id) - 1

    def __repr__(self) -> str:
        return f"SequenceData({str(self.path)!r}, users={len(self)}, events={self.n_events})"
