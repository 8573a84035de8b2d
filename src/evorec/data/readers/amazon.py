"""Amazon sources: McAuley-lab review dumps (2014, 2018) with their metadata, and ReChorus TSVs.

``amazon``: reviews as JSON lines, one review per line::

    {"reviewerID": "A1VEELTKS8NLZB", "asin": "616719923X", "overall": 4.0,
     "unixReviewTime": 1370044800, "reviewTime": "06 1, 2013", ...}

Each review becomes a ``rate`` event whose value is the star rating (``overall``) and whose
time is ``unixReviewTime`` (or ``reviewTime``, "MM DD, YYYY", when that is missing).
``--option meta=FILE`` adds item metadata: the 2014 files hold one *Python dict literal* per
line (not JSON: single quotes), the 2018 files JSON lines; both are read, plain or gzipped,
as a stream. The category is the first path of ``categories`` (2014) or ``category`` (2018),
joined with " > "; its leaf is the item's ``category_id``. Parsing is CPU-bound Python, so
files over 64 MB are parsed in several processes (``--option workers=N``; default one per core
but one, at most 8; ``workers=1`` for in-process). The "ratings only" files are headerless
``user,item,rating,timestamp`` CSVs: read them with the ``csv`` format.

The 2023 dumps (Amazon Reviews'23: ``user_id``, ``asin``, ``parent_asin``, ``rating``,
``timestamp`` in milliseconds) read the same way: the item is ``parent_asin`` (the id the 2023
metadata uses), the value ``rating``; their metadata (``parent_asin``, ``categories``,
``main_category``, ``store``) too.

``amazon-ratings``: the "ratings only" CSVs: 2014 ``user,item,rating,timestamp`` and 2018
``item,user,rating,timestamp`` without a header (the order is told from the ids: an ASIN has 10
characters, a reviewer id starts with ``A`` and is longer), or a copy with a header such as
Kaggle's ``UserId,ProductId,Rating,Timestamp``; ``rate`` events valued by the rating.

``rechorus``: ReChorus' preprocessed Amazon data (``train.csv``/``dev.csv``/``test.csv``, TSV
``user_id item_id time`` in unix seconds; extra columns such as ``neg_items`` are ignored).
They are interactions derived from reviews, so they become ``rate`` events without a value.
Categories come from ``item_meta.csv`` (TSV ``item_id i_category ...``): named with
``--option items=FILE``, or found beside the source file (``--option items=`` turns that off).
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import logging
import math
import multiprocessing
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import BinaryIO, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evorec.data.readers import register
from evorec.data.readers.base import (
    BLOCK_BYTES,
    DelimitedReader,
    FormatMismatch,
    RawChunk,
    Reader,
    ReaderOptionError,
    first_lines,
    int_seconds,
    nullif_empty,
    open_binary,
    q,
    show,
    sql_str,
    strptime_seconds,
)
from evorec.data.readers.layouts import Recognition, Sample
from evorec.errors import MissingPathError
from evorec.types import ITEM_SCHEMA

log = logging.getLogger(__name__)
T = TypeVar("T")

PARALLEL_BLOCK_BYTES = 8 << 20  # block size when several processes parse (bounds memory in flight)
PARALLEL_MIN_BYTES = 64 << 20  # smaller files are parsed in-process (starting workers costs ~1 s)
MAX_DEFAULT_WORKERS = 8
CHECK_LINES = 20  # lines looked at by the format check
LITERAL_MAX_CHARS = 4 << 20  # longer lines are not tried as Python literals (parse cost)
RAW_CHARS = 2000  # raw text kept in quarantine per bad line
PATH_SEP = " > "

REVIEW_FIELDS = ("reviewerID", "asin", "overall", "unixReviewTime", "reviewTime", "user_id", "parent_asin", "rating", "timestamp")


# ---------------------------------------------------------------------------------------
# Lines holding one object each: JSON, or a Python dict literal (the 2014 metadata dumps).


def parse_object_line(line: bytes) -> tuple[str, dict | None, str | None]:
    """One line -> (text, object or None, reason it is unusable or None).

    JSON is tried first; a line that is not JSON but starts with ``{`` is tried as a Python
    literal with ``ast.literal_eval`` (which evaluates no code), guarded against size and
    nesting blow-ups.
    """
    text = line.rstrip(b"\r\n")
    if not text.strip():
        return "", None, "empty line"
    try:
        s = text.decode("utf-8")
    except UnicodeDecodeError:
        return text.decode("utf-8", errors="replace")[:RAW_CHARS], None, "invalid UTF-8"
    s = s.lstrip("\ufeff")
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as exc:
        obj = _literal(s)
        if obj is None:
            return s[:RAW_CHARS], None, f"invalid JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(obj, dict):
        return s[:RAW_CHARS], None, f"not a JSON object: {type(obj).__name__}"
    return s, obj, None


def _literal(s: str) -> object | None:
    body = s.strip()
    if not body.startswith("{") or len(body) > LITERAL_MAX_CHARS:
        return None
    try:
        return ast.literal_eval(body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _as_text(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v, default=str)


def _position(f: BinaryIO, uncompressed: int) -> int:
    """Bytes of the file on disk read so far (compressed bytes for gzip), for progress."""
    if isinstance(f, gzip.GzipFile) and f.fileobj is not None:
        try:
            return f.fileobj.tell()
        except (OSError, ValueError):
            pass
    return uncompressed


def line_blocks(path: Path, block_bytes: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(block of whole lines, line number of its first line, bytes of the file read so far)."""
    block_bytes = block_bytes or BLOCK_BYTES
    line_no, done, rest = 1, 0, b""
    with open_binary(path) as f:
        while True:
            data = f.read(block_bytes)
            if not data:
                break
            done += len(data)
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            block, rest = data[: cut + 1], data[cut + 1 :]
            yield block, line_no, _position(f, done)
            line_no += block.count(b"\n")
        if rest:
            yield rest + b"\n", line_no, _position(f, done)


def map_blocks(path: Path, fn: Callable[[bytes, int], T], workers: int = 1) -> Iterator[tuple[T, int]]:
    """``fn(block, first_line)`` over the file's line blocks, results in file order, with positions.

    With ``workers > 1`` blocks are parsed in that many processes (parsing JSON and Python
    literals is CPU-bound Python), at most ``2 * workers`` blocks in flight, so memory stays
    bounded. ``fn`` must be a module-level function (or a partial of one) so it can be sent.
    The serial path (``workers == 1``) is the reference the parallel one is tested against.
    """
    if workers <= 1:
        for block, first, pos in line_blocks(path):
            yield fn(block, first), pos
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(_START_METHOD))
    try:
        pending: deque = deque()
        for block, first, pos in line_blocks(path, PARALLEL_BLOCK_BYTES):
            pending.append((pool.submit(fn, block, first), pos))
            if len(pending) >= 2 * workers:
                fut, at = pending.popleft()
                yield fut.result(), at
        while pending:
            fut, at = pending.popleft()
            yield fut.result(), at
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# Linux: fork. The children only run the pure-Python parse functions (never DuckDB), and fork,
# unlike spawn/forkserver, does not re-run the caller's main script, which breaks scripts that
# lack an ``if __name__ == "__main__"`` guard. Elsewhere (macOS system libraries are not
# fork-safe) spawn, which needs that guard.
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


