"""Order-only sequence files from the sequential-recommendation literature.

These files carry no timestamps, only each user's interactions in time order. evorec marks
such datasets ``ordinal`` (:class:`evorec.types.TimeKind`): an event's ``ts`` is its 1-based
position in its user's sequence, i.e. ``1970-01-01 00:00:00 + n seconds``, to be read as an
order, never as a date.

Formats:

- ``s3rec``: S3-Rec's ``Beauty.txt`` and its siblings: ``user item item ...``, one line per
  user, items in time order, whitespace-separated integer ids. The item attributes file
  ``<stem>_item2attributes.json`` (item -> list of attribute ids) is read when it lies beside
  the file, or from ``--option attributes=FILE`` (``attributes=none`` skips it). In S3-Rec's
  preprocessing an item's attributes are its category ids followed by its brand id, so evorec
  takes the *first* attribute id as the item's ``category_id`` and keeps all of them, joined
  with ``|``, as ``category_path``.
- ``sasrec``: SASRec / BERT4Rec ``user item`` lines, chronological per user. A user's lines
  need not be contiguous: positions are counted per user across the whole file.

Rows: one interaction (user, item) is one row. A line that holds no usable interaction (blank,
a user without items, a non-integer user id, invalid UTF-8, in ``sasrec`` any line that is not
exactly two integers) is quarantined as one row with its line number; in ``s3rec`` a non-integer item
token is quarantined on its own (its line's other items are kept). Positions count only the
interactions that are kept, so every user's sequence is numbered 1..n without gaps.

Options: ``behavior`` (default ``rate``: these files are derived from reviews/ratings).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evorec.data.readers import register
from evorec.data.readers.base import (
    BLOCK_BYTES,
    FormatMismatch,
    RawChunk,
    Reader,
    ReaderOptionError,
    first_lines,
    line_blocks,
    open_binary,
    show,
    sql_str,
)
from evorec.data.readers.layouts import Recognition, Sample
from evorec.data.readers.movielens import side_file
from evorec.types import BEHAVIORS, ITEM_SCHEMA, TimeKind

INT_TOKEN = r"^[0-9]+$"
RAW_LIMIT = 2000  # characters of a rejected line kept in quarantine


def _block_lines(block: bytes, first_line: int) -> tuple[pa.Array, list[tuple[int | None, str, str]], np.ndarray]:
    """The block's lines as UTF-8 strings (invalid ones rejected and blanked), plus a skip mask."""
    lines = pc.split_pattern(pa.array([block], pa.binary()), b"\n").flatten()
    lines = lines.slice(0, len(lines) - 1)  # the block ends in "\n": drop the empty tail
    skip = np.zeros(len(lines), dtype=bool)
    rejects: list[tuple[int | None, str, str]] = []
    try:
        return lines.cast(pa.string()), rejects, skip
    except pa.ArrowInvalid:
        pass
    fixed = []
    for i, b in enumerate(lines.to_pylist()):  # slow path, only for a block with invalid bytes
        try:
            fixed.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            fixed.append("")
            skip[i] = True
            rejects.append((first_line + i, b.decode("utf-8", errors="replace")[:RAW_LIMIT], "invalid UTF-8"))
    return pa.array(fixed, pa.string()), rejects, skip


