"""Sniff a file: which known format and layout it is in, or how to read it with ``--map``.

Only a bounded prefix is read (``PREFIX_BYTES`` of the uncompressed text, or the first batch of
a Parquet file), so the answer comes in well under a second whatever the file's size. The
dialect (delimiter, quoting, header or not) and column types come from DuckDB's CSV sniffer
(``sniff_csv``); what is written here is only the mapping from what was found to evorec's
formats: every reader's ``recognise`` (``evorec.data.readers.layouts``) is asked, and for a
file no reader recognises a ``--map`` / ``--option ts_format=`` is proposed from the column
names and sample values, with the evidence for each choice.

``evorec data ingest FILE`` without ``--format`` proceeds only on a *certain* answer: exactly
one format's layout recognised completely, needing no option the user has not given.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from evorec.data.readers import REGISTRY, _load_builtin
from evorec.data.readers.amazon import parse_object_line
from evorec.data.readers.base import FormatMismatch, open_binary
from evorec.data.readers.layouts import NUM, Recognition, Sample, norm_name
from evorec.errors import InputError, MissingPathError
from evorec.utils.timeutil import utc_iso

PREFIX_BYTES = 1 << 20  # text read from the start of the (uncompressed) file
SAMPLE_ROWS = 200  # rows of it looked at
SHOW_ROWS = 5  # rows shown back to the user
MAX_COLUMNS = 500  # more fields than this: not an event table
GENERIC_FORMATS = ("csv", "jsonl", "parquet")  # the --map formats: they lose ties to a dataset's own layout


class SniffError(InputError):
    """The file cannot be read as events at all (empty, binary, only a header). One line."""


@dataclass
class Evidence:
    """Why a column was chosen for a canonical field."""

    field: str  # canonical field (user_id, ts, ...) or option (ts_format, behavior_map)
    column: str
    samples: list[str]
    why: str


@dataclass
class Proposal:
    """How to read a file no reader recognised: a generic format with ``--map`` and options."""

    format: str
    mapping: dict[str, str]
    options: dict[str, str]
    evidence: list[Evidence]
    unresolved: list[str]  # required fields no column was found for


@dataclass
class SniffResult:
    path: str
    kind: str  # delimited | jsonl | parquet
    delimiter: str | None
    has_header: bool
    columns: list[str]
    first_rows: list[list[str | None]]
    recognised: Recognition | None  # the one layout recognised, when certain
    candidates: list[Recognition]  # every complete recognition (more than one format: ambiguous)
    closest: list[Recognition]  # the nearest partial ones (for messages)
    ambiguous: list[str]  # formats tied for the best complete match
    proposal: Proposal | None
    needs: list[str] = field(default_factory=list)  # options the recognised layout needs
    seconds: float = 0.0

    @property
    def certain(self) -> bool:
        return self.recognised is not None and not self.ambiguous and not self.needs

    def command(self, store: str = "evorec.duckdb") -> str:
        """The exact ``evorec data ingest`` command that reads this file."""
        base = f"evorec data ingest {_shell(self.path)}"
        if self.recognised is not None and not self.ambiguous:
            opts = "".join(f" --option {k}={_shell(v)}" for k, v in self.recognised.options.items())
            opts += "".join(f" --option {k}=..." for k in self.needs)
            fmt = f" --format {self.recognised.format}" if self.needs or self.recognised.options else ""
            return f"{base}{fmt}{opts} --store {store}"
        if self.ambiguous:
            return f"{base} --format {'|'.join(self.ambiguous)} --store {store}"
        if self.proposal is not None:
            p = self.proposal
            mapping = ",".join([*(f"{k}={v}" for k, v in p.mapping.items()), *(f"{k}=COLUMN" for k in p.unresolved)])
            opts = "".join(f" --option {k}={_shell(v)}" for k, v in p.options.items())
            return f"{base} --format {p.format} --map {_shell(mapping)}{opts} --store {store}"
        return ""

    def summary(self) -> str:
        """One line: what the file is, or why it is not certain."""
        if self.certain:
            r = self.recognised
            assert r is not None
            return f"{self.path}: format {r.format!r}, layout {r.layout}"
        if self.ambiguous:
            return (
                f"{self.path}: the header fits formats {' and '.join(repr(f) for f in self.ambiguous)} equally; "
                "name one with --format"
            )
        if self.recognised is not None and self.needs:
            return (
                f"{self.path}: format {self.recognised.format!r}, layout {self.recognised.layout}, "
                f"needs --option {', --option '.join(n + '=...' for n in self.needs)}"
            )
        if not self.has_header and self.kind == "delimited":
            return f"{self.path}: no header and no known layout fits the first rows"
        close = "; closest: " + ", ".join(c.format for c in self.closest[:3])
        return f"{self.path}: no known layout" + (close if self.closest else "")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["certain"] = self.certain
        d["command"] = self.command()
        d["summary"] = self.summary()
        return d


def _shell(s: str) -> str:
    return s if re.fullmatch(r"[A-Za-z0-9_./=,:%+-]+", s) else "'" + s.replace("'", "'\\''") + "'"


# ---------------------------------------------------------------------------------------
# Reading the prefix


def _prefix(path: Path) -> bytes:
    with open_binary(path) as f:
        return f.read(PREFIX_BYTES)


def _is_binary(data: bytes) -> bool:
    head = data[:8192]
    if b"\x00" in head:
        return True
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 13))
    return control > 0.05 * max(len(head), 1)


def _lines(data: bytes, truncated: bool) -> list[str]:
    if truncated:  # the prefix ends mid-line: drop the partial last line
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut > 0 else data
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    return [ln.rstrip("\r") for ln in text.split("\n")][: SAMPLE_ROWS + 1]


def read_sample(path: str | Path) -> Sample:
    """The first rows of ``path`` as a :class:`Sample`; :class:`SniffError` for unusable files."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"source file not found: {path}")
    if path.is_dir():
        raise SniffError(f"{path}: a directory, not a file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        return _parquet_sample(path)
    try:
        data = _prefix(path)
    except (OSError, EOFError, FormatMismatch) as exc:  # a damaged .gz / .zip
        raise SniffError(f"{path}: cannot read it ({exc})") from None
    if not data.strip():
        raise SniffError(f"{path}: empty file, nothing to read")
    if _is_binary(data):
        raise SniffError(f"{path}: binary data, not text (first bytes {data[:16]!r}); expected CSV/TSV, JSON lines or Parquet")
    lines = [ln for ln in _lines(data, len(data) >= PREFIX_BYTES) if ln.strip()]
    if lines[0].lstrip().startswith("{"):
        return _jsonl_sample(path, lines)
    return _delimited_sample(path, lines)


def _parquet_sample(path: Path) -> Sample:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        batch = next(pf.iter_batches(batch_size=SAMPLE_ROWS), None)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise SniffError(f"{path}: not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    if batch is None or batch.num_rows == 0:
        raise SniffError(f"{path}: a Parquet file with columns {names[:16]} and no rows")
    cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
    rows = [[None if v is None else str(v) for v in r] for r in zip(*cols)]
    types = {f.name: str(f.type) for f in pf.schema_arrow}
    return Sample(path, "parquet", header=names, rows=rows, types=types)


def _jsonl_sample(path: Path, lines: list[str]) -> Sample:
    records, keys = [], {}
    for ln in lines[:SAMPLE_ROWS]:
        _, obj, _ = parse_object_line(ln.encode("utf-8"))
        if obj is not None:
            records.append(obj)
            keys.update(dict.fromkeys(obj))
    if not records:
        raise SniffError(f"{path}: starts like JSON but no line is a JSON object, e.g. {lines[0][:120]!r}")
    if len(keys) > MAX_COLUMNS:
        raise SniffError(
            f"{path}: a JSON object with {len(keys):,} keys ({', '.join(list(keys)[:5])}, ...), not one event per "
            "line (a side file, e.g. S3-Rec's item attributes: its reader finds it beside the event file)"
        )
    header = list(keys)
    rows = [[None if o.get(k) is None else str(o.get(k)) for k in header] for o in records]
    return Sample(path, "jsonl", header=header, rows=rows, lines=lines[:SHOW_ROWS], records=records)


def _split_ws(line: str) -> list[str]:
    return line.split()


def _delimited_sample(path: Path, lines: list[str]) -> Sample:
    # '::' (MovieLens .dat) is beyond the sniffer's one-character delimiters.
    if all(ln.count("::") >= 2 for ln in lines[:20]):
        rows = [ln.split("::") for ln in lines[:SAMPLE_ROWS]]
        return Sample(path, "delimited", "::", header=None, rows=rows, lines=lines[:SHOW_ROWS])
    if len(lines) == 1 and not all(_looks_numeric(v) for v in re.split(r"[,;\t|]", lines[0])[:1]):
        raise SniffError(f"{path}: only one line ({lines[0][:120]!r}): a header without rows?")
    with tempfile.TemporaryDirectory(prefix="evorec-sniff-") as tmp:
        sample_file = Path(tmp) / "prefix.csv"
        sample_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        con = duckdb.connect()
        try:
            con.execute("SET enable_progress_bar = false")
            sniffed = con.execute(
                "SELECT Delimiter, Quote, HasHeader, Columns, DateFormat, TimestampFormat FROM sniff_csv(?, sample_size = ?)",
                [str(sample_file), SAMPLE_ROWS + 1],
            ).fetchall()[0]
            delim, quote, has_header, columns, date_fmt, ts_fmt = sniffed
            if len(columns) == 1 and re.search(r"\S\s+\S", lines[0]):
                # One column of space-separated tokens (S3-Rec / SASRec text files).
                rows = [_split_ws(ln) for ln in lines[:SAMPLE_ROWS]]
                header = None if _looks_numeric(rows[0][0]) else rows.pop(0)
                return Sample(path, "delimited", " ", header=header, rows=rows, lines=lines[:SHOW_ROWS])
            quote_sql = "''" if quote in ("(empty)", "", None) else "'" + quote.replace("'", "''") + "'"
            rel = con.execute(
                f"SELECT * FROM read_csv(?, delim = ?, header = ?, quote = {quote_sql}, all_varchar = true, "
                "null_padding = true, ignore_errors = true, auto_detect = false, "
                f"columns = {{{', '.join(repr(c['name']) + ': ' + repr('VARCHAR') for c in columns)}}}, "
                f"skip = {1 if has_header else 0})",
                [str(sample_file), delim, False],
            )
            rows = [list(r) for r in rel.fetchall()]
        except duckdb.Error as exc:
            raise SniffError(f"{path}: not readable as delimited text ({str(exc).splitlines()[0]})") from None
        finally:
            con.close()
    names = [c["name"] for c in columns]
    types = {c["name"]: c["type"] for c in columns}
    formats = {k: v for k, v in (("date", date_fmt), ("timestamp", ts_fmt)) if v}
    if has_header and not rows:
        raise SniffError(f"{path}: only a header ({', '.join(names[:16])}), no rows")
    return Sample(
        path, "delimited", delim, header=names if has_header else None, rows=rows, lines=lines[:SHOW_ROWS],
        types=types, formats=formats,
    )


def _looks_numeric(v: str) -> bool:
    return re.fullmatch(NUM, v.strip()) is not None


# ---------------------------------------------------------------------------------------
# Matching


def recognise_all(sample: Sample) -> list[Recognition]:
    _load_builtin()
    out: list[Recognition] = []
    for cls in REGISTRY.values():
        out.extend(cls.recognise(sample))
    return out


def _rank(r: Recognition) -> tuple[int, int]:
    return (0 if r.format in GENERIC_FORMATS else 1, r.specificity)


def sniff(path: str | Path, options: dict[str, str] | None = None) -> SniffResult:
    """What ``path`` is: a recognised format and layout, or a proposed ``--map``, with evidence."""
    t0 = time.perf_counter()
    sample = read_sample(path)
    found = recognise_all(sample)
    complete = sorted((r for r in found if r.complete), key=_rank, reverse=True)
    partial = sorted((r for r in found if not r.complete and r.format not in GENERIC_FORMATS),
                     key=lambda r: (r.share, r.specificity), reverse=True)
    recognised, ambiguous = None, []
    if complete:
        best = _rank(complete[0])
        tied = sorted({r.format for r in complete if _rank(r) == best})
        if len(tied) > 1:
            ambiguous = tied
        recognised = complete[0]
    given = options or {}
    needs = [k for k in recognised.needs if not given.get(k)] if recognised is not None else []
    proposal = None
    if recognised is None and sample.header is not None:
        proposal = propose(sample)
    columns = sample.header or [f"column{i}" for i in range(len(sample.rows[0]) if sample.rows else 0)]
    return SniffResult(
        str(path), sample.kind, sample.delimiter, sample.header is not None, columns,
        sample.rows[:SHOW_ROWS], recognised, complete, partial[:3], ambiguous, proposal, needs,
        round(time.perf_counter() - t0, 4),
    )


# ---------------------------------------------------------------------------------------
# Proposals for files no reader knows: --map by column name and sample values.

NAME_HINTS = {
    "user_id": ("user", "customer", "visitor", "member", "client", "household", "buyer", "reviewer", "session", "uid"),
    "item_id": ("item", "product", "sku", "asin", "article", "movie", "offer", "goods", "iid", "pid"),
    "ts": ("timestamp", "time", "date", "ts", "created", "when", "datetime"),
    "behavior": ("behavior", "behaviour", "event", "action", "type", "activity"),
    "category_id": ("category", "categ", "cat", "genre", "department"),
    "value": ("rating", "price", "amount", "value", "score", "revenue", "quantity", "qty"),
    "basket_id": ("basket", "order", "transaction", "invoice", "receipt", "cart_id"),
}
BEHAVIOR_WORDS = {
    "view": ("view", "pv", "pageview", "page_view", "detail", "impression", "visit"),
    "click": ("click", "clicks"),
    "cart": ("cart", "addtocart", "add_to_cart", "basket", "add"),
    "fav": ("fav", "favorite", "favourite", "wishlist", "like", "collect", "save"),
    "buy": ("buy", "purchase", "order", "transaction", "checkout", "sale", "bought"),
    "rate": ("rate", "rating"),
    "review": ("review",),
}
STRPTIME_CANDIDATES = (
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M", "%Y-%m-%d %H", "%Y-%m-%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d",
    "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y",
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y", "%Y%m%d%H%M%S", "%Y%m%d",
)


def _ts_format(values: list[str], detected: str | None) -> tuple[str, str] | None:
    """(ts_format option, why) for a column's sample values, or None if no format fits them all."""
    vals = [v.strip() for v in values if v and v.strip()]
    if not vals:
        return None
    if all(re.fullmatch(r"[0-9]{12,13}(\.[0-9]*)?", v) for v in vals):
        return "unix_ms", f"13-digit numbers: milliseconds since 1970 ({_date(float(vals[0]) / 1000)} ...)"
    if all(re.fullmatch(r"[0-9]{9,10}(\.[0-9]*)?", v) for v in vals):
        return "unix", f"10-digit numbers: seconds since 1970 ({_date(float(vals[0]))} ...)"
    if all(re.fullmatch(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)", v) for v in vals):
        return "iso", "ISO 8601 date-times with a time zone"
    fits = [detected] if detected else []
    fits += [f for f in STRPTIME_CANDIDATES if f != detected]
    for fmt in fits:
        try:
            for v in vals:
                datetime.strptime(v, fmt)
        except ValueError:
            continue
        why = "DuckDB's sniffer detected this format" if fmt == detected else "every sample value parses with it"
        return fmt, why
    return None


def _date(secs: float) -> str:
    try:
        return utc_iso(secs, "date")
    except (OverflowError, OSError, ValueError):
        return "?"


def _name_score(name: str, hints: tuple[str, ...]) -> int:
    n = norm_name(name)
    best = 0
    for i, h in enumerate(hints):
        h = norm_name(h)
        if n == h or n in (h + "id", h + "ids"):
            best = max(best, 100 - i)
        elif n.startswith(h) or n.endswith(h):
            best = max(best, 50 - i)
        elif len(h) > 3 and h in n:
            best = max(best, 20 - i)
    return best


def propose(sample: Sample) -> Proposal:
    """A ``--map`` (and options) for a file with named columns that no reader recognises."""
    assert sample.header is not None
    fmt = {"delimited": "csv", "jsonl": "jsonl", "parquet": "parquet"}[sample.kind]
    header = list(sample.header)
    used: set[str] = set()
    mapping: dict[str, str] = {}
    evidence: list[Evidence] = []
    options: dict[str, str] = {}
    # Time first: its values say the most (a column all of whose values are times).
    ts_choice = None
    by_score = sorted(header[:MAX_COLUMNS], key=lambda c: -_name_score(c, NAME_HINTS["ts"]))
    for col in by_score:
        vals = sample.column_values(col)
        detected = sample.formats.get("timestamp") if "TIMESTAMP" in sample.types.get(col, "") else None
        detected = detected or (sample.formats.get("date") if sample.types.get(col) == "DATE" else None)
        got = _ts_format(vals, detected)
        if got is not None and (_name_score(col, NAME_HINTS["ts"]) > 0 or got[0] not in ("unix", "unix_ms")):
            ts_choice = (col, got, vals)
            break
    if ts_choice is not None:
        col, (tsf, why), vals = ts_choice
        mapping["ts"] = col
        used.add(col)
        if sample.kind == "parquet" and "timestamp" in sample.types.get(col, ""):
            why = "a Parquet timestamp column (read as it is)"
        elif tsf != "unix":
            options["ts_format"] = tsf
        evidence.append(Evidence("ts", col, vals[:3], why))
    for fld in ("user_id", "item_id", "behavior", "category_id", "value", "basket_id"):
        scored = sorted(((c, _name_score(c, NAME_HINTS[fld])) for c in header if c not in used), key=lambda cs: -cs[1])
        if not scored or scored[0][1] <= 0:
            continue
        col = scored[0][0]
        vals = sample.column_values(col)
        mapping[fld] = col
        used.add(col)
        evidence.append(Evidence(fld, col, vals[:3], f"column name {col!r}"))
    if "behavior" in mapping:
        codes = sorted({v.strip() for v in sample.column_values(mapping["behavior"])})
        from evorec.types import BEHAVIORS

        unknown = [c for c in codes if c not in BEHAVIORS]
        if len(codes) > 20:  # not a behaviour code column after all
            evidence = [e for e in evidence if e.field != "behavior"]
            mapping.pop("behavior")
        elif unknown:
            pairs = []
            for c in unknown:
                name = next((b for b, words in BEHAVIOR_WORDS.items() if norm_name(c) in {norm_name(w) for w in words}), None)
                if name is not None:
                    pairs.append(f"{c}:{name}")
            if pairs:
                options["behavior_map"] = ";".join(pairs)
                evidence.append(Evidence("behavior_map", mapping["behavior"], codes[:8],
                                         "codes matched to evorec's behaviours by name" +
                                         ("" if len(pairs) == len(unknown) else
                                          f"; not matched (map them yourself): {[c for c in unknown if not any(p.startswith(c + ':') for p in pairs)]}")))
    if fmt == "csv" and sample.delimiter != ",":
        options["delimiter"] = {"\t": "tab", ";": ";", "|": "|", " ": "space"}.get(sample.delimiter or ",", sample.delimiter or ",")
    unresolved = [f for f in ("user_id", "item_id", "ts") if f not in mapping]
    order = ("user_id", "item_id", "ts", "behavior", "category_id", "value", "basket_id")
    mapping = {k: mapping[k] for k in order if k in mapping}
    return Proposal(fmt, mapping, options, evidence, unresolved)



# ---------------------------------------------------------------------------------------
# Messages


def describe(result: SniffResult) -> list[str]:
    """The evidence lines shared by ``sniff`` output and ingest refusals."""
    lines = []
    if result.has_header:
        lines.append(f"columns found: {', '.join(result.columns[:24])}{' ...' if len(result.columns) > 24 else ''}")
    else:
        lines.append("first rows (no header):")
        lines.extend(f"  {' | '.join('' if v is None else str(v) for v in row)}" for row in result.first_rows)
    if result.ambiguous:
        lines.append("fits equally: " + "; ".join(f"{c.format} ({c.layout})" for c in result.candidates if c.format in result.ambiguous))
    for c in result.closest[:3]:
        if result.recognised is None:
            lines.append(f"closest layout: {c.format} ({c.layout}): found {list(c.found.values())}, missing {list(c.missing)}")
    if result.recognised is not None:
        for note in result.recognised.notes:
            lines.append(f"note: {note}")
    p = result.proposal
    if p is not None:
        for e in p.evidence:
            lines.append(f"  {e.field} <- {e.column!r}: {e.why}; e.g. {e.samples[:3]}")
        if p.unresolved:
            lines.append(f"no column found for {p.unresolved}: name it in --map")
    cmd = result.command()
    if cmd:
        lines.append(f"to read it: {cmd}")
    return lines


def refusal(result: SniffResult) -> str:
    """Why ``ingest`` without ``--format`` stops, and what would read the file."""
    return "\n".join([f"not ingested: {result.summary()}", *describe(result)])


def mismatch_hint(path: str | Path) -> str:
    """For a file refused by the format it was given: what the sniffer makes of it (or "")."""
    try:
        result = sniff(path)
    except (SniffError, OSError, ValueError):
        return ""
    head = f"the sniffer: {result.summary()}"
    return "\n".join([head, *describe(result)])