def workers_for(path: Path, options: dict[str, str]) -> int:
    """Processes for parsing ``path``: ``--option workers=N``, else (large files) one per core but one, at most 8."""
    text = options.get("workers", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ReaderOptionError(f"--option workers={text!r}: use a positive whole number")
        n = int(text)
    else:
        # One core stays with the main process (decompression, the ingest engine's DuckDB work).
        n = min(MAX_DEFAULT_WORKERS, _cores() - 1)
    try:
        small = path.stat().st_size < PARALLEL_MIN_BYTES
    except OSError:
        small = True
    return 1 if small else max(1, n)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fields_block(block: bytes, first_line: int, fields: tuple[str, ...]) -> RawChunk:
    """A block of object lines -> a chunk of the named fields as text (+ ``__raw``).

    Unusable lines become rejects with their 1-based line number, so none is lost.
    """
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    values: dict[str, list] = {k: [] for k in fields}
    raws: list[str] = []
    rows: list[int] = []
    rejects: list[tuple[int | None, str, str]] = []
    for i, line in enumerate(lines):
        text, obj, reason = parse_object_line(line)
        if obj is None:
            rejects.append((first_line + i, text, reason or "unusable line"))
            continue
        for k in fields:
            values[k].append(_as_text(obj.get(k)))
        raws.append(text[:RAW_CHARS])
        rows.append(first_line + i)
    cols = {k: pa.array(v, pa.string()) for k, v in values.items()}
    cols["__raw"] = pa.array(raws, pa.string())
    return RawChunk(pa.table(cols), np.asarray(rows, dtype=np.int64), rejects)


def object_line_chunks(
    path: Path, fields: tuple[str, ...], total: int | None = None, workers: int = 1
) -> Iterator[RawChunk]:
    """Chunks of the named fields of a file (plain, gz or zip) holding one object per line."""
    for chunk, pos in map_blocks(path, partial(fields_block, fields=fields), workers):
        chunk.bytes_done = min(pos, total) if total else pos
        yield chunk


def _check_object_lines(
    path: Path, expected: str, accept: Callable[[dict], bool], hint: Callable[[dict], str | None] | None = None
) -> None:
    """FormatMismatch unless one of the first lines is an object that ``accept`` takes.

    A line that is an object ``accept`` refuses fails at once (``hint`` may say what it looks
    like); lines that are not objects at all fail when none of the first lines is one.
    """
    first_bad: tuple[int, bytes] | None = None
    for ln, line in enumerate(first_lines(path, CHECK_LINES), start=1):
        _, obj, reason = parse_object_line(line)
        if obj is None:
            if reason != "empty line" and first_bad is None:
                first_bad = (ln, line)
            continue
        if accept(obj):
            return
        keys = list(obj)[:12]
        found = f"an object with keys {keys}"
        extra = hint(obj) if hint else None
        raise FormatMismatch(path, ln, expected, found + (f" ({extra})" if extra else ""))
    if first_bad is not None:
        ln, line = first_bad
        raise FormatMismatch(path, ln, expected, f"{show(line)} (not a JSON object)")


# ---------------------------------------------------------------------------------------
# Metadata: item rows (ITEM_SCHEMA) from 2014 / 2018 metadata lines.


def _clean(s: object) -> str | None:
    if not isinstance(s, str):
        return None
    out = " ".join(html.unescape(s).split())
    return out or None


def _clean_names(names: list | tuple) -> list[str]:
    """Category names, HTML entities decoded; empty entries and markup residue dropped."""
    out = []
    for n in names:
        c = _clean(n)
        if c and "<" not in c and ">" not in c:
            out.append(c)
    return out


def category_path(obj: dict) -> list[str]:
    """The item's category path, root first: 2014 ``categories`` (first path) or 2018 ``category``.

    A 2018 item with an empty ``category`` falls back to its ``main_cat``.
    """
    cats = obj.get("categories")
    if isinstance(cats, (list, tuple)):
        if cats and all(isinstance(c, str) for c in cats):  # a single flat path
            names = _clean_names(cats)
            if names:
                return names
        for p in cats:
            if isinstance(p, (list, tuple)):
                names = _clean_names(p)
                if names:
                    return names
    cat = obj.get("category")
    if isinstance(cat, (list, tuple)):
        names = _clean_names(cat)
        if names:
            return names
    elif isinstance(cat, str):
        names = _clean_names([cat])
        if names:
            return names
    main = obj.get("main_cat") or obj.get("main_category")
    return _clean_names([main]) if isinstance(main, str) else []


_PRICE = re.compile(r"^\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)")


def parse_price(v: object) -> float | None:
    """2014 prices are numbers; 2018 ones text: "$12.99", "$1,299.00", "$12.99 - $15.99" (-> 12.99).

    Anything else (empty, markup residue, negative, not finite) gives None.
    """
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str):
        m = _PRICE.match(html.unescape(v).strip())
        if not m:
            return None
        try:
            x = float(m.group(1).replace(",", ""))
        except ValueError:
            return None
    else:
        return None
    return x if math.isfinite(x) and x >= 0 else None