class _SequenceText(Reader):
    """Shared machinery: whitespace-separated integer ids, positions counted per user."""

    time_kind = TimeKind.ORDINAL
    two_columns: ClassVar[bool] = False  # sasrec: exactly "user item" per line
    ts_raw_sql = "CAST(pos AS VARCHAR)"
    block_bytes: ClassVar[int] = BLOCK_BYTES

    def __init__(self, path: str | Path, options: dict[str, str] | None = None):
        super().__init__(path, options)
        self.behavior = self.options.get("behavior", "rate")
        if self.behavior not in BEHAVIORS:
            raise ReaderOptionError(f"--option behavior={self.behavior!r}: known behaviours {list(BEHAVIORS)}")

    def columns_sql(self) -> dict[str, str]:
        return {"user_id": "user_id", "item_id": "item_id", "ts": "pos", "behavior": sql_str(self.behavior)}

    def raw_sql(self) -> str:
        return "user_id || ' ' || item_id"

    def expected_text(self) -> str:
        if self.two_columns:
            return "lines of two whitespace-separated integer ids: user item"
        return "lines of whitespace-separated integer ids: user item item ... (one user per line)"

    # -- format check --------------------------------------------------------------------
    def check(self) -> None:
        """Fail when most of the first (up to 50) non-blank lines are unusable; name the first one."""
        lines = first_lines(self.path, 50)
        rows = [(i + 1, ln.split()) for i, ln in enumerate(lines) if ln.strip()]
        if not rows:
            return  # empty file: nothing to ingest
        bad = [(line, toks) for line, toks in rows if not self._line_usable(toks)]
        if len(bad) * 2 > len(rows):
            line, toks = bad[0]
            found = f"{len(toks)} field(s): {show(lines[line - 1])}"
            if self.two_columns and len(toks) > 2 and all(t.isdigit() for t in toks):
                found += " (one user with many items per line: use --format s3rec)"
            raise FormatMismatch(self.path, line, self.expected_text(), found)
        if not self.two_columns and len(rows) > 1 and all(len(t) == 2 for _, t in rows):
            # S3-Rec has one line per user; two-field lines repeating a user are SASRec's layout.
            for (l1, a), (_, b) in zip(rows, rows[1:]):
                if a[0] == b[0]:
                    raise FormatMismatch(
                        self.path, l1, self.expected_text(),
                        f"two-field lines repeating user {a[0].decode()!r} (the 'user item' layout: use --format sasrec)",
                    )

    def _line_usable(self, toks: list[bytes]) -> bool:
        if self.two_columns:
            return len(toks) == 2 and toks[0].isdigit() and toks[1].isdigit()
        return len(toks) >= 2 and toks[0].isdigit() and 2 * sum(t.isdigit() for t in toks[1:]) >= len(toks) - 1

    # -- parsing -------------------------------------------------------------------------
    def chunks(self) -> Iterator[RawChunk]:
        counts: dict[str, int] = {}  # interactions kept so far per user: O(users) memory
        for block, first_line, done in line_blocks(self.path, self.block_bytes):
            yield self._parse_block(block, first_line, done, counts)

    def _parse_block(self, block: bytes, first_line: int, done: int, counts: dict[str, int]) -> RawChunk:
        lines, rejects, skip = _block_lines(block, first_line)
        parts = pc.ascii_split_whitespace(pc.ascii_trim_whitespace(lines))
        n_tok = pc.list_value_length(parts).to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = parts.offsets.to_numpy()[:-1].astype(np.int64) - int(parts.offsets[0].as_py())
        tokens = parts.flatten()
        is_int = pc.match_substring_regex(tokens, INT_TOKEN).to_numpy(zero_copy_only=False)
        n_lines = len(lines)
        line_nos = first_line + np.arange(n_lines, dtype=np.int64)

        empty = (n_tok == 1) & ~is_int[offsets] & (pc.utf8_length(tokens).to_numpy(zero_copy_only=False)[offsets] == 0)
        user_ok = is_int[offsets]
        if self.two_columns:
            second_ok = np.zeros(n_lines, dtype=bool)
            has2 = n_tok == 2
            second_ok[has2] = is_int[offsets[has2] + 1]
            line_ok = has2 & user_ok & second_ok
        else:
            line_ok = (n_tok >= 2) & user_ok
        line_ok &= ~skip

        bad_lines = np.flatnonzero(~line_ok & ~skip)
        if len(bad_lines):
            texts = lines.take(pa.array(bad_lines)).to_pylist()
            for i, text in zip(bad_lines.tolist(), texts):
                rejects.append((int(line_nos[i]), text[:RAW_LIMIT], self._line_reason(text, int(n_tok[i]), bool(empty[i]))))

        # Token-level view: the user token of each line is at its offset; items follow it.
        parent = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False).astype(np.int64)
        pos_in_line = np.arange(len(tokens), dtype=np.int64) - offsets[parent]
        is_item = (pos_in_line > 0) & line_ok[parent]
        if not self.two_columns:
            bad_tok = np.flatnonzero(is_item & ~is_int)
            if len(bad_tok):
                users = tokens.take(pa.array(offsets[parent[bad_tok]])).to_pylist()
                toks = tokens.take(pa.array(bad_tok)).to_pylist()
                for k, u, t in zip(bad_tok.tolist(), users, toks):
                    rejects.append((
                        int(line_nos[parent[k]]), f"{u} {t}"[:RAW_LIMIT],
                        f"non-integer item id: {t[:80]!r} (token {int(pos_in_line[k]) + 1} of the line)",
                    ))
            is_item &= is_int
        keep = np.flatnonzero(is_item)
        items = tokens.take(pa.array(keep))
        users = tokens.take(pa.array(offsets[parent[keep]]))
        pos = self._positions(users, counts)
        rejects.sort(key=lambda r: r[0] or 0)
        table = pa.table({"user_id": users, "item_id": items, "pos": pa.array(pos, pa.int64())})
        return RawChunk(table=table, source_row=line_nos[parent[keep]], rejects=rejects, bytes_done=done)

    def _line_reason(self, text: str, n_tok: int, empty: bool) -> str:
        toks = text.split()
        if empty or not toks:
            return "empty line"
        if not toks[0].isdigit():
            return f"non-integer user id: {toks[0][:80]!r}"
        if len(toks) == 1:
            return "user without items"
        if self.two_columns:
            if len(toks) != 2:
                return f"wrong field count: expected 2 (user item), found {len(toks)}"
            return f"non-integer item id: {toks[1][:80]!r}"
        return "unusable line"

    @staticmethod
    def _positions(users: pa.Array, counts: dict[str, int]) -> np.ndarray:
        """1-based position of each interaction in its user's sequence, continuing ``counts``."""
        n = len(users)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        enc = pc.dictionary_encode(users)
        idx = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        names = enc.dictionary.to_pylist()
        base = np.fromiter((counts.get(u, 0) for u in names), dtype=np.int64, count=len(names))
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_idx)) + 1]
        sizes = np.diff(np.r_[starts, n])
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)
        for u, c in zip(names, np.bincount(idx, minlength=len(names)).tolist()):
            counts[u] = counts.get(u, 0) + c
        return base[idx] + rank + 1


