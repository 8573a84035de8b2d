"""Alibaba sources: Taobao UserBehavior, Tianchi mobile 2014, Tianchi 216549, Tmall IJCAI-15."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from evorec.data.readers import register
from evorec.data.readers.base import (
    ITEM_SCHEMA_EXTRA,
    DelimitedReader,
    FormatMismatch,
    ReaderOptionError,
    behavior_case,
    int_seconds,
    nullif_empty,
    profiles_table,
    q,
    sql_str,
    strptime_seconds,
)
from evorec.data.readers.layouts import (
    INT,
    UNIX_S,
    Recognition,
    Role,
    Sample,
    header_recognition,
    headerless_fit,
    resolve,
)
from evorec.data.readers.movielens import read_csv_strings, read_text, side_file
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
            t = pa.Table.from_batches([batch])
            yield t.cast(ITEM_SCHEMA_EXTRA if "merchant" in t.column_names else ITEM_SCHEMA)
    finally:
        con.close()


TAOBAO_BEHAVIORS = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "buy"}
TAOBAO_ROLES = (
    Role("user", ("user_id", "userid", "user")),
    Role("item", ("item_id", "itemid", "item")),
    Role("category", ("category_id", "categoryid", "category", "cate_id")),
    Role("behavior", ("behavior_type", "behaviour_type", "behavior", "behaviour", "type")),
    Role("timestamp", ("timestamp", "ts", "unix_time", "time")),
)
TAOBAO_FIELDS = (INT, INT, INT, "pv|buy|cart|fav", UNIX_S)


@register
class TaobaoUserBehavior(DelimitedReader):
    """Taobao UserBehavior.csv (Tianchi 649): ``user,item,category,pv|cart|fav|buy,unix ts``.

    The official file has no header (fields by position); copies with a header (``user_id,
    item_id,category_id,behavior_type,timestamp``, ``User_ID,...``, any order, extra columns such
    as a derived date) are read by column name.
    """

    format = "taobao"
    description = (
        "Taobao UserBehavior.csv (Tianchi 649): user,item,category,pv|cart|fav|buy,unix ts; no header, or a header "
        "naming user_id,item_id,category_id,behavior_type,timestamp (any order, extra columns ignored)"
    )
    header = False
    columns = ("user", "item", "category", "behavior", "timestamp")
    roles = TAOBAO_ROLES

    def __init__(self, path, options=None):
        super().__init__(path, options)
        head = (self.head_fields(1) or [[]])[0]
        if len(resolve(head, TAOBAO_ROLES)) >= 3:  # a header naming the columns
            self.header = True  # type: ignore[misc]

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if headerless_fit(sample, ",", TAOBAO_FIELDS):
            return [Recognition(cls.format, "UserBehavior.csv, no header (the official file)",
                                {r.name: f"field {i + 1}" for i, r in enumerate(TAOBAO_ROLES)}, specificity=5)]
        r = header_recognition(cls.format, "UserBehavior with a header (columns by name)", sample, TAOBAO_ROLES, (",",))
        if r is not None and r.complete:
            codes = {v.strip() for v in sample.column_values(r.found["behavior"])}
            if codes and not codes <= set(TAOBAO_BEHAVIORS) | set(TAOBAO_BEHAVIORS.values()):
                return [Recognition(cls.format, r.layout, r.found, ("behavior_type (pv/cart/fav/buy)",),
                                    specificity=r.specificity)]
        return [r] if r is not None else []

    def layout(self) -> str:
        return "UserBehavior with a header (columns by name)" if self.header else "UserBehavior.csv, no header"

    def columns_sql(self) -> dict[str, str]:
        return {
            "user_id": self.col("user"),
            "item_id": self.col("item"),
            "category_id": nullif_empty(self.col("category")),
            "behavior": behavior_case(self.col("behavior"), TAOBAO_BEHAVIORS),
            "ts": int_seconds(self.col("timestamp")),
        }

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        return self.col("timestamp")


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


TMALL_ROLES = (
    Role("user", ("user_id", "userid")),
    Role("item", ("item_id", "itemid")),
    Role("category", ("cat_id", "category_id", "catid")),
    Role("action", ("action_type", "action", "actiontype")),
    Role("merchant", ("seller_id", "merchant_id", "sellerid", "merchantid"), required=False),
    Role("brand", ("brand_id", "brandid", "brand"), required=False),
    Role("time_stamp", ("time_stamp", "timestamp"), required=False),
    Role("year", ("year",), required=False),
    Role("month", ("month",), required=False),
    Role("day", ("day",), required=False),
    Role("age_range", ("age_range", "agerange", "age"), required=False),
    Role("gender", ("gender", "sex"), required=False),
    Role("region", ("province", "region", "city", "state"), required=False),
)
TMALL_ACTIONS = {"0": "click", "1": "cart", "2": "buy", "3": "fav", "click": "click", "cart": "cart", "buy": "buy",
                 "fav": "fav", "favorite": "fav", "purchase": "buy", "add_to_cart": "cart"}
PROFILE_ROLES = ("age_range", "gender", "region")
TMALL_USER_INFO = "user_info_format1.csv"  # the profile file of the official release
TMALL_USER_ROLES = (TMALL_ROLES[0], *(r for r in TMALL_ROLES if r.name in PROFILE_ROLES))


def _tmall_time(found: dict[str, str]) -> str | None:
    """'time_stamp' or 'month/day' (None: no time column)."""
    if "time_stamp" in found:
        return "time_stamp"
    if "month" in found and "day" in found:
        return "month/day"
    return None


def _tmall_layout(found: dict[str, str]) -> str:
    parts = [f"{found['time_stamp']} (MMDD)" if "time_stamp" in found else "month/day"]
    parts.append(found.get("action", "action_type"))
    if any(r in found for r in PROFILE_ROLES):
        parts.append("profile " + "/".join(found[r] for r in PROFILE_ROLES if r in found))
    return "user_log, " + " + ".join(parts)


@register
class TmallIJCAI15(DelimitedReader):
    """Tmall repeat-buyers (IJCAI-15) ``user_log``: action_type 0=click 1=cart 2=buy 3=fav.

    Columns are found by name, in any order. The time is ``time_stamp`` as MMDD (or YYYYMMDD) or
    separate ``month``/``day`` columns; the year comes from a ``year`` column, else ``--option
    year=`` (default 2015, the dataset's year). The action is ``action_type`` or ``action``.
    ``seller_id``/``merchant_id`` and ``brand_id`` go to the items table; the user profile columns
    joined into some copies (``age_range``, ``gender``, ``province``) to the users table.
    """

    format = "tmall"
    description = (
        "Tmall IJCAI-15 user_log: user_id,item_id,cat_id,seller_id|merchant_id,brand_id,time_stamp(MMDD)|month+day,"
        "action_type|action (any order; --option year=, default 2015); profile columns age_range,gender,province "
        "and user_info_format1.csv beside it (or --option users=FILE) -> users table"
    )
    roles = TMALL_ROLES

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        r = header_recognition(cls.format, "user_log", sample, TMALL_ROLES, (",",))
        if r is None:
            return []
        missing = r.missing + (() if _tmall_time(r.found) else ("time_stamp (or month and day)",))
        notes = () if "year" in r.found or "time_stamp" in r.found else ("no year in the file: 2015 assumed (--option year=)",)
        return [Recognition(cls.format, _tmall_layout(r.found), r.found, missing, notes=notes, specificity=r.specificity)]

    def layout(self) -> str:
        return _tmall_layout(self.role_columns())

    def year(self) -> str:
        year = self.options.get("year", "2015")
        if not (year.isdigit() and len(year) == 4):
            raise ReaderOptionError(f"--option year must be a 4-digit year, got {year!r}")
        return year

    def check(self) -> None:
        super().check()
        if _tmall_time(self.role_columns()) is None:
            raise FormatMismatch(
                self.path, 1, "a time column: 'time_stamp' (MMDD) or 'month' and 'day'",
                f"header {self.field_names()[:16]}",
            )
        self.year()

    def columns_sql(self) -> dict[str, str]:
        year = sql_str(self.year())
        if self.has("year"):
            year = f"coalesce(NULLIF(trim({self.col('year')}), ''), {year})"
        if _tmall_time(self.role_columns()) == "time_stamp":
            t = f"trim({self.col('time_stamp')})"
            date = f"CASE WHEN length({t}) = 8 THEN {t} ELSE {year} || lpad({t}, 4, '0') END"
        else:
            date = f"{year} || lpad(trim({self.col('month')}), 2, '0') || lpad(trim({self.col('day')}), 2, '0')"
        return {
            "user_id": self.col("user"),
            "item_id": self.col("item"),
            "category_id": nullif_empty(self.col("category")),
            "behavior": behavior_case(self.col("action"), TMALL_ACTIONS),
            "ts": f"CAST(epoch(try_strptime({date}, '%Y%m%d')) AS BIGINT)",
        }

    def user_columns_sql(self) -> dict[str, str]:
        return {r: nullif_empty(self.col(r)) for r in PROFILE_ROLES if self.has(r)}

    def users_file(self) -> Path | None:
        """``user_info_format1.csv`` (user_id,age_range,gender) beside the log, or ``--option users=FILE``."""
        return side_file(self.options, "users", self.path.with_name(TMALL_USER_INFO))

    def side_files(self) -> list[Path]:
        f = self.users_file()
        return [f] if f else []

    def profiles(self) -> Iterator[pa.Table]:
        f = self.users_file()
        if f is None:
            return
        t = read_csv_strings(read_text(f).encode("utf-8"), ",", '"', f)
        found = resolve(t.column_names, TMALL_USER_ROLES)
        if "user" not in found:
            raise FormatMismatch(f, 1, f"a {TMALL_USER_INFO} header user_id,age_range,gender", f"header {t.column_names[:12]}")
        yield profiles_table(
            t.column(found["user"]), **{r: t.column(found[r]) for r in PROFILE_ROLES if r in found}
        )

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        if _tmall_time(self.role_columns()) == "time_stamp":
            return self.col("time_stamp")
        return f"{self.col('month')} || '/' || {self.col('day')}"

    def items(self) -> Iterator[pa.Table]:
        def opt(role: str) -> str:
            return f"NULLIF(trim({self.col(role)}), '')" if self.has(role) else "NULL"

        sel = (
            f"SELECT DISTINCT ON (item_id) {self.col('item')} AS item_id, {opt('category')} AS category_id, "
            f"NULL AS category_path, {opt('brand')} AS brand, NULL AS title, NULL::DOUBLE AS price, "
            f"{opt('merchant')} AS merchant FROM {{src}} WHERE {self.col('item')} IS NOT NULL"
        )
        return _items_from_source(self.path, sel, header=True)
