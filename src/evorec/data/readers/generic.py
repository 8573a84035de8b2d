"""A user's own files: CSV/TSV, Parquet or JSON lines, with columns named by ``--map``.

``--map user_id=COL,item_id=COL,ts=COL[,behavior=COL,category_id=COL,value=COL,basket_id=COL]`` names the
source columns; without ``--map`` the canonical names are expected (so evorec's own Parquet,
e.g. the simulator's output, reads as is). Options (``--option key=value``):

- ``ts_format``: ``unix`` (seconds, default), ``unix_ms``, ``iso`` (ISO 8601), or a strptime
  pattern such as ``%Y-%m-%d %H:%M:%S``; Parquet timestamp columns are read as they are.
- ``behavior_map``: ``code:name;code:name`` (e.g. ``pv:view;0:click``); without a behaviour
  column every event gets ``default_behavior`` (default ``view``).
- ``delimiter`` (CSV): ``,`` (default), ``tab``, ``;``, ``|``.
- ``items``: a Parquet/CSV file with item metadata in the canonical item columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evorec.data.readers import register
from evorec.data.readers.base import (
    BLOCK_BYTES,
    DelimitedReader,
    FormatMismatch,
    RawChunk,
    Reader,
    ReaderOptionError,
    behavior_case,
    first_lines,
    int_seconds,
    nullif_empty,
    open_binary,
    q,
    show,
    sql_str,
    strptime_seconds,
)
from evorec.data.readers.layouts import UNIX_S, Recognition, Sample
from evorec.errors import MissingPathError
from evorec.types import BEHAVIORS, ITEM_SCHEMA

CANONICAL = ("user_id", "item_id", "ts", "behavior", "category_id", "value", "basket_id")
DELIMITERS = {",": ",", "comma": ",", "tab": "\t", "\\t": "\t", "\t": "\t", ";": ";", "|": "|", "space": " "}


def canonical_recognition(fmt: str, sample: Sample) -> list[Recognition]:
    """evorec's own column names (``user_id``, ``item_id``, ``ts``...) with unix-second times:
    readable without ``--map``. Other time formats are left to the sniffer's proposal."""
    if sample.header is None:
        return []
    found = {c: c for c in CANONICAL if c in sample.header}
    if not {"user_id", "item_id", "ts"} <= set(found):
        return []
    ts_type = sample.types.get("ts", "")
    values = sample.column_values("ts")
    if not (ts_type.startswith("timestamp") or (values and all(re.fullmatch(UNIX_S, v.strip()) for v in values))):
        return []
    return [Recognition(fmt, "evorec's canonical columns", found, specificity=len(found))]