@register
class S3RecText(_SequenceText):
    """S3-Rec ``Beauty.txt``: ``user item item ...`` per line (+ ``<stem>_item2attributes.json``)."""

    format = "s3rec"
    description = (
        "S3-Rec sequences: 'user item item ...' per line, order only (ordinal time); "
        "--option attributes=<stem>_item2attributes.json (auto-detected), behavior=rate"
    )

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        rows = _int_token_rows(sample)
        if rows and any(len(r) > 2 for r in rows) and min(len(r) for r in rows) >= 2:
            return [Recognition(cls.format, "'user item item ...' lines (S3-Rec), no timestamps", {"user": "token 1", "items": "tokens 2.."},
                                notes=("order only: event times are positions",), specificity=2)]
        return []

    def attributes_file(self) -> Path | None:
        name = self.path.name
        for suffix in (".gz", ".zip"):
            name = name.removesuffix(suffix)
        default = self.path.with_name(f"{Path(name).stem}_item2attributes.json")
        return side_file(self.options, "attributes", default)

    def side_files(self) -> list[Path]:
        f = self.attributes_file()
        return [f] if f else []

    def items(self) -> Iterator[pa.Table]:
        f = self.attributes_file()
        if f is None:
            return
        with open_binary(f) as fh:
            try:
                attrs = json.load(fh)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                line = getattr(exc, "lineno", None)
                raise FormatMismatch(f, line, "a JSON object: item id -> list of attribute ids", f"invalid JSON ({exc})") from None
        if not isinstance(attrs, dict):
            raise FormatMismatch(f, None, "a JSON object: item id -> list of attribute ids", f"a JSON {type(attrs).__name__}")
        ids, cats, paths = [], [], []
        for item, values in attrs.items():
            if not isinstance(values, list):
                values = [values]
            values = [str(v) for v in values if v is not None]
            ids.append(str(item))
            cats.append(values[0] if values else None)
            paths.append("|".join(values) if values else None)
        n = len(ids)
        yield pa.table(
            {
                "item_id": pa.array(ids, pa.string()),
                "category_id": pa.array(cats, pa.string()),
                "category_path": pa.array(paths, pa.string()),
                "brand": pa.nulls(n, pa.string()),
                "title": pa.nulls(n, pa.string()),
                "price": pa.nulls(n, pa.float64()),
            },
            schema=ITEM_SCHEMA,
        )


@register
class SASRecText(_SequenceText):
    """SASRec / BERT4Rec ``user item`` lines, chronological per user."""

    format = "sasrec"
    description = "SASRec/BERT4Rec 'user item' lines, chronological per user, order only (ordinal time); --option behavior=rate"
    two_columns = True

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        rows = _int_token_rows(sample)
        if rows and all(len(r) == 2 for r in rows):
            return [Recognition(cls.format, "'user item' lines (SASRec/BERT4Rec), no timestamps", {"user": "token 1", "item": "token 2"},
                                notes=("order only: event times are positions",), specificity=2)]
        return []


def _int_token_rows(sample: Sample) -> list[list[str]]:
    """The sample's rows if it is a headerless file of whitespace-separated integers, else []."""
    if sample.kind != "delimited" or sample.delimiter != " " or sample.header is not None or not sample.rows:
        return []
    if not all(all(t.isdigit() for t in r) for r in sample.rows if r):
        return []
    return [r for r in sample.rows if r]
