"""What every source reader provides, and the shared machinery for delimited text files.

A reader turns one source file into *raw chunks*: Arrow tables of the source's own columns
(text as strings), the line number of every row, and the rows that could not even be split
into fields. It also says, as SQL expressions over those columns, how to compute the canonical
event columns. The ingest engine (``evorec.data.ingest``) runs those expressions inside DuckDB,
validates the result, and sends every row either to ``events`` or to ``quarantine``.

Keeping the per-format part declarative (column names + SQL) keeps each reader short and lets
the heavy lifting (type conversion, validation, hashing) run vectorised in the database.
"""

from __future__ import annotations

import codecs
import gzip
import io
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from evorec.data.readers.layouts import (
    Recognition,
    Role,
    Sample,
    describe_roles,
    header_recognition,
    missing_roles,
    resolve,
)
from evorec.errors import InputError, MissingPathError
from evorec.types import ITEM_SCHEMA, TimeKind

BLOCK_BYTES = 16 << 20  # text is parsed in blocks of about this size (bounded memory per block)
CHECK_MIN_ROWS = 50  # a first block with at least this many rows ...
CHECK_BAD_FRACTION = 0.5  # ... more than this share of them bad: the file is of the wrong format
# Item rows a reader may give beyond ITEM_SCHEMA: the seller (Tmall merchant_id) as a last column.
ITEM_SCHEMA_EXTRA = ITEM_SCHEMA.append(pa.field("merchant", pa.string()))


# User profile rows a reader gives from a side file (Tmall user_info, MovieLens users.dat, RecBole
# .user); the fields are those of the store's users table (evorec.data.store.USER_FIELDS).
PROFILE_SCHEMA = pa.schema([(n, pa.string()) for n in ("user_id", "age_range", "gender", "region")])


def profiles_table(user_id, age_range=None, gender=None, region=None) -> pa.Table:
    """A PROFILE_SCHEMA table from columns (lists or Arrow arrays; None: a field the file lacks)."""
    n = len(user_id)
    cols = {"user_id": user_id, "age_range": age_range, "gender": gender, "region": region}
    return pa.table({k: pa.nulls(n, pa.string()) if v is None else v for k, v in cols.items()}, schema=PROFILE_SCHEMA)


class FormatMismatch(InputError):
    """The file is not of the stated format. Raised before anything is written."""

    def __init__(self, path: Path | str, line: int | None, expected: str, found: str):
        where = f"{path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: expected {expected}; found {found}")
        self.path, self.line, self.expected, self.found = str(path), line, expected, found
        self.hint = ""

    def add_hint(self, hint: str) -> FormatMismatch:
        """Append what would read the file (columns found, closest layouts, a --map) to the message."""
        if hint and not self.hint:
            self.hint = hint
            self.args = (f"{self.args[0]}\n{hint}",)
        return self


class ReaderOptionError(InputError):
    """Options given to a reader are wrong (unknown column in --map, bad option value...)."""


@dataclass
class RawChunk:
    """One block of a source file, parsed into fields but not yet validated."""

    table: pa.Table  # the source's own columns
    source_row: np.ndarray  # (N,) int64: line number in the file of each row of ``table``
    rejects: list[tuple[int | None, str, str]] = field(default_factory=list)  # (line, raw, reason)
    bytes_done: int = 0  # how far into the (uncompressed) input this chunk ends, for progress

    @property
    def rows_read(self) -> int:
        return self.table.num_rows + len(self.rejects)