def meta_item(obj: dict) -> tuple | None:
    """One metadata object -> an ITEM_SCHEMA row, or None without an ``asin``."""
    asin = obj.get("parent_asin") or obj.get("asin")  # 2023 metadata: parent_asin only
    if not isinstance(asin, str) or not asin.strip():
        return None
    path = category_path(obj)
    return (
        asin.strip(),
        path[-1] if path else None,
        PATH_SEP.join(path) if path else None,
        _clean(obj.get("brand")) or _clean(obj.get("store")),
        _clean(obj.get("title")),
        parse_price(obj.get("price")),
    )


def meta_block(block: bytes, first_line: int) -> tuple[list[tuple], list[int]]:
    """A block of metadata lines -> (ITEM_SCHEMA rows, line numbers of unusable lines)."""
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out, bad = [], []
    for i, line in enumerate(lines):
        _, obj, reason = parse_object_line(line)
        row = meta_item(obj) if obj is not None else None
        if row is not None:
            out.append(row)
        elif reason != "empty line":
            bad.append(first_line + i)
    return out, bad


def meta_items(path: Path, workers: int = 1) -> Iterator[pa.Table]:
    """Stream an Amazon metadata file (2014 Python literals or 2018 JSON, plain or gzipped).

    Unusable lines (not an object with an ``asin``) are counted and logged with their numbers.
    """
    bad: list[int] = []
    n_bad = n_items = 0
    for rows, bad_lines in (r for r, _ in map_blocks(path, meta_block, workers)):
        n_bad += len(bad_lines)
        bad.extend(bad_lines[: max(0, 10 - len(bad))])
        n_items += len(rows)
        if rows:
            cols = list(zip(*rows))
            yield pa.table([pa.array(c, f.type) for c, f in zip(cols, ITEM_SCHEMA)], schema=ITEM_SCHEMA)
    if n_bad:
        log.warning(
            "%s: %d metadata line(s) unusable (not an object with an 'asin'), e.g. line(s) %s",
            path, n_bad, ", ".join(map(str, bad)),
        )
    log.info("%s: %d item metadata rows", path, n_items)


