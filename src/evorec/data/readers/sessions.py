"""Session-based e-commerce logs: Diginetica (CIKM Cup 2016) and YOOCHOOSE (RecSys Challenge 2015).

Formats:

- ``diginetica``: ``train-item-views.csv``, ``;``-separated ``sessionId;userId;itemId;timeframe;eventdate``
  (the official camelCase header, SR-GNN's snake_case one, or no header at all). Every row is a
  ``view``. ``userId`` is mostly ``NA`` (anonymous sessions): such a session is its own user,
  with ``user_id = "s" + sessionId`` (the prefix keeps session users apart from real user ids;
  a logged-in user's sessions are merged under their ``userId``). ``ts`` = ``eventdate``
  (midnight UTC) + ``timeframe`` milliseconds (the time since the session started, per the
  CIKM Cup description), floored to seconds. Item categories come from
  ``product-categories.csv`` (``itemId;categoryId``) beside the file or
  ``--option categories=FILE`` (``none`` skips it).
- ``yoochoose``: the variant is detected from the first line:
  (a) the official ``yoochoose-clicks.dat`` (``session,timestamp,item,category``, no header,
  ISO 8601 UTC timestamps; behaviour ``click``; category ``0`` = unknown -> null, ``S`` = special
  offer kept as ``S``, 1..12 real categories, 8-10 digit numbers brand ids, kept as they are);
  (b) the official ``yoochoose-buys.dat`` (``session,timestamp,item,price,quantity``; behaviour
  ``buy``, value = price; quantity is not kept);
  (c) session-rec's prepared TSV ``SessionId<TAB>ItemId<TAB>Time`` (float unix seconds; ``click``).
  Sessions are the users: ``user_id`` = the session id (clicks and buys of one session share it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from evorec.data.readers import register
from evorec.data.readers.base import (
    DelimitedReader,
    FormatMismatch,
    RawChunk,
    first_lines,
    int_seconds,
    nullif_empty,
    q,
    show,
)
from evorec.data.readers.layouts import INT, NUM, Recognition, Role, Sample, header_recognition, headerless_fit
from evorec.data.readers.movielens import read_csv_strings, read_text, side_file
from evorec.types import ITEM_SCHEMA

log = logging.getLogger(__name__)


def _norm(name: str) -> str:
    return name.strip().strip('"').lower().replace("_", "").replace(".", "")


DIGINETICA_COLUMNS = ("sessionId", "userId", "itemId", "timeframe", "eventdate")
DIGINETICA_ROLES = tuple(Role(c, (c,)) for c in DIGINETICA_COLUMNS)
DIGINETICA_FIELDS = (INT, f"NA|{INT}|", INT, INT, r"\d{4}-\d\d-\d\d")
ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?"


@register
class Diginetica(DelimitedReader):
    format = "diginetica"
    description = (
        "Diginetica (CIKM Cup 2016) train-item-views.csv: sessionId;userId;itemId;timeframe;eventdate "
        "(NA user -> the session is the user, 's'+sessionId); --option categories=product-categories.csv"
    )
    delimiter = ";"
    quote = False

    def __init__(self, path, options=None):
        super().__init__(path, options)
        self._cols: dict[str, str] | None = None

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if headerless_fit(sample, ";", DIGINETICA_FIELDS):
            return [Recognition(cls.format, "train-item-views.csv without a header", {"sessionId": "field 1"}, specificity=5)]
        r = header_recognition(cls.format, "train-item-views.csv with a header", sample, DIGINETICA_ROLES, (";",))
        return [r] if r is not None else []

    def layout(self) -> str:
        self._detect()
        return "train-item-views.csv " + ("with a header" if self.header else "without a header")

    def _detect(self) -> dict[str, str]:
        """Canonical Diginetica column -> the file's column name; sets header/columns."""
        if self._cols is None:
            lines = first_lines(self.path, 1)
            head = lines[0].decode("utf-8", errors="replace").lstrip("\ufeff") if lines else ""
            fields = head.split(";")
            if len(fields) == len(DIGINETICA_COLUMNS) and fields[0].strip().isdigit():
                self.header = False  # type: ignore[misc]  # a headerless copy (as some preprocessors expect)
                self.columns = DIGINETICA_COLUMNS  # type: ignore[misc]
                self._cols = {c: c for c in DIGINETICA_COLUMNS}
            else:
                by_norm = {_norm(n): n for n in DelimitedReader.field_names(self)}
                self._cols = {c: by_norm.get(_norm(c), c) for c in DIGINETICA_COLUMNS}
        return self._cols

    def field_names(self) -> list[str]:
        self._detect()
        return super().field_names()

    @property
    def required(self):  # type: ignore[override]
        return tuple(self._detect().values())

    def expected_text(self) -> str:
        return "a semicolon-separated header sessionId;userId;itemId;timeframe;eventdate"

    def chunks(self) -> Iterator[RawChunk]:
        known = self._session_users()
        for chunk in super().chunks():
            yield self._resolve_users(chunk, known)

    def _session_users(self) -> pa.Table:
        """session id -> user id, over the sessions that name a user on at least one row."""
        c = self._detect()
        parts = []
        for chunk in super().chunks():
            t = chunk.table
            s = pc.utf8_trim_whitespace(t.column(c["sessionId"]))
            u = pc.utf8_trim_whitespace(t.column(c["userId"]))
            ok = pc.and_(pc.invert(pc.is_in(u, pa.array(["", "NA"]))), pc.not_equal(s, ""))
            part = pa.table({"s": s.filter(ok), "u": u.filter(ok)})
            parts.append(part.group_by("s").aggregate([("u", "min")]).rename_columns(["s", "u"]))
        if not parts:
            return pa.table({"s": pa.array([], pa.string()), "u": pa.array([], pa.string())})
        return pa.concat_tables(parts).group_by("s").aggregate([("u", "min")]).rename_columns(["s", "u"])

    def _resolve_users(self, chunk: RawChunk, known: pa.Table) -> RawChunk:
        c = self._detect()
        t = chunk.table
        s = pc.utf8_trim_whitespace(t.column(c["sessionId"]))
        u = pc.utf8_trim_whitespace(t.column(c["userId"]))
        mapped = pc.take(known.column("u"), pc.index_in(s, value_set=known.column("s")))
        anonymous = pc.is_in(u, pa.array(["", "NA"]))
        resolved = pc.if_else(pc.and_(anonymous, pc.is_valid(mapped)), mapped, u)
        chunk.table = t.append_column("__user", resolved)
        return chunk

    def columns_sql(self) -> dict[str, str]:
        c = {k: q(v) for k, v in self._detect().items()}
        user = nullif_empty(q("__user"))
        return {
            "user_id": f"CASE WHEN {user} IS NULL OR {user} = 'NA' THEN 's' || {nullif_empty(c['sessionId'])} ELSE {user} END",
            "item_id": nullif_empty(c["itemId"]),
            "ts": (
                f"CAST(epoch(try_strptime(trim({c['eventdate']}), '%Y-%m-%d')) AS BIGINT) + "
                f"CAST(floor(TRY_CAST(trim({c['timeframe']}) AS DOUBLE) / 1000) AS BIGINT)"
            ),
            "behavior": "'view'",
        }

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        c = {k: q(v) for k, v in self._detect().items()}
        return f"{c['eventdate']} || ' + ' || {c['timeframe']} || ' ms'"

    def categories_file(self) -> Path | None:
        return side_file(self.options, "categories", self.path.with_name("product-categories.csv"))

    def side_files(self) -> list[Path]:
        f = self.categories_file()
        return [f] if f else []

    def items(self) -> Iterator[pa.Table]:
        f = self.categories_file()
        if f is None:
            return
        t = read_csv_strings(read_text(f).encode("utf-8"), ";", False, f)
        cols = {_norm(n): n for n in t.column_names}
        if "itemid" not in cols or "categoryid" not in cols:
            raise FormatMismatch(f, 1, "a semicolon-separated header itemId;categoryId", f"columns {t.column_names}")
        cat = pc.utf8_trim_whitespace(t.column(cols["categoryid"]))
        cat = pc.if_else(pc.is_in(cat, pa.array(["", "NA"])), pa.scalar(None, pa.string()), cat)
        n = t.num_rows
        yield pa.table(
            {
                "item_id": pc.utf8_trim_whitespace(t.column(cols["itemid"])),
                "category_id": cat,
                "category_path": cat,
                "brand": pa.nulls(n, pa.string()),
                "title": pa.nulls(n, pa.string()),
                "price": pa.nulls(n, pa.float64()),
            },
            schema=ITEM_SCHEMA,
        )


