"""Alibaba sources: Taobao UserBehavior, Tianchi mobile 2014, Tianchi 216549, Tmall IJCAI-15."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pyarrow as pa

from evorec.data.readers import register
from evorec.data.readers.base import (
    DelimitedReader,
    ReaderOptionError,
    behavior_case,
    int_seconds,
    nullif_empty,
    q,
    sql_str,
    strptime_seconds,
)
from evorec.types import ITEM_SCHEMA


def _items_from_source(path, select_sql: str, header: bool, delimiter: str = ",") -> Iterator[pa.Table]:
    """Distinct item rows taken from the event file itself (a second, database-side pass)."""
    con = duckdb.connect()
    try:
        src = (
            f"read_csv({sql_str(str(path))}, all_varchar = true, header = {str(header).lower()}, "
            f"delim = {sql_str(delimiter)}, ignore_errors = true, null_padding = false)"
        )
        reader = con.sql(select_sql.format(src=src)).to_arrow_reader(1 << 17)
        for batch in reader:
            yield pa.Table.from_batches([batch]).cast(ITEM_SCHEMA)
    finally:
        con.close()


@register
class TaobaoUserBehavior(DelimitedReader):
    """Taobao UserBehavior.csv (Tianchi 649): ``user,item,category,pv|cart|fav|buy,unix ts``."""

    format = "taobao"
    description = "Taobao UserBehavior.csv (Tianchi 649): user,item,category,pv|cart|fav|buy,unix ts; no header"
    header = False
    columns = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
    sql = {
        "user_id": "user_id",
        "item_id": "item_id",
        "category_id": nullif_empty("category_id"),
        "behavior": behavior_case("behavior_type", {"pv": "view", "cart": "cart", "fav": "fav", "buy": "buy"}),
        "ts": int_seconds("timestamp"),
    }
    ts_raw_sql = "timestamp"


@register
class TianchiMobile2014(DelimitedReader):
    """Tianchi mobile recommendation 2014 user table (+ optional item table via ``--option items=FILE``)."""

    format = "tianchi-mobile"
    description = "Tianchi mobile 2014: user_id,item_id,behavior_type(1..4),user_geohash,item_category,time(YYYY-MM-DD HH)"
    required = ("user_id", "item_id", "behavior_type", "item_category", "time")
    sql = {
        "user_id": "user_id",
        "item_id": "item_id",
        "category_id": nullif_empty("item_category"),
        "behavior": behavior_case("behavior_type", {"1": "view", "2": "fav", "3": "cart", "4": "buy"}),
        "ts": strptime_seconds('"time"', "%Y-%m-%d %H"),
    }
    ts_raw_sql = '"time"'

    def side_files(self):
        from pathlib import Path

        return [Path(self.options["items"])] if "items" in self.options else []

    def items(self) -> Iterator[pa.Table]:
        if "items" not in self.options:
            return iter(())
        sel = (
            "SELECT DISTINCT ON (item_id) item_id, NULLIF(item_category, '') AS category_id, NULL AS category_path, "
            "NULL AS brand, NULL AS title, NULL::DOUBLE AS price FROM {src} WHERE item_id IS NOT NULL"
        )
        return _items_from_source(self.options["items"], sel, header=True)


@register
class Tianchi216549(DelimitedReader):
    """Tianchi dataset 216549 (enriched Taobao behaviour with brand, title, category name, price)."""

    format = "tianchi-216549"
    description = "Tianchi 216549: Chinese header 用户ID,商品ID,品牌,品牌ID,商品名称,商品类别,商品类目ID,行为类型,时间戳,售价"
    required = ("用户ID", "商品ID", "商品类目ID", "行为类型", "时间戳")
    sql = {
        "user_id": q("用户ID"),
        "item_id": q("商品ID"),
        "category_id": nullif_empty(q("商品类目ID")),
        "behavior": behavior_case(q("行为类型"), {"pv": "view", "cart": "cart", "fav": "fav", "buy": "buy"}),
        "ts": int_seconds(q("时间戳")),
        "value": f"TRY_CAST({nullif_empty(q('售价'))} AS DOUBLE)",
    }
    ts_raw_sql = q("时间戳")
    value_raw_sql = q("售价")

    def columns_sql(self) -> dict[str, str]:
        cols = dict(self.sql)
        if "售价" not in self.field_names():
            cols.pop("value")
        return cols

    def items(self) -> Iterator[pa.Table]:
        names = self.field_names()

        def col(name: str, cast: str = "VARCHAR") -> str:
            return f"TRY_CAST(NULLIF(trim({q(name)}), '') AS {cast})" if name in names else f"NULL::{cast}"

        sel = (
            f"SELECT DISTINCT ON (item_id) {q('商品ID')} AS item_id, {col('商品类目ID')} AS category_id, "
            f"{col('商品类别')} AS category_path, {col('品牌')} AS brand, {col('商品名称')} AS title, "
            f"{col('售价', 'DOUBLE')} AS price FROM {{src}} WHERE {q('商品ID')} IS NOT NULL"
        )
        return _items_from_source(self.path, sel, header=True)


@register
class TmallIJCAI15(DelimitedReader):
    """Tmall repeat-buyers (IJCAI-15) ``user_log``: action_type 0=click 1=cart 2=buy 3=fav.

    The time is ``time_stamp`` as MMDD (year from ``--option year=``, default 2015) or separate
    ``month``/``day`` columns. ``seller_id`` or ``merchant_id``; extra columns are ignored.
    """

    format = "tmall"
    description = "Tmall IJCAI-15 user_log: user_id,item_id,cat_id,seller_id|merchant_id,brand_id,time_stamp(MMDD),action_type"
    required = ("user_id", "item_id", "cat_id", "action_type")

    def check(self) -> None:
        super().check()
        names = self.field_names()
        if "time_stamp" not in names and not {"month", "day"} <= set(names):
            raise ReaderOptionError(f"{self.path}: no time column: expected 'time_stamp' (MMDD) or 'month' and 'day'")
        year = self.options.get("year", "2015")
        if not (year.isdigit() and len(year) == 4):
            raise ReaderOptionError(f"--option year must be a 4-digit year, got {year!r}")

    def columns_sql(self) -> dict[str, str]:
        year = self.options.get("year", "2015")
        if "time_stamp" in self.field_names():
            date = f"'{year}' || lpad(trim(time_stamp), 4, '0')"
        else:
            date = f"'{year}' || lpad(trim(\"month\"), 2, '0') || lpad(trim(\"day\"), 2, '0')"
        return {
            "user_id": "user_id",
            "item_id": "item_id",
            "category_id": nullif_empty("cat_id"),
            "behavior": behavior_case("action_type", {"0": "click", "1": "cart", "2": "buy", "3": "fav"}),
            "ts": f"CAST(epoch(try_strptime({date}, '%Y%m%d')) AS BIGINT)",
        }

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        if "time_stamp" in self.field_names():
            return "time_stamp"
        return "\"month\" || '/' || \"day\""

    def items(self) -> Iterator[pa.Table]:
        names = self.field_names()
        brand = "NULLIF(trim(brand_id), '')" if "brand_id" in names else "NULL"
        sel = (
            "SELECT DISTINCT ON (item_id) item_id, NULLIF(trim(cat_id), '') AS category_id, NULL AS category_path, "
            f"{brand} AS brand, NULL AS title, NULL::DOUBLE AS price FROM {{src}} WHERE item_id IS NOT NULL"
        )
        return _items_from_source(self.path, sel, header=True)