def parse_map(text: str | None) -> dict[str, str]:
    """``user_id=uid,item_id=iid`` -> {"user_id": "uid", "item_id": "iid"}."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ReaderOptionError(f"--map entry {part!r} is not of the form canonical=source_column")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in CANONICAL:
            raise ReaderOptionError(f"--map names unknown column {k!r}; canonical columns: {', '.join(CANONICAL)}")
        out[k] = v
    return out


class MappedMixin:
    """SQL for the canonical columns from a ``--map`` of source column names."""

    options: dict[str, str]
    path: Path

    def mapping(self) -> dict[str, str]:
        m = parse_map(self.options.get("map"))
        return m or {c: c for c in CANONICAL if c in self.available()}

    def available(self) -> list[str]:
        raise NotImplementedError

    def check_mapping(self) -> None:
        m = self.mapping()
        missing = [c for c in ("user_id", "item_id", "ts") if c not in m]
        if missing:
            raise ReaderOptionError(
                f"{self.path}: no column for {missing}; name them with --map "
                f"(e.g. --map user_id=uid,item_id=iid,ts=time); columns found: {self.available()[:20]}"
            )
        absent = [src for src in m.values() if src not in self.available()]
        if absent:
            raise FormatMismatch(self.path, 1, f"columns {sorted(m.values())} (from --map)", f"columns {self.available()[:20]} (missing {absent})")
        fmt = self.options.get("ts_format", "unix")
        if fmt not in ("unix", "unix_ms", "iso") and "%" not in fmt:
            raise ReaderOptionError(f"--option ts_format={fmt!r}: use unix, unix_ms, iso or a strptime pattern")
        default = self.options.get("default_behavior", "view")
        if default not in BEHAVIORS:
            raise ReaderOptionError(f"--option default_behavior={default!r}: known behaviours {list(BEHAVIORS)}")

    def behavior_map(self) -> dict[str, str]:
        text = self.options.get("behavior_map", "")
        out = {}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            if ":" not in part:
                raise ReaderOptionError(f"--option behavior_map entry {part!r} is not code:name")
            code, name = (s.strip() for s in part.split(":", 1))
            if name not in BEHAVIORS:
                raise ReaderOptionError(f"behavior_map maps {code!r} to unknown behaviour {name!r}; known: {list(BEHAVIORS)}")
            out[code] = name
        return out

    def columns_sql(self) -> dict[str, str]:
        m = self.mapping()
        fmt = self.options.get("ts_format", "unix")
        ts_col = q(m["ts"])
        if fmt == "unix":
            ts = int_seconds(ts_col)
        elif fmt == "unix_ms":
            ts = f"CAST(floor(TRY_CAST(trim({ts_col}) AS DOUBLE) / 1000) AS BIGINT)"
        elif fmt == "iso":
            ts = f"CAST(epoch(TRY_CAST(trim({ts_col}) AS TIMESTAMPTZ)) AS BIGINT)"
        else:
            ts = strptime_seconds(ts_col, fmt)
        cols = {"user_id": nullif_empty(q(m["user_id"])), "item_id": nullif_empty(q(m["item_id"])), "ts": ts}
        if "behavior" in m:
            cols["behavior"] = behavior_case(q(m["behavior"]), self.behavior_map())
        else:
            cols["behavior"] = sql_str(self.options.get("default_behavior", "view"))
        if "category_id" in m:
            cols["category_id"] = nullif_empty(q(m["category_id"]))
        if "value" in m:
            cols["value"] = f"TRY_CAST({nullif_empty(q(m['value']))} AS DOUBLE)"
        if "basket_id" in m:
            cols["basket_id"] = nullif_empty(q(m["basket_id"]))
        return cols

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        return q(self.mapping()["ts"])

    @property
    def value_raw_sql(self) -> str:  # type: ignore[override]
        m = self.mapping()
        return q(m["value"]) if "value" in m else "NULL"

    def side_files(self) -> list[Path]:
        return [Path(self.options["items"])] if "items" in self.options else []

    def items(self) -> Iterator[pa.Table]:
        if "items" not in self.options:
            return iter(())
        return read_items_file(Path(self.options["items"]))


def read_items_file(path: Path) -> Iterator[pa.Table]:
    """Item metadata in the canonical item columns (Parquet or CSV with a header)."""
    if not path.exists():
        raise MissingPathError(f"items file not found: {path}")
    if path.suffix == ".parquet":
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        if "item_id" not in names:
            raise FormatMismatch(path, None, "an item_id column", f"columns {names}")
        for batch in pf.iter_batches(batch_size=1 << 17):
            yield _to_item_schema(pa.Table.from_batches([batch]))
    else:
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
        if "item_id" not in table.column_names:
            raise FormatMismatch(path, 1, "an item_id column", f"columns {table.column_names}")
        yield _to_item_schema(table)


def _to_item_schema(t: pa.Table) -> pa.Table:
    cols = {}
    for f in ITEM_SCHEMA:
        if f.name in t.column_names:
            cols[f.name] = t.column(f.name).cast(f.type)
        else:
            cols[f.name] = pa.nulls(t.num_rows, f.type)
    return pa.table(cols, schema=ITEM_SCHEMA)


@register
class GenericCSV(MappedMixin, DelimitedReader):
    format = "csv"
    description = "your own CSV/TSV with a header: --map user_id=COL,item_id=COL,ts=COL[,behavior=..,category_id=..,value=..,basket_id=..]"

    def __init__(self, path, options=None):
        super().__init__(path, options)
        d = self.options.get("delimiter", ",")
        if d not in DELIMITERS:
            raise ReaderOptionError(f"--option delimiter={d!r}: use one of {sorted(DELIMITERS)}")
        self.delimiter = DELIMITERS[d]  # type: ignore[misc]

    @property
    def required(self):  # type: ignore[override]
        return tuple(self.mapping().values())

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if sample.kind != "delimited":
            return []
        out = canonical_recognition(cls.format, sample)
        if out and sample.delimiter != ",":
            opt = {"\t": "tab", ";": ";", "|": "|", " ": "space"}.get(sample.delimiter or ",")
            if opt is None:
                return []
            out = [Recognition(r.format, r.layout, r.found, options={"delimiter": opt}, specificity=r.specificity) for r in out]
        return out

    def available(self) -> list[str]:
        return self.field_names()

    def check(self) -> None:
        names = self.field_names()
        if len(names) == 1 and self.options.get("map"):
            lines = first_lines(self.path, 1)
            raise FormatMismatch(
                self.path, 1, f"{self.delimiter!r}-separated header with columns {sorted(self.mapping().values())}",
                f"one field: {show(lines[0]) if lines else 'nothing'} (wrong --option delimiter?)",
            )
        self.check_mapping()


@register
class GenericParquet(MappedMixin, Reader):
    format = "parquet"
    description = "Parquet events (evorec's canonical columns, or named with --map); --option items=FILE for metadata"

    def available(self) -> list[str]:
        return self._file().schema_arrow.names

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        return canonical_recognition(cls.format, sample) if sample.kind == "parquet" else []

    def _file(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for "not parquet"
            raise FormatMismatch(self.path, None, "a Parquet file", f"unreadable as Parquet ({exc})") from None

    def check(self) -> None:
        self.check_mapping()

    def chunks(self) -> Iterator[RawChunk]:
        pf = self._file()
        used = sorted(set(self.mapping().values()))
        row = 1
        total = self.total_bytes() or 0
        n_total = max(pf.metadata.num_rows, 1)
        for batch in pf.iter_batches(batch_size=1 << 19, columns=used):
            t = pa.Table.from_batches([batch])
            cols = {name: _as_text(t.column(name)) for name in used}
            n = t.num_rows
            rows = np.arange(row, row + n, dtype=np.int64)
            row += n
            yield RawChunk(pa.table(cols), rows, [], bytes_done=int(total * (row - 1) / n_total))

    def raw_sql(self) -> str:
        cols = ", ".join(q(c) for c in sorted(set(self.mapping().values())))
        return f"concat_ws('|', {cols})"


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Source values as text, so one set of SQL conversions serves every file type."""
    t = col.type
    if pa.types.is_timestamp(t):
        secs = pc.divide(col.cast(pa.timestamp("us", tz=t.tz)).cast(pa.int64()), 1_000_000)
        return secs.cast(pa.string())
    if pa.types.is_date(t):
        return pc.multiply(col.cast(pa.date32()).cast(pa.int32()).cast(pa.int64()), 86400).cast(pa.string())
    if pa.types.is_dictionary(t):
        return col.cast(t.value_type).cast(pa.string())
    return col.cast(pa.string())