YOOCHOOSE_CLICKS = ("session_id", "timestamp", "item_id", "category")
YOOCHOOSE_BUYS = ("session_id", "timestamp", "item_id", "price", "quantity")
SESSIONREC_REQUIRED = ("SessionId", "ItemId", "Time")


def iso_seconds(column_sql: str) -> str:
    """SQL: ISO 8601 text -> BIGINT unix seconds (floored); no offset means UTC, 'Z'/+hh:mm honoured."""
    t = f"trim({column_sql})"
    return (
        f"CAST(floor(CASE WHEN regexp_matches({t}, '(Z|[+-][0-9][0-9]:?[0-9][0-9])$') "
        f"THEN epoch(TRY_CAST({t} AS TIMESTAMPTZ)) ELSE epoch(TRY_CAST({t} AS TIMESTAMP)) END) AS BIGINT)"
    )


@register
class Yoochoose(DelimitedReader):
    format = "yoochoose"
    description = (
        "YOOCHOOSE (RecSys Challenge 2015): yoochoose-clicks.dat (session,timestamp,item,category), "
        "yoochoose-buys.dat (session,timestamp,item,price,quantity) or session-rec TSV SessionId/ItemId/Time"
    )
    quote = False

    def __init__(self, path, options=None):
        super().__init__(path, options)
        self.variant: str | None = None

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if headerless_fit(sample, ",", (INT, ISO_UTC, INT, r"[0-9]+|S")):
            return [Recognition(cls.format, "yoochoose-clicks.dat (no header)", {"session": "field 1"}, specificity=4)]
        if headerless_fit(sample, ",", (INT, ISO_UTC, INT, NUM, INT)):
            return [Recognition(cls.format, "yoochoose-buys.dat (no header)", {"session": "field 1"}, specificity=5)]
        roles = tuple(Role(c, (c,)) for c in SESSIONREC_REQUIRED)
        r = header_recognition(cls.format, "session-rec TSV SessionId/ItemId/Time", sample, roles, ("\t",))
        return [r] if r is not None else []

    def layout(self) -> str:
        return {"sessionrec": "session-rec TSV SessionId/ItemId/Time", "buys": "yoochoose-buys.dat",
                "clicks": "yoochoose-clicks.dat"}[self._detect()]

    def _detect(self) -> str:
        if self.variant is not None:
            return self.variant
        lines = first_lines(self.path, 1)
        head = lines[0].lstrip(b"\xef\xbb\xbf") if lines else b""
        if b"\t" in head and head.split(b"\t", 1)[0].strip().lower() == b"sessionid":
            self.variant, self.header, self.delimiter = "sessionrec", True, "\t"  # type: ignore[misc]
        else:
            n = len(head.split(b",")) if head else 4
            self.header, self.delimiter = False, ","  # type: ignore[misc]
            if n == 5:
                self.variant, self.columns = "buys", YOOCHOOSE_BUYS  # type: ignore[misc]
            elif n == 4 or not head:
                self.variant, self.columns = "clicks", YOOCHOOSE_CLICKS  # type: ignore[misc]
            else:
                raise FormatMismatch(
                    self.path, 1,
                    "YOOCHOOSE clicks (session,timestamp,item,category), buys (session,timestamp,item,price,quantity) "
                    "or a session-rec header SessionId<TAB>ItemId<TAB>Time",
                    f"{n} comma-separated field(s): {show(head)}",
                )
        return self.variant

    def field_names(self) -> list[str]:
        self._detect()
        return super().field_names()

    @property
    def required(self):  # type: ignore[override]
        return SESSIONREC_REQUIRED

    def expected_text(self) -> str:
        v = self._detect()
        if v == "sessionrec":
            return "a tab-separated header SessionId, ItemId, Time (session-rec)"
        if v == "buys":
            return "5 comma-separated fields (session,timestamp,item,price,quantity): yoochoose-buys.dat"
        return "4 comma-separated fields (session,timestamp,item,category): yoochoose-clicks.dat"

    def check(self) -> None:
        self._detect()
        super().check()

    def columns_sql(self) -> dict[str, str]:
        v = self._detect()
        if v == "sessionrec":
            return {
                "user_id": nullif_empty(q("SessionId")),
                "item_id": nullif_empty(q("ItemId")),
                "ts": int_seconds(q("Time")),
                "behavior": "'click'",
            }
        cols = {
            "user_id": nullif_empty("session_id"),
            "item_id": nullif_empty("item_id"),
            "ts": iso_seconds('"timestamp"'),
        }
        if v == "buys":
            cols["behavior"] = "'buy'"
            cols["value"] = f"TRY_CAST({nullif_empty('price')} AS DOUBLE)"
        else:
            cols["behavior"] = "'click'"
            cols["category_id"] = "CASE WHEN trim(category) IN ('', '0') THEN NULL ELSE trim(category) END"
        return cols

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        return q("Time") if self._detect() == "sessionrec" else '"timestamp"'

    @property
    def value_raw_sql(self) -> str:  # type: ignore[override]
        return "price" if self._detect() == "buys" else "NULL"