def check_options(reader: Reader, known: tuple[str, ...]) -> None:
    """A misspelt option fails loudly instead of being ignored."""
    unknown = sorted(set(reader.options) - set(known))
    if unknown:
        what = ", ".join("--map" if k == "map" else f"--option {k}" for k in unknown)
        allowed = ", ".join(known) or "none"
        raise ReaderOptionError(f"format {reader.format!r} does not take {what}; its options: {allowed}")


def _is_meta(obj: dict) -> bool:
    return ("asin" in obj or "parent_asin" in obj) and not _is_review(obj)


def _is_review(obj: dict) -> bool:
    """A 2014/2018 review (reviewerID, asin) or a 2023 one (user_id, asin/parent_asin, rating)."""
    return ("reviewerID" in obj and "asin" in obj) or ("user_id" in obj and "rating" in obj and ("asin" in obj or "parent_asin" in obj))


# ---------------------------------------------------------------------------------------
# Readers


@register
class AmazonReviews(Reader):
    """McAuley-lab Amazon reviews (2014 / 2018 JSON lines) -> ``rate`` events valued by ``overall``."""

    format = "amazon"
    description = (
        "Amazon reviews JSON lines 2014/2018 (reviewerID, asin, overall, unixReviewTime|reviewTime) or 2023 "
        "(user_id, parent_asin, rating, timestamp ms), plain or .gz; --option meta=FILE for metadata"
    )
    sql = {
        "user_id": f"coalesce({nullif_empty(q('reviewerID'))}, {nullif_empty(q('user_id'))})",
        "item_id": f"coalesce({nullif_empty(q('asin'))}, {nullif_empty(q('parent_asin'))})",
        "ts": (
            f"coalesce({int_seconds(q('unixReviewTime'))}, {strptime_seconds(q('reviewTime'), '%m %d, %Y')}, "
            f"CAST(floor(TRY_CAST(trim({q('timestamp')}) AS DOUBLE) / 1000) AS BIGINT))"
        ),
        "behavior": sql_str("rate"),
        "value": f"TRY_CAST(coalesce({nullif_empty(q('overall'))}, {nullif_empty(q('rating'))}) AS DOUBLE)",
    }
    ts_raw_sql = f"coalesce({q('unixReviewTime')}, {q('reviewTime')}, {q('timestamp')})"
    value_raw_sql = f"coalesce({q('overall')}, {q('rating')})"

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if sample.kind != "jsonl" or not sample.records:
            return []
        o = sample.records[0]
        if "reviewerID" in o and "asin" in o:
            layout = "2018 review JSON lines" if "vote" in o or "style" in o or "image" in o else "2014/2018 review JSON lines"
            found = {k: k for k in ("reviewerID", "asin", "overall", "unixReviewTime") if k in o}
            return [Recognition(cls.format, layout, found, specificity=len(found))]
        if _is_review(o):
            found = {k: k for k in ("user_id", "parent_asin", "asin", "rating", "timestamp") if k in o}
            return [Recognition(cls.format, "2023 review JSON lines (Amazon Reviews'23)", found, specificity=len(found))]
        if _is_meta(o):
            return [Recognition(cls.format, "item metadata lines (pass them with --option meta=FILE)", {"asin": "asin"},
                                ("reviewerID",), specificity=1)]
        return []

    def layout(self) -> str:
        return "review JSON lines (2014/2018/2023 keys)"

    def chunks(self) -> Iterator[RawChunk]:
        # 2023 reviews name the product group parent_asin, which the 2023 metadata uses: prefer it there.
        for chunk in self._chunks():
            t = chunk.table
            if t.num_rows and t.column("parent_asin").null_count < t.num_rows:
                i = t.column_names.index("asin")
                t = t.set_column(i, "asin", pc.coalesce(t.column("parent_asin"), t.column("asin")))
                chunk.table = t
            yield chunk

    def expected_text(self) -> str:
        return "Amazon review JSON lines with reviewerID, asin, overall, unixReviewTime"

    def meta_path(self) -> Path | None:
        m = self.options.get("meta", "").strip()
        return Path(m) if m else None

    def check(self) -> None:
        check_options(self, ("meta", "workers"))
        workers_for(self.path, self.options)  # validates --option workers
        _check_object_lines(
            self.path,
            self.expected_text(),
            _is_review,
            lambda o: "this looks like item metadata: pass it with --option meta=FILE" if _is_meta(o) else None,
        )
        meta = self.meta_path()
        if meta is not None:
            if not meta.exists():
                raise MissingPathError(f"metadata file not found: {meta} (--option meta)")
            _check_object_lines(
                meta,
                "Amazon metadata lines (JSON or Python dict literals) with an 'asin'",
                _is_meta,
                lambda o: "this looks like a review file, not metadata" if "reviewerID" in o else None,
            )

    def _chunks(self) -> Iterator[RawChunk]:
        workers = workers_for(self.path, self.options)
        yield from object_line_chunks(self.path, REVIEW_FIELDS, self.total_bytes(), workers)

    def raw_sql(self) -> str:
        return "__raw"

    def side_files(self) -> list[Path]:
        meta = self.meta_path()
        return [meta] if meta is not None else []

    def items(self) -> Iterator[pa.Table]:
        meta = self.meta_path()
        return meta_items(meta, workers_for(meta, self.options)) if meta is not None else iter(())


