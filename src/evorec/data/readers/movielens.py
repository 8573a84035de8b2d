"""MovieLens (GroupLens) in its official layouts, and RecBole's atomic files.

Every rating is one ``rate`` event whose ``value`` is the rating. Movie genres become the item
category: ``category_id`` = the first genre listed, ``category_path`` = all genres joined with
``|`` (MovieLens lists genres alphabetically, so "first" is a stable, documented choice, not a
judgement of the main genre). "(no genres listed)" and ML-100K's "unknown" give a null category.

Formats:

- ``movielens-dat``: ML-1M / ML-10M ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) with
  ``movies.dat`` (``MovieID::Title::Genres``) beside it or from ``--option movies=FILE``; user
  profiles from ``users.dat`` beside it (``--option users=FILE``) to the ``users`` table.
  ML-1M's ``movies.dat`` is Latin-1, ML-10M's UTF-8: the encoding is detected
  (``--option encoding=`` forces one).
- ``movielens-100k``: ML-100K ``u.data`` (tab: user item rating timestamp; also ``u1.base``...)
  with ``u.item`` (``|``-separated, Latin-1, 19 genre flags) beside it or ``--option items=FILE``.
- ``movielens-csv``: ml-latest / ml-25m ``ratings.csv`` (``userId,movieId,rating,timestamp``)
  with ``movies.csv`` (``movieId,title,genres``) beside it or ``--option movies=FILE``.
- ``recbole``: RecBole atomic files: ``<name>.inter`` (TSV, typed header ``field:type``) with
  ``<name>.item`` beside it or ``--option items=FILE``, user profiles from ``<name>.user``
  (``--option users=FILE``). Field names default to RecBole's
  (``user_id``, ``item_id``, ``rating``, ``timestamp``) and can be changed with
  ``--option user_field=,item_field=,value_field=,time_field=``. A timestamp field is required.
  The item category comes from a ``class`` field or any ``*categor*`` / ``genre*`` field
  (token_seq: tokens separated by ``--option seq_separator=`` (default a space), the first token
  is the category; an empty or ``unknown`` value gives a null category); the title from a ``*title*`` field, ``brand`` and ``price`` if present.
  Events are ``rate`` with the rating as value; without a rating field they get
  ``--option behavior=`` (default ``click``).

Every side file option accepts ``none`` to skip metadata.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from evorec.data.readers import register
from evorec.data.readers.base import (
    DelimitedReader,
    FormatMismatch,
    ReaderOptionError,
    first_lines,
    int_seconds,
    nullif_empty,
    open_binary,
    profiles_table,
    q,
    show,
    sql_str,
)
from evorec.data.readers.layouts import INT, NUM, UNIX_S, Recognition, Role, Sample, header_recognition, headerless_fit, resolve
from evorec.types import BEHAVIORS, ITEM_SCHEMA

log = logging.getLogger(__name__)

NO_GENRE = {"", "(no genres listed)", "unknown"}

# ML-100K u.item genre flags, in file order (as listed in u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)


# ---------------------------------------------------------------------------------------
# Helpers shared by the readers with side files (also used by seqtext and sessions).


def side_file(options: dict[str, str], key: str, default: Path | None) -> Path | None:
    """The side file named by ``--option key=FILE``, else ``default`` if it exists; ``none`` skips."""
    value = options.get(key)
    if value is not None:
        if value.strip().lower() in ("", "none", "no", "false"):
            return None
        path = Path(value)
        if not path.exists():
            raise ReaderOptionError(f"--option {key}={value}: file not found")
        return path
    if default is not None and default.exists():
        return default
    return None


def plain_name(path: Path) -> str:
    """File name without a compression suffix."""
    name = path.name
    for suffix in (".gz", ".zip"):
        name = name.removesuffix(suffix)
    return name


def read_text(path: Path, encoding: str | None = None) -> str:
    """A whole (small) side file as text: UTF-8 if it decodes, else Latin-1, unless ``encoding``."""
    with open_binary(path) as f:
        data = f.read()
    if encoding:
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError) as exc:
            raise ReaderOptionError(f"{path}: cannot decode as {encoding!r} ({exc})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # ML-1M and ML-100K metadata are Latin-1


def items_table(ids, cats, paths, titles=None, brands=None, prices=None) -> pa.Table:
    n = len(ids)

    def col(v, t):
        return pa.array(v, t) if v is not None else pa.nulls(n, t)

    return pa.table(
        {
            "item_id": col(ids, pa.string()),
            "category_id": col(cats, pa.string()),
            "category_path": col(paths, pa.string()),
            "brand": col(brands, pa.string()),
            "title": col(titles, pa.string()),
            "price": col(prices, pa.float64()),
        },
        schema=ITEM_SCHEMA,
    )


def genres_to_category(genres: list[str]) -> tuple[str | None, str | None]:
    gs = [g.strip() for g in genres if g.strip() not in NO_GENRE]
    return (gs[0], "|".join(gs)) if gs else (None, None)


RATING_FIELDS = (INT, INT, NUM, UNIX_S)  # user item rating timestamp, the headerless ratings files
RATING_SQL = {
    "behavior": "'rate'",
    "value": "TRY_CAST(NULLIF(trim(rating), '') AS DOUBLE)",
    "ts": int_seconds("timestamp"),
    "reason": "CASE WHEN NULLIF(trim(rating), '') IS NULL THEN 'missing rating' END",
}


def no_header(path: Path, first_field: bytes, expected: str, line: bytes) -> None:
    """Headerless MovieLens files start with an integer user id; a header means another format."""
    if not first_field.strip().isdigit():
        raise FormatMismatch(path, 1, f"{expected}, no header", f"a non-numeric user id (a header?): {show(line)}")


# ---------------------------------------------------------------------------------------
# ML-1M / ML-10M: '::'-separated .dat files.


class DoubleColonReader(DelimitedReader):
    """A headerless ``::``-separated file. pyarrow splits on one byte only, so each block's
    ``::`` become the unit separator byte (0x1F, absent from these files) before parsing."""

    delimiter = "\x1f"
    header = False
    quote = False

    def _blocks(self):
        for block, first_line, done in super()._blocks():
            yield block.replace(b"::", b"\x1f"), first_line, done

    def expected_text(self) -> str:
        return f"{len(self.columns)} '::'-separated fields ({'::'.join(self.columns)})"

    def check(self) -> None:
        lines = first_lines(self.path, 1)
        if not lines:
            return
        n = len(lines[0].split(b"::"))
        if n != len(self.columns):
            raise FormatMismatch(self.path, 1, self.expected_text(), f"{n} field(s): {show(lines[0])}")
        no_header(self.path, lines[0].split(b"::")[0], self.expected_text(), lines[0])

    def raw_sql(self) -> str:
        return f"concat_ws('::', {', '.join(q(n) for n in self.columns)})"

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if headerless_fit(sample, "::", RATING_FIELDS):
            return [Recognition(cls.format, "ratings.dat (ML-1M/10M)", {"user": "field 1"}, specificity=4)]
        return []


@register
class MovieLensDat(DoubleColonReader):
    format = "movielens-dat"
    description = (
        "MovieLens ML-1M/10M ratings.dat (UserID::MovieID::Rating::Timestamp) + movies.dat beside it "
        "(or --option movies=FILE; encoding=) + users.dat -> users table (or --option users=FILE)"
    )
    columns = ("user_id", "item_id", "rating", "timestamp")
    sql = {"user_id": nullif_empty("user_id"), "item_id": nullif_empty("item_id"), **RATING_SQL}
    ts_raw_sql = "timestamp"
    value_raw_sql = "rating"

    def movies_file(self) -> Path | None:
        return side_file(self.options, "movies", self.path.with_name("movies.dat"))

    def users_file(self) -> Path | None:
        """``users.dat`` (UserID::Gender::Age::Occupation::Zip-code) beside it, or ``--option users=FILE``."""
        return side_file(self.options, "users", self.path.with_name("users.dat"))

    def side_files(self) -> list[Path]:
        return [f for f in (self.movies_file(), self.users_file()) if f]

    def profiles(self) -> Iterator[pa.Table]:
        """users.dat: the age group code (1, 18, 25, ...) is the age range, the zip code the region
        (the occupation code has no column in the users table)."""
        f = self.users_file()
        if f is None:
            return
        ids, genders, ages, zips = [], [], [], []
        for n, line in enumerate(read_text(f, self.options.get("encoding")).splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("::")
            if len(parts) != 5:
                raise FormatMismatch(f, n, "UserID::Gender::Age::Occupation::Zip-code lines", show(line.encode()))
            ids.append(parts[0])
            genders.append(parts[1])
            ages.append(parts[2])
            zips.append(parts[4])
        yield profiles_table(ids, age_range=ages, gender=genders, region=zips)

    def items(self) -> Iterator[pa.Table]:
        f = self.movies_file()
        if f is None:
            return
        ids, cats, paths, titles = [], [], [], []
        bad = 0
        for n, line in enumerate(read_text(f, self.options.get("encoding")).splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("::")
            if len(parts) < 3:
                if not ids:
                    raise FormatMismatch(f, n, "MovieID::Title::Genres lines", show(line.encode()))
                bad += 1
                continue
            cat, path = genres_to_category(parts[-1].split("|"))
            ids.append(parts[0].strip())
            titles.append("::".join(parts[1:-1]))
            cats.append(cat)
            paths.append(path)
        if bad:
            log.warning("%s: %d malformed movie line(s) skipped", f, bad)
        yield items_table(ids, cats, paths, titles)


# ---------------------------------------------------------------------------------------
# ML-100K: u.data + u.item.


@register
class MovieLens100K(DelimitedReader):
    format = "movielens-100k"
    description = "MovieLens ML-100K u.data (tab: user item rating timestamp) + u.item beside it (or --option items=FILE)"
    delimiter = "\t"
    header = False
    quote = False
    columns = ("user_id", "item_id", "rating", "timestamp")
    sql = {"user_id": nullif_empty("user_id"), "item_id": nullif_empty("item_id"), **RATING_SQL}
    ts_raw_sql = "timestamp"
    value_raw_sql = "rating"

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if headerless_fit(sample, "\t", RATING_FIELDS):
            return [Recognition(cls.format, "u.data (ML-100K, tab, no header)", {"user": "field 1"}, specificity=4)]
        return []

    def check(self) -> None:
        super().check()
        lines = first_lines(self.path, 1)
        if lines:
            no_header(self.path, lines[0].split(b"\t")[0], self.expected_text(), lines[0])

    def items_file(self) -> Path | None:
        return side_file(self.options, "items", self.path.with_name("u.item"))

    def side_files(self) -> list[Path]:
        f = self.items_file()
        return [f] if f else []

    def items(self) -> Iterator[pa.Table]:
        f = self.items_file()
        if f is None:
            return
        ids, cats, paths, titles = [], [], [], []
        bad = 0
        n_flags = len(ML100K_GENRES)
        for n, line in enumerate(read_text(f, self.options.get("encoding")).splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("|")
            if len(parts) < 5 + n_flags:
                if not ids:
                    raise FormatMismatch(
                        f, n, f"u.item lines: id|title|release date|video release date|URL|{n_flags} genre flags",
                        f"{len(parts)} field(s): {show(line.encode())}",
                    )
                bad += 1
                continue
            flags = parts[-n_flags:]
            cat, path = genres_to_category([g for g, v in zip(ML100K_GENRES, flags) if v.strip() == "1"])
            ids.append(parts[0].strip())
            titles.append("|".join(parts[1 : len(parts) - n_flags - 3]))
            cats.append(cat)
            paths.append(path)
        if bad:
            log.warning("%s: %d malformed item line(s) skipped", f, bad)
        yield items_table(ids, cats, paths, titles)


# ---------------------------------------------------------------------------------------
# ml-latest / ml-20m / ml-25m: ratings.csv + movies.csv.


def read_csv_strings(data: bytes, delimiter: str, quote: str | bool, path: Path) -> pa.Table:
    """A small delimited side file with a header, every column as text; bad rows are skipped."""
    skipped = []

    def on_invalid(row) -> str:
        skipped.append(row.number)
        return "skip"

    head = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    names = [c.strip().strip('"') for c in head.split(delimiter)]
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=quote, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False),
    )
    if skipped:
        log.warning("%s: %d malformed row(s) skipped", path, len(skipped))
    return table


ML_CSV_ROLES = (
    Role("user", ("userId", "user_id", "user")),
    Role("item", ("movieId", "movie_id", "item_id", "movie", "item")),
    Role("rating", ("rating", "ratings", "score")),
    Role("timestamp", ("timestamp", "ts", "time", "unix_timestamp")),
)


@register
class MovieLensCSV(DelimitedReader):
    """ml-latest / ml-20m / ml-25m ``ratings.csv``: columns by name (``userId`` or ``user_id``,
    ``movieId`` or ``movie_id``..., any order, extra columns ignored), or a copy without a header
    (``user,movie,rating,timestamp`` by position)."""

    format = "movielens-csv"
    description = (
        "MovieLens ml-latest/20m/25m ratings.csv (userId,movieId,rating,timestamp; also user_id/movie_id, any order, "
        "or no header) + movies.csv beside it (or --option movies=FILE)"
    )
    roles = ML_CSV_ROLES
    columns = ("user", "item", "rating", "timestamp")

    def __init__(self, path, options=None):
        super().__init__(path, options)
        head = (self.head_fields(1) or [[]])[0]
        if head and head[0].strip().isdigit() and len(resolve(head, ML_CSV_ROLES)) == 0:
            self.header = False  # type: ignore[misc]  # a copy without a header

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if headerless_fit(sample, ",", RATING_FIELDS):
            return [Recognition(cls.format, "ratings.csv without a header (user,movie,rating,timestamp)",
                                {"user": "field 1"}, specificity=4)]
        r = header_recognition(cls.format, "ratings.csv, columns by name", sample, ML_CSV_ROLES, (",",))
        return [r] if r is not None else []

    def layout(self) -> str:
        if not self.header:
            return "ratings.csv without a header"
        return "ratings.csv (" + ",".join(self.role_columns()[r.name] for r in ML_CSV_ROLES) + ")"

    def columns_sql(self) -> dict[str, str]:
        rating = self.col("rating")
        return {
            "user_id": nullif_empty(self.col("user")),
            "item_id": nullif_empty(self.col("item")),
            "behavior": "'rate'",
            "value": f"TRY_CAST(NULLIF(trim({rating}), '') AS DOUBLE)",
            "ts": int_seconds(self.col("timestamp")),
            "reason": f"CASE WHEN NULLIF(trim({rating}), '') IS NULL THEN 'missing rating' END",
        }

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        return self.col("timestamp")

    @property
    def value_raw_sql(self) -> str:  # type: ignore[override]
        return self.col("rating")

    def movies_file(self) -> Path | None:
        return side_file(self.options, "movies", self.path.with_name("movies.csv"))

    def side_files(self) -> list[Path]:
        f = self.movies_file()
        return [f] if f else []

    def items(self) -> Iterator[pa.Table]:
        f = self.movies_file()
        if f is None:
            return
        t = read_csv_strings(read_text(f, self.options.get("encoding")).encode("utf-8"), ",", '"', f)
        missing = [c for c in ("movieId", "genres") if c not in t.column_names]
        if missing:
            raise FormatMismatch(f, 1, "a header movieId,title,genres", f"columns {t.column_names} (missing {missing})")
        genres = pc.utf8_trim_whitespace(t.column("genres"))
        genres = pc.if_else(pc.is_in(genres, pa.array(sorted(NO_GENRE))), pa.scalar(None, pa.string()), genres)
        split = pc.split_pattern(genres, "|")
        title = t.column("title") if "title" in t.column_names else None
        yield pa.table(
            {
                "item_id": pc.utf8_trim_whitespace(t.column("movieId")),
                "category_id": pc.list_element(split, 0),
                "category_path": genres,
                "brand": pa.nulls(t.num_rows, pa.string()),
                "title": title if title is not None else pa.nulls(t.num_rows, pa.string()),
                "price": pa.nulls(t.num_rows, pa.float64()),
            },
            schema=ITEM_SCHEMA,
        )


# ---------------------------------------------------------------------------------------
# RecBole atomic files.


@register
class RecBoleAtomic(DelimitedReader):
    format = "recbole"
    description = (
        "RecBole atomic files: <name>.inter (TSV, header field:type; user_id, item_id, timestamp required, rating "
        "optional) + <name>.item beside it (or --option items=FILE) + <name>.user -> users table (--option users=)"
    )
    delimiter = "\t"
    quote = False

    def _fields(self) -> dict[str, str]:
        """Base field name (before ``:type``) -> header name as written."""
        return {n.split(":", 1)[0].strip(): n for n in self.field_names()}

    def _field_opts(self) -> dict[str, str]:
        o = self.options
        return {
            "user": o.get("user_field", "user_id"),
            "item": o.get("item_field", "item_id"),
            "time": o.get("time_field", "timestamp"),
            "value": o.get("value_field", "rating"),
        }

    @property
    def required(self):  # type: ignore[override]
        n = self._field_opts()
        return (n["user"], n["item"], n["time"])

    def expected_text(self) -> str:
        return f"a tab-separated RecBole header (field:type) with fields {list(self.required)}"

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if sample.kind != "delimited" or sample.header is None or sample.delimiter != "\t":
            return []
        if not any(":" in n for n in sample.header):
            return []
        base = {n.split(":", 1)[0].strip(): n for n in sample.header}
        found = {f: base[f] for f in ("user_id", "item_id", "timestamp", "rating") if f in base}
        miss = tuple(f for f in ("user_id", "item_id", "timestamp") if f not in found)
        return [Recognition(cls.format, "RecBole atomic .inter (typed header field:type)", found, miss,
                            specificity=len(found) + 1)]

    def check(self) -> None:
        behavior = self.options.get("behavior", "click")
        if behavior not in BEHAVIORS:
            raise ReaderOptionError(f"--option behavior={behavior!r}: known behaviours {list(BEHAVIORS)}")
        fields = self._fields()
        names = self.field_names()
        if len(names) < 2 or not any(":" in n for n in names):
            head = first_lines(self.path, 1)
            raise FormatMismatch(self.path, 1, self.expected_text(), f"header {show(head[0] if head else b'')}")
        n = self._field_opts()
        missing = [f for f in (n["user"], n["item"]) if f not in fields]
        if missing:
            raise FormatMismatch(self.path, 1, self.expected_text(), f"header {names[:12]} (missing {missing})")
        if n["time"] not in fields:
            raise FormatMismatch(
                self.path, 1, self.expected_text(),
                f"header {names[:12]} without a {n['time']!r} field: evorec needs event times and does not invent "
                f"them; name the time field with --option time_field=, or use an order-only format (s3rec, sasrec)",
            )

    def columns_sql(self) -> dict[str, str]:
        f, n = self._fields(), self._field_opts()
        cols = {
            "user_id": nullif_empty(q(f[n["user"]])),
            "item_id": nullif_empty(q(f[n["item"]])),
            "ts": int_seconds(q(f[n["time"]])),
            "behavior": "'rate'" if n["value"] in f else sql_str(self.options.get("behavior", "click")),
        }
        if n["value"] in f:
            cols["value"] = f"TRY_CAST({nullif_empty(q(f[n['value']]))} AS DOUBLE)"
        return cols

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        return q(self._fields()[self._field_opts()["time"]])

    @property
    def value_raw_sql(self) -> str:  # type: ignore[override]
        f, n = self._fields(), self._field_opts()
        return q(f[n["value"]]) if n["value"] in f else "NULL"

    def items_file(self) -> Path | None:
        name = plain_name(self.path)
        stem = name[: -len(".inter")] if name.endswith(".inter") else Path(name).stem
        return side_file(self.options, "items", self.path.with_name(f"{stem}.item"))

    def users_file(self) -> Path | None:
        name = plain_name(self.path)
        stem = name[: -len(".inter")] if name.endswith(".inter") else Path(name).stem
        return side_file(self.options, "users", self.path.with_name(f"{stem}.user"))

    def side_files(self) -> list[Path]:
        return [f for f in (self.items_file(), self.users_file()) if f]

    def profiles(self) -> Iterator[pa.Table]:
        """``<name>.user``: age (or age_range), gender, and the zip code (or region/city) as the region."""
        f = self.users_file()
        if f is None:
            return
        t = read_csv_strings(read_text(f, self.options.get("encoding")).encode("utf-8"), "\t", False, f)
        fields = {c.split(":", 1)[0].strip(): c for c in t.column_names}
        user_field = self._field_opts()["user"]
        if user_field not in fields:
            raise FormatMismatch(f, 1, f"a RecBole .user header with a {user_field!r} field", f"header {t.column_names[:12]}")

        def col(*names: str):
            name = next((fields[n] for n in names if n in fields), None)
            return t.column(name) if name is not None else None

        yield profiles_table(t.column(fields[user_field]), age_range=col("age_range", "age"), gender=col("gender"),
                             region=col("zip_code", "region", "province", "city", "state"))

    def items(self) -> Iterator[pa.Table]:
        f = self.items_file()
        if f is None:
            return
        t = read_csv_strings(read_text(f, self.options.get("encoding")).encode("utf-8"), "\t", False, f)
        fields = {c.split(":", 1)[0].strip(): c for c in t.column_names}
        types = {c.split(":", 1)[0].strip(): (c.split(":", 1)[1] if ":" in c else "token") for c in t.column_names}
        item_field = self._field_opts()["item"]
        if item_field not in fields:
            raise FormatMismatch(f, 1, f"a RecBole .item header with an {item_field!r} field", f"header {t.column_names[:12]}")

        def pick(pred) -> str | None:
            return next((b for b in fields if pred(b.lower())), None)

        cat = pick(lambda b: b == "class") or pick(lambda b: "categor" in b) or pick(lambda b: b.startswith("genre"))
        title = pick(lambda b: "title" in b)
        brand = pick(lambda b: b == "brand")
        price = pick(lambda b: b == "price")
        n = t.num_rows
        cat_id = cat_path = pa.nulls(n, pa.string())
        if cat is not None:
            raw = pc.utf8_trim_whitespace(t.column(fields[cat]))
            raw = pc.if_else(pc.is_in(raw, pa.array(sorted(NO_GENRE))), pa.scalar(None, pa.string()), raw)
            if types[cat] == "token_seq":
                sep = self.options.get("seq_separator", " ")
                parts = pc.split_pattern(raw, sep) if sep != " " else pc.ascii_split_whitespace(raw)
                cat_id = pc.list_element(parts, 0)
                cat_path = pc.binary_join(parts, "|")
            else:
                cat_id = cat_path = raw

        def text(name: str | None):
            if name is None:
                return pa.nulls(n, pa.string())
            c = pc.utf8_trim_whitespace(t.column(fields[name]))
            return pc.if_else(pc.equal(c, ""), pa.scalar(None, pa.string()), c)

        price_col = pa.nulls(n, pa.float64())
        if price is not None:
            price_col = _to_float(text(price))
        yield pa.table(
            {
                "item_id": pc.utf8_trim_whitespace(t.column(fields[item_field])),
                "category_id": cat_id,
                "category_path": cat_path,
                "brand": text(brand),
                "title": text(title),
                "price": price_col,
            },
            schema=ITEM_SCHEMA,
        )


def _to_float(col) -> pa.Array:
    """Text -> float64, unparseable values null."""
    values = []
    for v in col.to_pylist():
        try:
            values.append(float(v) if v is not None else None)
        except ValueError:
            values.append(None)
    return pa.array(values, pa.float64())