class Reader:
    """Base class: a subclass per source format family, registered in ``readers.REGISTRY``."""

    format: ClassVar[str]
    description: ClassVar[str] = ""
    time_kind: ClassVar[TimeKind] = TimeKind.UNIX
    # SQL expressions over the chunk's columns (names quoted as needed) for the canonical columns.
    # ``ts`` must be BIGINT unix seconds or NULL when unparseable; ``behavior`` a name from
    # evorec.types.BEHAVIORS, or the raw code when it is unknown (so it is quarantined by name).
    sql: ClassVar[dict[str, str]] = {}
    ts_raw_sql: ClassVar[str] = "NULL"  # the raw text of the time field, for error messages
    value_raw_sql: ClassVar[str] = "NULL"  # the raw text of the value field, for error messages

    def __init__(self, path: str | Path, options: dict[str, str] | None = None):
        self.path = Path(path)
        self.options = dict(options or {})

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        """This format's layouts that fit ``sample`` (complete or partial), for the sniffer."""
        return []

    def layout(self) -> str:
        """The variant of the format this file is in, said in the ingest summary."""
        return self.format

    def user_columns_sql(self) -> dict[str, str]:
        """SQL for the user profile fields the rows carry (``evorec.data.store.USER_FIELDS``), if any."""
        return {}

    # --- what subclasses implement -------------------------------------------------------
    def check(self) -> None:
        """Fail fast (FormatMismatch) if the file is evidently not of this format."""

    def chunks(self) -> Iterator[RawChunk]:
        raise NotImplementedError

    def columns_sql(self) -> dict[str, str]:
        return dict(self.sql)

    def raw_sql(self) -> str:
        """SQL giving the row's raw text, stored in quarantine for rows that fail validation."""
        raise NotImplementedError

    def items(self) -> Iterator[pa.Table]:
        """Item metadata (ITEM_SCHEMA) from side files, if the format has any."""
        return iter(())

    def profiles(self) -> Iterator[pa.Table]:
        """User profiles from a side file beside ``path`` (PROFILE_SCHEMA: the raw user id and the
        ``users`` table's fields, text), if the format has one. Ingest pseudonymises the ids like
        the events' and keeps the profiles of the users with events only."""
        return iter(())

    def side_files(self) -> list[Path]:
        """Other files read besides ``path`` (item metadata, profiles...): part of the content hash."""
        return []

    def total_bytes(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None


# ---------------------------------------------------------------------------------------
# Opening files: plain, gzip or zip, always as a binary stream.


def open_binary(path: Path) -> BinaryIO:
    """Open a plain, .gz or .zip file (a zip must hold exactly one non-directory member)."""
    if not path.exists():
        raise MissingPathError(f"source file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if magic == b"PK\x03\x04":
        zf = zipfile.ZipFile(path)
        members = [m for m in zf.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX")]
        if len(members) != 1:
            names = [m.filename for m in members]
            raise FormatMismatch(path, None, "a zip archive holding one data file", f"{len(members)} files: {names[:5]}")
        return zf.open(members[0])  # type: ignore[return-value]
    return open(path, "rb")


def first_lines(path: Path, n: int = 5) -> list[bytes]:
    with open_binary(path) as f:
        out = []
        for _ in range(n):
            line = f.readline()
            if not line:
                break
            out.append(line.rstrip(b"\r\n"))
        return out


def line_blocks(path: Path, block_bytes: int = BLOCK_BYTES, *, skip_header: bool = False) -> Iterator[tuple[bytes, int, int]]:
    """Yield (block of whole lines ending in ``\\n``, line number of its first line, bytes done).

    Line numbers are 1-based and count the header line when ``skip_header`` drops it.
    """
    line_no, done, rest = 1, 0, b""
    with open_binary(path) as f:
        if skip_header:
            head = f.readline()
            done += len(head)
            line_no += 1
        while True:
            data = f.read(block_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            block, rest = data[: cut + 1], data[cut + 1 :]
            done += len(block)
            yield block, line_no, done
            line_no += block.count(b"\n")
        if rest.strip(b"\r\n"):
            done += len(rest)
            yield rest + b"\n", line_no, done


def show(b: bytes, limit: int = 120) -> str:
    text = b.decode("utf-8", errors="replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ---------------------------------------------------------------------------------------
# Delimited text (CSV/TSV/...): block-wise parsing with exact line numbers.


class DelimitedReader(Reader):
    """A delimited text file, optionally with a header.

    Subclasses set ``delimiter`` and either ``header`` (the expected header names; the file's
    header must contain ``required`` of them, extra columns are allowed and ignored) or
    ``columns`` (names for a headerless file, whose lines must have exactly that many fields).
    """

    delimiter: ClassVar[str] = ","
    header: ClassVar[bool] = True
    columns: ClassVar[tuple[str, ...]] = ()  # headerless: the field names, in order
    required: ClassVar[tuple[str, ...]] = ()  # with a header: names that must be present
    # With a header: the columns found by role and alias (see layouts.Role), instead of ``required``.
    roles: ClassVar[tuple[Role, ...]] = ()
    quote: ClassVar[str | bool] = '"'

    def __init__(self, path: str | Path, options: dict[str, str] | None = None):
        super().__init__(path, options)
        self._names: list[str] | None = None
        self._roles: dict[str, str] | None = None

    def head_fields(self, n: int = 1) -> list[list[str]]:
        """The first ``n`` lines split on the delimiter (BOM dropped), before header or not is decided."""
        lines = first_lines(self.path, n) if self.path.is_file() else []
        text = [ln.lstrip(codecs.BOM_UTF8).decode("utf-8", errors="replace") for ln in lines]
        return [t.split(self.delimiter) for t in text]

    # -- columns by role --
    def role_columns(self) -> dict[str, str]:
        """Role -> the column of this file that holds it (headerless files: the role names)."""
        if self._roles is None:
            names = self.field_names()
            self._roles = resolve(names, self.roles) if self.header else {r.name: r.name for r in self.roles}
        return self._roles

    def has(self, role: str) -> bool:
        return role in self.role_columns()

    def col(self, role: str) -> str:
        """The quoted column holding ``role``."""
        return q(self.role_columns()[role])

    # -- header and format check --
    def _read_header(self) -> list[str]:
        lines = first_lines(self.path, 1)
        if not lines:
            raise FormatMismatch(self.path, 1, "a header line", "an empty file")
        head = lines[0]
        if head.startswith(codecs.BOM_UTF8):
            head = head[len(codecs.BOM_UTF8) :]
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatMismatch(self.path, 1, "a UTF-8 header line", show(head)) from None
        return [c.strip().strip('"') for c in text.split(self.delimiter)]

    def field_names(self) -> list[str]:
        if self._names is None:
            self._names = self._read_header() if self.header else list(self.columns)
        return self._names

    def expected_text(self) -> str:
        d = {"\t": "tab", ",": "comma", ";": "semicolon", " ": "space"}.get(self.delimiter, repr(self.delimiter))
        if self.header:
            return f"a {d}-separated header with columns {list(self.required)}"
        return f"{len(self.columns)} {d}-separated fields ({', '.join(self.columns)})"

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        """By default a header layout: the roles, or else the ``required`` names as they are."""
        if not cls.header:
            return []
        required = cls.required if isinstance(cls.required, tuple) else ()  # a property in some readers
        roles = cls.roles or tuple(Role(c, (c,)) for c in required)
        if not roles:
            return []
        r = header_recognition(cls.format, f"{cls.format}, columns by name", sample, roles, (cls.delimiter,))
        return [r] if r is not None else []

    def check(self) -> None:
        if self.header and self.roles:
            names = self.field_names()
            missing = missing_roles(self.role_columns(), self.roles)
            if missing:
                d = {"\t": "tab", ",": "comma", ";": "semicolon", " ": "space"}.get(self.delimiter, repr(self.delimiter))
                raise FormatMismatch(
                    self.path, 1, f"a {d}-separated header with columns {describe_roles(self.roles)}",
                    f"header {names[:16]} (no column for {[r.aliases[0] for r in missing]})",
                )
            return
        if self.header:
            names = self.field_names()
            missing = [c for c in self.required if c not in names]
            if missing:
                raise FormatMismatch(
                    self.path, 1, self.expected_text(), f"header {names[:12]} (missing {missing})"
                )
            return
        lines = first_lines(self.path, 1)
        if not lines:
            return  # an empty headerless file: nothing to ingest, not an error
        n = len(lines[0].split(self.delimiter.encode()))
        if n != len(self.columns):
            raise FormatMismatch(self.path, 1, self.expected_text(), f"{n} field(s): {show(lines[0])}")

    # -- parsing --
    def _blocks(self) -> Iterator[tuple[bytes, int, int]]:
        """Yield (block of whole lines, line number of its first line, bytes done)."""
        return line_blocks(self.path, skip_header=self.header)

    def _parse_block(self, block: bytes, first_line: int, done: int) -> RawChunk:
        names = self.field_names()
        bad: list[tuple[int | None, str, str]] = []

        def on_invalid(row) -> str:
            line = first_line + row.number - 1 if row.number is not None else None
            if row.actual_columns <= 1 and not (row.text or "").strip():
                reason = "empty line"
            else:
                reason = f"wrong column count: expected {row.expected_columns}, found {row.actual_columns}"
            bad.append((line, row.text, reason))
            return "skip"

        table = pacsv.read_csv(
            io.BytesIO(block),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=len(block) + 1),
            parse_options=pacsv.ParseOptions(
                delimiter=self.delimiter,
                quote_char=self.quote if self.quote else False,
                invalid_row_handler=on_invalid,
                ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.binary() for n in names}, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
        # Physical line of each parsed row: all lines of the block minus the skipped ones.
        n_lines = block.count(b"\n")
        skipped = np.array(sorted(b[0] - first_line for b in bad if b[0] is not None), dtype=np.int64)
        keep = np.ones(n_lines, dtype=bool)
        keep[skipped[skipped < n_lines]] = False
        rows = np.flatnonzero(keep)[: table.num_rows].astype(np.int64) + first_line
        # Blank lines parse as rows of empty fields: quarantine them as what they are.
        if table.num_rows and table.num_columns:
            blank = pc.equal(pc.binary_length(table.column(0)), 0)
            for col in table.columns[1:]:
                blank = pc.and_(blank, pc.equal(pc.binary_length(col), 0))
            blank_np = blank.to_numpy(zero_copy_only=False)
            if blank_np.any():
                bad.extend((int(r), "", "empty line") for r in rows[blank_np])
                table = table.filter(pa.array(~blank_np))
                rows = rows[~blank_np]
        table, enc_bad = to_utf8(table, rows)
        if enc_bad:
            keep_mask = np.ones(len(rows), dtype=bool)
            for i, raw, reason in enc_bad:
                keep_mask[i] = False
                bad.append((int(rows[i]), raw, reason))
            table = table.filter(pa.array(keep_mask))
            rows = rows[keep_mask]
        return RawChunk(table=table, source_row=rows, rejects=bad, bytes_done=done)

    def chunks(self) -> Iterator[RawChunk]:
        # Two blocks parse at once (pyarrow releases the GIL) while the engine loads the previous one.
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = []
            for block, first_line, done in self._blocks():
                pending.append(pool.submit(self._parse_block, block, first_line, done))
                if len(pending) >= 2:
                    yield pending.pop(0).result()
            for fut in pending:
                yield fut.result()

    def raw_sql(self) -> str:
        cols = ", ".join(q(n) for n in self.field_names())
        return f"concat_ws({sql_str(self.delimiter)}, {cols})"


def to_utf8(table: pa.Table, rows: np.ndarray) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """Cast binary columns to UTF-8 strings; rows with invalid bytes are reported, not dropped."""
    cols, bad_rows = [], {}
    for name, col in zip(table.column_names, table.columns):
        try:
            cols.append(col.cast(pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        values = col.to_pylist()  # slow path, only for a block that holds invalid bytes
        fixed = []
        for i, v in enumerate(values):
            try:
                fixed.append(None if v is None else v.decode("utf-8"))
            except UnicodeDecodeError:
                fixed.append(None)
                bad_rows.setdefault(i, f"invalid UTF-8 in column {name!r}")
        cols.append(pa.array(fixed, pa.string()))
    out = pa.table(cols, names=table.column_names)
    bad = []
    for i, reason in sorted(bad_rows.items()):
        raw = b"|".join(table.column(c)[i].as_py() or b"" for c in table.column_names)
        bad.append((i, raw.decode("utf-8", errors="replace"), reason))
    return out, bad


def q(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def empty_items() -> pa.Table:
    return ITEM_SCHEMA.empty_table()


def behavior_case(column_sql: str, mapping: dict[str, str]) -> str:
    """SQL mapping a source's behaviour codes to canonical names; unknown codes pass through."""
    if not mapping:
        return f"trim({column_sql})"
    whens = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in mapping.items())
    return f"CASE trim({column_sql}) {whens} ELSE trim({column_sql}) END"


def int_seconds(column_sql: str) -> str:
    """SQL: a text field holding unix seconds (integer or decimal) -> BIGINT, NULL if unparseable."""
    return f"CAST(floor(TRY_CAST(trim({column_sql}) AS DOUBLE)) AS BIGINT)"


def strptime_seconds(column_sql: str, fmt: str) -> str:
    """SQL: a text field in a strptime format (UTC) -> BIGINT unix seconds, NULL if unparseable."""
    return f"CAST(epoch(try_strptime(trim({column_sql}), {sql_str(fmt)})) AS BIGINT)"


def nullif_empty(column_sql: str) -> str:
    return f"NULLIF(trim({column_sql}), '')"