@register
class GenericJSONLines(MappedMixin, Reader):
    format = "jsonl"
    description = "JSON lines, one event object per line, fields named with --map"

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        return canonical_recognition(cls.format, sample) if sample.kind == "jsonl" else []

    def available(self) -> list[str]:
        lines = first_lines(self.path, 1)
        if not lines:
            return []
        try:
            obj = json.loads(lines[0])
        except json.JSONDecodeError:
            raise FormatMismatch(self.path, 1, "a JSON object per line", show(lines[0])) from None
        if not isinstance(obj, dict):
            raise FormatMismatch(self.path, 1, "a JSON object per line", show(lines[0]))
        return list(obj)

    def check(self) -> None:
        if not first_lines(self.path, 1):
            return
        self.check_mapping()

    def chunks(self) -> Iterator[RawChunk]:
        fields = sorted(set(self.mapping().values()))
        yield from json_line_chunks(self.path, fields)

    def raw_sql(self) -> str:
        return "__raw"


def json_line_chunks(path: Path, fields: list[str]) -> Iterator[RawChunk]:
    """Blocks of JSON lines -> chunks of the named fields as text (+ the raw line).

    Bad lines (not JSON, not an object) become rejects with their line number.
    """
    line_no = 1
    done = 0
    with open_binary(path) as f:
        rest = b""
        while True:
            data = f.read(BLOCK_BYTES)
            if not data and not rest:
                break
            at_end = not data
            data = rest + data
            cut = data.rfind(b"\n")
            if at_end or cut < 0:
                block, rest = (data, b"") if at_end else (b"", data)
            else:
                block, rest = data[: cut + 1], data[cut + 1 :]
            if block:
                done += len(block)
                yield _json_block(block, line_no, fields, done)
                line_no += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            if at_end:
                break


def _json_block(block: bytes, first_line: int, fields: list[str], done: int) -> RawChunk:
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    values: dict[str, list] = {k: [] for k in fields}
    raws, rows, rejects = [], [], []
    for i, line in enumerate(lines):
        ln = first_line + i
        text = line.rstrip(b"\r")
        if not text.strip():
            rejects.append((ln, "", "empty line"))
            continue
        try:
            s = text.decode("utf-8")
        except UnicodeDecodeError:
            rejects.append((ln, text.decode("utf-8", errors="replace"), "invalid UTF-8"))
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as exc:
            rejects.append((ln, s[:2000], f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(obj, dict):
            rejects.append((ln, s[:2000], f"not a JSON object: {type(obj).__name__}"))
            continue
        for k in fields:
            v = obj.get(k)
            values[k].append(None if v is None else (v if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)))
        raws.append(s[:2000])
        rows.append(ln)
    cols = {k: pa.array(v, pa.string()) for k, v in values.items()}
    cols["__raw"] = pa.array(raws, pa.string())
    return RawChunk(pa.table(cols), np.asarray(rows, dtype=np.int64), rejects, bytes_done=done)

