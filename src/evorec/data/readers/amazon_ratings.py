"""Amazon "ratings only" CSVs (McAuley lab): ``rate`` events valued by the star rating.

2014 files are ``user,item,rating,timestamp`` and 2018 files ``item,user,rating,timestamp``,
neither with a header; the order is told from the ids (an ASIN has 10 characters, a reviewer
id starts with ``A`` and is longer) or given with ``--option order=user_item|item_user``.
Copies with a header (Kaggle's ``UserId,ProductId,Rating,Timestamp``) are read by column name.
"""

from __future__ import annotations

import re

from evorec.data.readers import register
from evorec.data.readers.amazon import check_options
from evorec.data.readers.base import DelimitedReader, ReaderOptionError, int_seconds, nullif_empty, sql_str
from evorec.data.readers.layouts import (
    NUM,
    UNIX_S,
    Recognition,
    Role,
    Sample,
    header_recognition,
    headerless_fit,
    resolve,
)

ASIN = r"[0-9A-Z]{10}"
REVIEWER = r"A[0-9A-Z]{9,20}"
AR_ROLES = (
    Role("user", ("UserId", "user_id", "reviewerID", "user")),
    Role("item", ("ProductId", "product_id", "asin", "parent_asin", "item")),
    Role("rating", ("Rating", "overall", "score")),
    Role("timestamp", ("Timestamp", "unixReviewTime", "time")),
)


@register
class AmazonRatings(DelimitedReader):
    """Amazon "ratings only" CSVs (2014 user-first, 2018 item-first, or with a header) -> ``rate`` events."""

    format = "amazon-ratings"
    description = (
        "Amazon ratings-only CSV: 2014 user,item,rating,timestamp or 2018 item,user,rating,timestamp (no header; "
        "order told from the ids, or --option order=user_item|item_user), or a header UserId,ProductId,Rating,Timestamp"
    )
    roles = AR_ROLES

    def __init__(self, path, options=None):
        super().__init__(path, options)
        rows = self.head_fields(20)
        head = rows[0] if rows else []
        self.order = self.options.get("order", "")
        if head and len(resolve(head, AR_ROLES)) < 2:
            self.header = False  # type: ignore[misc]
            if not self.order:
                self.order = "item_user" if _item_first(rows) else "user_item"
            self.columns = ("item", "user", "rating", "timestamp") if self.order == "item_user" else (  # type: ignore[misc]
                "user", "item", "rating", "timestamp")

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        if headerless_fit(sample, ",", (REVIEWER, ASIN, NUM, UNIX_S)):
            return [Recognition(cls.format, "2014 ratings-only CSV (user,item,rating,timestamp)", {"user": "field 1"}, specificity=4)]
        if headerless_fit(sample, ",", (ASIN, REVIEWER, NUM, UNIX_S)):
            return [Recognition(cls.format, "2018 ratings-only CSV (item,user,rating,timestamp)", {"item": "field 1"}, specificity=4)]
        r = header_recognition(cls.format, "ratings CSV with a header", sample, AR_ROLES, (",",))
        return [r] if r is not None else []

    def check(self) -> None:
        check_options(self, ("order",))
        if self.order not in ("", "user_item", "item_user"):
            raise ReaderOptionError(f"--option order={self.order!r}: use user_item (2014 files) or item_user (2018 files)")
        super().check()

    def layout(self) -> str:
        if self.header:
            return "ratings CSV with a header"
        return "ratings-only CSV, " + ("item,user,rating,timestamp (2018)" if self.order == "item_user" else "user,item,rating,timestamp (2014)")

    def columns_sql(self) -> dict[str, str]:
        return {
            "user_id": nullif_empty(self.col("user")),
            "item_id": nullif_empty(self.col("item")),
            "ts": int_seconds(self.col("timestamp")),
            "behavior": sql_str("rate"),
            "value": f"TRY_CAST({nullif_empty(self.col('rating'))} AS DOUBLE)",
        }

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        return self.col("timestamp")

    @property
    def value_raw_sql(self) -> str:  # type: ignore[override]
        return self.col("rating")


def _item_first(rows: list[list[str]]) -> bool:
    """2018 files start with the ASIN: more first fields look like ASINs than second fields do."""
    first = sum(1 for r in rows if r and re.fullmatch(ASIN, r[0].strip()) and not re.fullmatch(REVIEWER, r[0].strip()))
    second = sum(1 for r in rows if len(r) > 1 and re.fullmatch(ASIN, r[1].strip()) and not re.fullmatch(REVIEWER, r[1].strip()))
    return first > second
