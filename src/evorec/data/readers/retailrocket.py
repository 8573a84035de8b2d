"""RetailRocket e-commerce dataset (Kaggle): ``events.csv`` plus item properties and category tree.

``events.csv``: ``timestamp,visitorid,event,itemid,transactionid`` with ``timestamp`` in
*milliseconds*; ``event`` is ``view`` | ``addtocart`` | ``transaction`` (-> view, cart, buy).
Columns are found by name in any order (``visitor_id``, ``item_id``, ``event_type``... as in
re-saved copies; a pandas index column or other extra columns are ignored). A timestamp of 11 or
more digits is milliseconds, a shorter one seconds (copies re-saved in seconds), and a date-time
text (``2015-06-02 05:02:12``, copies with converted times) is read as UTC.

Item categories come from the property snapshots ``item_properties_part1.csv`` and
``item_properties_part2.csv`` (``timestamp,itemid,property,value``, ~1 GB each): the rows with
``property == 'categoryid'`` give an item's category, the latest snapshot winning. The
``category_tree.csv`` (``categoryid,parentid``) turns a category into its path, root first
("1490 > 312 > 1277"; the dataset's categories are ids without names).

Options: ``--option properties=FILE1;FILE2`` and ``--option tree=FILE``. Without them, files of
the standard names (plain or ``.gz``) beside ``events.csv`` are used when present; an empty value
(``--option properties=``) uses none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from evorec.data.readers import register
from evorec.data.readers.amazon import arrow_reader, check_options
from evorec.data.readers.base import (
    DelimitedReader,
    FormatMismatch,
    ReaderOptionError,
    behavior_case,
    first_lines,
    nullif_empty,
    show,
    sql_str,
)
from evorec.data.readers.layouts import Recognition, Role, Sample, header_recognition
from evorec.errors import MissingPathError
from evorec.types import ITEM_SCHEMA

log = logging.getLogger(__name__)

PROPERTY_FILES = ("item_properties_part1", "item_properties_part2")
TREE_FILE = "category_tree"
PROPERTY_COLUMNS = ("timestamp", "itemid", "property", "value")
TREE_COLUMNS = ("categoryid", "parentid")
PATH_SEP = " > "
MAX_DEPTH = 1000  # a path longer than this is certainly a broken tree


def category_paths(parent: dict[str, str | None]) -> tuple[dict[str, str], list[str]]:
    """Each category's path (root first, joined with " > ") from a child -> parent map.

    A cycle stops the walk at the first repeated category (so every path is finite) and is
    reported in the second element (categories whose walk met a cycle).
    """
    paths: dict[str, str] = {}
    cyclic: list[str] = []
    for cat in parent:
        chain = [cat]
        seen = {cat}
        cur: str | None = cat
        while cur is not None and len(chain) < MAX_DEPTH:
            up = parent.get(cur)
            if up is None:
                break
            if up in seen:
                cyclic.append(cat)
                break
            chain.append(up)
            seen.add(up)
            cur = up
        paths[cat] = PATH_SEP.join(reversed(chain))
    return paths, cyclic


def _beside(events: Path, stem: str) -> Path | None:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        p = events.parent / name
        if p.is_file():
            return p
    return None


def _check_header(path: Path, required: tuple[str, ...]) -> None:
    if not path.exists():
        raise MissingPathError(f"RetailRocket side file not found: {path}")
    lines = first_lines(path, 1)
    if not lines:
        raise FormatMismatch(path, 1, f"a comma-separated header with columns {list(required)}", "an empty file")
    names = [c.strip().strip('"') for c in lines[0].lstrip(b"\xef\xbb\xbf").decode("utf-8", errors="replace").split(",")]
    if names[: len(required)] != list(required):  # read by position below, so the order matters too
        missing = [c for c in required if c not in names]
        why = f"missing {missing}" if missing else "columns in another order"
        raise FormatMismatch(path, 1, f"a comma-separated header with columns {list(required)}", f"{show(lines[0])} ({why})")


def _csv_source(paths: list[Path], columns: tuple[str, ...]) -> str:
    """DuckDB read_csv over the files, every column as text (headers checked beforehand)."""
    files = "[" + ", ".join(sql_str(str(p)) for p in paths) + "]"
    cols = "{" + ", ".join(f"{sql_str(c)}: 'VARCHAR'" for c in columns) + "}"
    return (
        f"read_csv({files}, header = true, delim = ',', quote = '\"', columns = {cols}, "
        "auto_detect = false, ignore_errors = true)"
    )


RR_ROLES = (
    Role("timestamp", ("timestamp", "event_time", "time", "ts")),
    Role("visitor", ("visitorid", "visitor", "user_id", "userid")),
    Role("event", ("event", "event_type", "action")),
    Role("item", ("itemid", "item")),
    Role("transaction", ("transactionid", "transaction"), required=False),
)
RR_EVENTS = {"view": "view", "addtocart": "cart", "transaction": "buy"}


def _rr_ts(col: str) -> str:
    """ms (11+ digits) or s since 1970, or a date-time text read as UTC."""
    num = f"TRY_CAST(trim({col}) AS DOUBLE)"
    return (
        f"CAST(floor(CASE WHEN {num} IS NULL THEN epoch(TRY_CAST(trim({col}) AS TIMESTAMP)) "
        f"WHEN abs({num}) >= 1e11 THEN {num} / 1000 ELSE {num} END) AS BIGINT)"
    )


@register
class RetailRocket(DelimitedReader):
    """RetailRocket ``events.csv`` (ms timestamps) with categories from the item property files."""

    format = "retailrocket"
    description = (
        "RetailRocket events.csv: timestamp(ms),visitorid,event(view|addtocart|transaction),itemid,transactionid; "
        "categories from item_properties_part*.csv + category_tree.csv (--option properties=F1;F2 tree=F, "
        "default: beside events.csv)"
    )
    delimiter = ","
    roles = RR_ROLES

    @classmethod
    def recognise(cls, sample: Sample) -> list[Recognition]:
        r = header_recognition(cls.format, "events.csv, columns by name", sample, RR_ROLES, (",",))
        if r is None:
            return []
        if r.complete:
            codes = {v.strip() for v in sample.column_values(r.found["event"])}
            if codes and not codes <= set(RR_EVENTS):
                return [Recognition(cls.format, r.layout, r.found, ("event (view/addtocart/transaction)",),
                                    specificity=r.specificity)]
        return [r]

    def layout(self) -> str:
        return "events.csv (" + ",".join(self.role_columns().values()) + ")"

    def columns_sql(self) -> dict[str, str]:
        return {
            "user_id": nullif_empty(self.col("visitor")),
            "item_id": nullif_empty(self.col("item")),
            "ts": _rr_ts(self.col("timestamp")),
            "behavior": behavior_case(self.col("event"), RR_EVENTS),
        }

    @property
    def ts_raw_sql(self) -> str:  # type: ignore[override]
        return self.col("timestamp")

    def __init__(self, path, options=None):
        super().__init__(path, options)
        self._side: tuple[list[Path], Path | None] | None = None

    def _side_paths(self) -> tuple[list[Path], Path | None]:
        if self._side is None:
            if "properties" in self.options:
                props = [Path(p.strip()) for p in self.options["properties"].split(";") if p.strip()]
            else:
                props = [p for p in (_beside(self.path, s) for s in PROPERTY_FILES) if p is not None]
                if props:
                    log.info("using item properties found beside %s: %s", self.path.name, ", ".join(p.name for p in props))
            if "tree" in self.options:
                tree = Path(self.options["tree"].strip()) if self.options["tree"].strip() else None
            else:
                tree = _beside(self.path, TREE_FILE)
                if tree is not None:
                    log.info("using category tree found beside %s: %s", self.path.name, tree.name)
            self._side = (props, tree)
        return self._side

    def property_files(self) -> list[Path]:
        return self._side_paths()[0]

    def tree_file(self) -> Path | None:
        return self._side_paths()[1]

    def check(self) -> None:
        check_options(self, ("properties", "tree"))
        super().check()
        props, tree = self._side_paths()
        if tree is not None and not props:
            raise ReaderOptionError(
                f"{self.path}: a category tree without item property files gives no categories; "
                "name them with --option properties=item_properties_part1.csv;item_properties_part2.csv"
            )
        for p in props:
            _check_header(p, PROPERTY_COLUMNS)
        if tree is not None:
            _check_header(tree, TREE_COLUMNS)

    def side_files(self) -> list[Path]:
        props, tree = self._side_paths()
        return [*props, *([tree] if tree is not None else [])]

    def items(self) -> Iterator[pa.Table]:
        props, tree = self._side_paths()
        if not props:
            return iter(())
        return self._items(props, tree)

    def _items(self, props: list[Path], tree: Path | None) -> Iterator[pa.Table]:
        con = duckdb.connect()
        try:
            path_join, path_col = "", "NULL"
            if tree is not None:
                rows = con.sql(
                    f"SELECT NULLIF(trim(categoryid), ''), NULLIF(trim(parentid), '') FROM {_csv_source([tree], TREE_COLUMNS)}"
                ).fetchall()
                parent = {c: p for c, p in rows if c is not None}
                paths, cyclic = category_paths(parent)
                if cyclic:
                    log.warning(
                        "%s: the category tree has a cycle through %d categor(y/ies), e.g. %s: their paths stop there",
                        tree, len(cyclic), ", ".join(sorted(cyclic)[:5]),
                    )
                con.register(
                    "_paths",
                    pa.table({"categoryid": pa.array(list(paths), pa.string()), "path": pa.array(list(paths.values()), pa.string())}),
                )
                path_join, path_col = "LEFT JOIN _paths p ON p.categoryid = c.category_id", "p.path"
            # The latest categoryid snapshot of each item (ties: the larger id, so the result is stable).
            sql = f"""
                WITH c AS (
                    SELECT trim(itemid) AS item_id, trim("value") AS category_id
                    FROM {_csv_source(props, PROPERTY_COLUMNS)}
                    WHERE trim(property) = 'categoryid' AND NULLIF(trim(itemid), '') IS NOT NULL
                      AND NULLIF(trim("value"), '') IS NOT NULL
                    QUALIFY row_number() OVER (
                        PARTITION BY trim(itemid)
                        ORDER BY TRY_CAST(trim("timestamp") AS BIGINT) DESC NULLS LAST, trim("value") DESC) = 1
                )
                SELECT c.item_id, c.category_id, {path_col} AS category_path, NULL AS brand, NULL AS title,
                       NULL::DOUBLE AS price
                FROM c {path_join}"""
            for batch in arrow_reader(con.sql(sql), 1 << 17):
                yield pa.Table.from_batches([batch]).cast(ITEM_SCHEMA)
        finally:
            con.close()