@register
class ReChorusAmazon(DelimitedReader):
    """ReChorus TSV ``user_id item_id time`` (+ ``item_meta.csv`` categories) -> ``rate`` events."""

    format = "rechorus"
    description = (
        "ReChorus TSV with header user_id, item_id, time (unix s); categories from --option items=item_meta.csv "
        "(TSV item_id, i_category; used automatically when it lies beside the file)"
    )
    delimiter = "\t"
    required = ("user_id", "item_id", "time")
    sql = {
        "user_id": nullif_empty(q("user_id")),
        "item_id": nullif_empty(q("item_id")),
        "ts": int_seconds(q("time")),
        "behavior": sql_str("rate"),
    }
    ts_raw_sql = q("time")
    ITEMS_NAME = "item_meta.csv"
    ITEMS_REQUIRED = ("item_id", "i_category")

    def __init__(self, path, options=None):
        super().__init__(path, options)
        self._items_path: Path | None = None
        self._items_resolved = False

    def items_path(self) -> Path | None:
        """``--option items=FILE``; else ``item_meta.csv`` beside the source; ``items=`` for none."""
        if not self._items_resolved:
            self._items_resolved = True
            if "items" in self.options:
                given = self.options["items"].strip()
                self._items_path = Path(given) if given else None
            else:
                beside = self.path.parent / self.ITEMS_NAME
                if beside.is_file() and beside.resolve() != self.path.resolve():
                    log.info("using item metadata found beside %s: %s", self.path.name, beside)
                    self._items_path = beside
        return self._items_path

    def check(self) -> None:
        check_options(self, ("items",))
        super().check()
        items = self.items_path()
        if items is None:
            return
        if not items.exists():
            raise MissingPathError(f"items file not found: {items} (--option items)")
        lines = first_lines(items, 1)
        names = [c.strip().strip('"') for c in lines[0].decode("utf-8", errors="replace").split("\t")] if lines else []
        missing = [c for c in self.ITEMS_REQUIRED if c not in names]
        if missing:
            raise FormatMismatch(
                items, 1, f"a tab-separated header with columns {list(self.ITEMS_REQUIRED)}",
                f"header {names[:12]} (missing {missing})",
            )

    def side_files(self) -> list[Path]:
        items = self.items_path()
        return [items] if items is not None else []

    def items(self) -> Iterator[pa.Table]:
        items = self.items_path()
        if items is None:
            return iter(())
        return _duckdb_items(
            "SELECT DISTINCT ON (item_id) trim(item_id) AS item_id, NULLIF(trim(i_category), '') AS category_id, "
            "NULL AS category_path, NULL AS brand, NULL AS title, NULL::DOUBLE AS price "
            f"FROM read_csv({sql_str(str(items))}, delim = {sql_str(chr(9))}, header = true, all_varchar = true) "
            "WHERE NULLIF(trim(item_id), '') IS NOT NULL"
        )


def _duckdb_items(select_sql: str) -> Iterator[pa.Table]:
    """Run a SELECT giving ITEM_SCHEMA columns in a private DuckDB and stream its result."""
    con = duckdb.connect()
    try:
        for batch in arrow_reader(con.sql(select_sql), 1 << 17):
            yield pa.Table.from_batches([batch]).cast(ITEM_SCHEMA)
    finally:
        con.close()


def arrow_reader(rel: duckdb.DuckDBPyRelation, batch_rows: int) -> pa.RecordBatchReader:
    """A relation's streaming Arrow reader (``to_arrow_reader`` in DuckDB 2, ``fetch_arrow_reader`` in 1.x)."""
    for method in ("to_arrow_reader", "fetch_arrow_reader"):
        if hasattr(rel, method):
            return getattr(rel, method)(batch_rows)
    raise RuntimeError("this DuckDB has no streaming Arrow reader on relations")
