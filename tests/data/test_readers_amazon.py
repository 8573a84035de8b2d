"""Readers for Amazon reviews (2014/2018 + metadata), ReChorus TSVs and RetailRocket.

The ReChorus test reads the real Grocery file from the shared data folder; the other formats
are tested on small files written here in the exact official layouts.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from evorec.data import store as store_mod
from evorec.data.ingest import content_hash, ingest_file
from evorec.data.readers import get_reader
from evorec.data.readers.amazon import category_path, parse_price
from evorec.data.readers.base import FormatMismatch, ReaderOptionError
from evorec.data.readers.retailrocket import category_paths

# tests/data/<this file> -> parents[2] is the repository root; the shared data sits beside it.
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GROCERY = DATA / "amazon_grocery_rechorus"


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("EVOREC_SECRET", "test-secret")  # no key file in $HOME


def rows(store: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = store_mod.connect(store, read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def snapshot(store: Path) -> dict[str, list[tuple]]:
    """Every table's content, for "the store is unchanged" checks."""
    out = {}
    for table in ("datasets", "ingests", "events", "items", "quarantine", "meta"):
        out[table] = sorted(rows(store, f"SELECT * FROM {table}"), key=repr)
    return out


def write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ---------------------------------------------------------------------------------------
# ReChorus (real data)


def test_rechorus_grocery_real_file(tmp_path):
    train = GROCERY / "train.csv"
    if not train.exists():
        pytest.skip(f"shared data folder not found: {GROCERY}")
    store = tmp_path / "store.duckdb"
    res = ingest_file(store, train, "rechorus", "grocery")  # item_meta.csv is found beside train.csv

    n_lines = sum(1 for _ in train.open("rb")) - 1  # minus the header
    assert n_lines == 121_892
    assert res.rows_read == n_lines
    assert res.rows_ingested == n_lines and res.rows_quarantined == 0
    assert res.items_ingested == 8_713  # every row of item_meta.csv
    # The content hash covers the side file, so a changed item_meta.csv is a new ingest.
    assert res.content_hash == content_hash([train, GROCERY / "item_meta.csv"])

    (n, n_cat, users, items, cats, y0, y1, behaviors, values) = rows(
        store,
        "SELECT count(*), count(category_id), count(DISTINCT user_id), count(DISTINCT item_id), "
        "count(DISTINCT category_id), year(min(ts)), year(max(ts)), list(DISTINCT behavior), count(value) "
        "FROM events WHERE dataset = 'grocery'",
    )[0]
    assert n == n_cat == n_lines  # every event has its item's category
    assert (users, items) == (14_681, 8_687)
    assert cats == 56  # of item_meta's 57, one has no item in train.csv
    assert (y0, y1) == (2000, 2014)
    assert behaviors == ["rate"] and values == 0
    assert rows(store, "SELECT count(*) FROM quarantine")[0][0] == 0
    # Categories are exactly item_meta's i_category.
    assert rows(store, "SELECT category_id FROM items WHERE item_id = '1'") == [("0",)]
    # Line numbers trace back to the file: line 2 is the first data row (user 2177, item 3).
    assert rows(store, "SELECT item_id, epoch(ts)::BIGINT FROM events WHERE source_row = 2") == [("3", 965779200)]

    again = ingest_file(store, train, "rechorus", "grocery")
    assert again.skipped and rows(store, "SELECT count(*) FROM events")[0][0] == n_lines


def test_rechorus_items_option(tmp_path, caplog):
    d = tmp_path / "data"
    d.mkdir()
    src = write(d / "dev.csv", ["user_id\titem_id\ttime\tneg_items", "1\t10\t1400000000\t[3, 4]", "2\t11\t1400000500\t[5]"])
    meta = write(tmp_path / "meta.tsv", ["item_id\ti_category\tr_complement\tr_substitute", "10\t7\t[11]\t[]", "11\t8\t[]\t[10]"])
    store = tmp_path / "s.duckdb"
    ingest_file(store, src, "rechorus", "a", options={"items": str(meta)})
    assert rows(store, "SELECT item_id, category_id FROM events WHERE dataset = 'a' ORDER BY item_id") == [
        ("10", "7"),
        ("11", "8"),
    ]
    # Beside the file and not named: used, and said so. ``items=`` turns it off.
    write(d / "item_meta.csv", ["item_id\ti_category\tr_complement\tr_substitute", "10\t5\t[]\t[]"])
    with caplog.at_level(logging.INFO, logger="evorec.data.readers.amazon"):
        ingest_file(store, src, "rechorus", "b")
    assert "item_meta.csv" in caplog.text
    assert rows(store, "SELECT item_id, category_id FROM events WHERE dataset = 'b' ORDER BY item_id") == [
        ("10", "5"),
        ("11", None),
    ]
    ingest_file(store, src, "rechorus", "c", options={"items": ""})
    assert rows(store, "SELECT count(category_id) FROM events WHERE dataset = 'c'") == [(0,)]
    # A metadata file without i_category fails before anything is written.
    bad = write(tmp_path / "bad_meta.tsv", ["item_id\tcategory", "10\t7"])
    before = snapshot(store)
    with pytest.raises(FormatMismatch, match=r"bad_meta\.tsv, line 1.*i_category"):
        ingest_file(store, src, "rechorus", "d", options={"items": str(bad)})
    assert snapshot(store) == before


# ---------------------------------------------------------------------------------------
# Amazon reviews + metadata, 2014 and 2018 layouts

REVIEWS_2014 = [
    '{"reviewerID": "A1VEELTKS8NLZB", "asin": "616719923X", "reviewerName": "Amazon Customer", "helpful": [0, 0], '
    '"reviewText": "Just another flavor of Kit Kat but the taste is unique and a bit different.", "overall": 4.0, '
    '"summary": "Good Taste", "unixReviewTime": 1370044800, "reviewTime": "06 1, 2013"}',
    '{"reviewerID": "A14R9XMZVJ6INB", "asin": "616719923X", "reviewerName": "amf0001", "helpful": [0, 1], '
    '"reviewText": "I bought this on impulse and it comes from Japan.", "overall": 3.0, '
    '"summary": "3.5 stars,  sadly not as wonderful as I had hoped", "unixReviewTime": 1400457600, "reviewTime": "05 19, 2014"}',
    # line 3: cut off in the middle (a truncated download): not JSON, must be quarantined as line 3
    '{"reviewerID": "A27IQHDZFQFNGG", "asin": "616719923X", "reviewerName": "Caitlin", "helpful": [3, 4], "reviewText": "Really good. Great gift',
    # line 4: no unixReviewTime, but a reviewTime
    '{"reviewerID": "A31QY5TASILE89", "asin": "B00004S1C5", "reviewerName": "DebraDownSth", "helpful": [0, 0], '
    '"reviewText": "Colors are vibrant.", "overall": 5.0, "summary": "Yum!", "reviewTime": "09 13, 2009"}',
    '{"reviewerID": "A2LWK003FFMCI5", "asin": "B00004S1C5", "reviewerName": "Diana X.", "helpful": [1, 1], '
    '"reviewText": "These are great.", "overall": 5.0, "summary": "Great colors", "unixReviewTime": 1389225600, '
    '"reviewTime": "01 9, 2014"}',
    '{"reviewerID": "A1VEELTKS8NLZB", "asin": "B0000CNU1X", "reviewerName": "Amazon Customer", "helpful": [0, 0], '
    '"reviewText": "Meh.", "overall": 2.0, "summary": "Meh", "unixReviewTime": 1298592000, "reviewTime": "02 25, 2011"}',
]

# 2014 metadata: Python dict literals (single quotes), not JSON.
META_2014 = [
    "{'asin': '616719923X', 'title': 'Japanese Kit Kat Maccha Green Tea Flavor 5 Bars', 'price': 3.99, "
    "'imUrl': 'http://ecx.images-amazon.com/images/I/51LdEao6NgL._SX300_.jpg', 'related': {'also_bought': "
    "['B00FD63L5W', 'B0047YG5UY'], 'also_viewed': ['B00FD63L5W'], 'bought_together': ['B00FD63L5W']}, "
    "'salesRank': {'Grocery & Gourmet Food': 37305}, 'categories': [['Grocery & Gourmet Food', 'Snack Foods', "
    "'Candy & Chocolate']]}",
    "{'asin': 'B00004S1C5', 'description': \"Mom's favorite: Wilton's icing colors.\", 'title': 'Wilton Gel Food "
    "Coloring', 'price': 12.39, 'salesRank': {'Grocery & Gourmet Food': 1231}, 'brand': 'Wilton', 'categories': "
    "[['Grocery & Gourmet Food', 'Cooking & Baking', 'Food Coloring'], ['Home & Kitchen', 'Kitchen & Dining']]}",
    "{'asin': 'B000EDG3UE', 'title': 'Bob', 'categories': [[]]}",
    "{'asin': 'B000XXXXXX', 'title': 'broken",  # a damaged metadata line: logged, skipped
]

REVIEWS_2018 = [
    '{"overall": 5.0, "verified": true, "reviewTime": "06 11, 2013", "reviewerID": "A1J205ZK25TZ6W", '
    '"asin": "4639725043", "style": {"Size:": " 3.5 oz"}, "reviewerName": "Jeff", "reviewText": "I love it", '
    '"summary": "Five Stars", "unixReviewTime": 1370908800}',
    '{"overall": 4.0, "vote": "2", "verified": false, "reviewTime": "10 19, 2015", "reviewerID": "A3RLNH3QRJ5YRE", '
    '"asin": "4639725183", "reviewerName": "Mary", "reviewText": "Nice basket.", "summary": "Good", '
    '"unixReviewTime": 1445212800, "image": ["https://images-na.ssl-images-amazon.com/images/I/71eG75FTJJL._SY88.jpg"]}',
    '{"overall": 1.0, "verified": true, "reviewTime": "02 8, 2018", "reviewerID": "A1J205ZK25TZ6W", '
    '"asin": "B00005344V", "style": {"Flavor:": " Original"}, "reviewerName": "Jeff", "reviewText": "Stale.", '
    '"summary": "One Star", "unixReviewTime": 1518048000}',
    '{"overall": "five", "verified": true, "reviewTime": "02 9, 2018", "reviewerID": "A2ZZZZZZZZZZZZ", '
    '"asin": "B00005344V", "reviewText": "?", "summary": "?", "unixReviewTime": 1518134400}',
]

META_2018 = [
    '{"category": ["Grocery & Gourmet Food", "Beverages", "Coffee, Tea &amp; Cocoa", "Tea", "Green"], "tech1": "", '
    '"description": ["Lipton Yellow Label Tea"], "fit": "", "title": "Lipton Yellow Label Tea (loose tea) - 450g", '
    '"also_buy": ["B00886E4K0"], "tech2": "", "brand": "Lipton", "feature": [], "rank": ["#1,015 in Grocery & '
    'Gourmet Food ("], "also_view": [], "details": {}, "main_cat": "Grocery", "similar_item": "", "date": "", '
    '"price": "$12.46", "asin": "4639725043", "imageURL": [], "imageURLHighRes": []}',
    '{"category": [], "tech1": "", "description": [], "fit": "", "title": "Gourmet Gift Basket", "also_buy": [], '
    '"tech2": "", "brand": "", "feature": [], "rank": [], "also_view": [], "details": {}, "main_cat": "Grocery", '
    '"similar_item": "", "date": "", "price": "$24.99 - $39.99", "asin": "4639725183", "imageURL": [], "imageURLHighRes": []}',
    '{"category": ["Grocery & Gourmet Food", "Snack Foods", "Chips & Crisps"], "tech1": "", "description": [], '
    '"fit": "", "title": "Pringles Original", "also_buy": [], "tech2": "", "brand": "Pringles", "feature": [], '
    '"rank": [], "also_view": [], "details": {}, "main_cat": "Grocery", "similar_item": "", "date": "", '
    '"price": "", "asin": "B00005344V", "imageURL": [], "imageURLHighRes": []}',
]


def test_amazon_2014_gzip_reviews_with_python_literal_metadata(tmp_path, caplog):
    reviews = write(tmp_path / "reviews_Grocery_and_Gourmet_Food_5.json.gz", REVIEWS_2014, gz=True)
    meta = write(tmp_path / "meta_Grocery_and_Gourmet_Food.json", META_2014)
    store = tmp_path / "s.duckdb"
    with caplog.at_level(logging.WARNING, logger="evorec.data.readers.amazon"):
        res = ingest_file(store, reviews, "amazon", "g14", options={"meta": str(meta)})
    assert (res.rows_read, res.rows_ingested, res.rows_quarantined) == (6, 5, 1)
    assert res.items_ingested == 3
    assert "line(s) 4" in caplog.text  # the damaged metadata line is reported, not silently lost
    assert res.content_hash == content_hash([reviews, meta])

    q = rows(store, "SELECT source_row, raw, reason FROM quarantine")
    assert len(q) == 1 and q[0][0] == 3 and q[0][2].startswith("invalid JSON")
    assert "A27IQHDZFQFNGG" in q[0][1]

    ev = rows(
        store,
        "SELECT source_row, item_id, epoch(ts)::BIGINT, behavior, value, category_id FROM events ORDER BY source_row",
    )
    assert ev == [
        (1, "616719923X", 1370044800, "rate", 4.0, "Candy & Chocolate"),
        (2, "616719923X", 1400457600, "rate", 3.0, "Candy & Chocolate"),
        (4, "B00004S1C5", 1252800000, "rate", 5.0, "Food Coloring"),  # from reviewTime "09 13, 2009"
        (5, "B00004S1C5", 1389225600, "rate", 5.0, "Food Coloring"),
        (6, "B0000CNU1X", 1298592000, "rate", 2.0, None),  # no metadata for this item
    ]
    # User ids are pseudonymised, consistently: the same reviewer twice gives one id.
    users = rows(store, "SELECT source_row, user_id FROM events WHERE source_row IN (1, 6) ORDER BY 1")
    assert users[0][1] == users[1][1] != "A1VEELTKS8NLZB"

    items = rows(store, "SELECT item_id, category_id, category_path, brand, title, price FROM items ORDER BY item_id")
    assert items == [
        ("616719923X", "Candy & Chocolate", "Grocery & Gourmet Food > Snack Foods > Candy & Chocolate", None,
         "Japanese Kit Kat Maccha Green Tea Flavor 5 Bars", 3.99),
        ("B00004S1C5", "Food Coloring", "Grocery & Gourmet Food > Cooking & Baking > Food Coloring", "Wilton",
         "Wilton Gel Food Coloring", 12.39),
        ("B000EDG3UE", None, None, None, "Bob", None),
    ]


def test_amazon_2018_json_reviews_with_gzip_json_metadata(tmp_path):
    reviews = write(tmp_path / "Grocery_and_Gourmet_Food_5.json", REVIEWS_2018)
    meta = write(tmp_path / "meta_Grocery_and_Gourmet_Food.json.gz", META_2018, gz=True)
    store = tmp_path / "s.duckdb"
    res = ingest_file(store, reviews, "amazon", "g18", options={"meta": str(meta)})
    assert (res.rows_read, res.rows_ingested, res.rows_quarantined) == (4, 3, 1)
    assert rows(store, "SELECT source_row, reason FROM quarantine") == [(4, "unparseable value: 'five'")]
    ev = rows(store, "SELECT item_id, epoch(ts)::BIGINT, value, category_id FROM events ORDER BY source_row")
    assert ev == [
        ("4639725043", 1370908800, 5.0, "Green"),
        ("4639725183", 1445212800, 4.0, "Grocery"),  # empty category list: main_cat
        ("B00005344V", 1518048000, 1.0, "Chips & Crisps"),
    ]
    items = rows(store, "SELECT item_id, category_path, brand, title, price FROM items ORDER BY item_id")
    assert items == [
        ("4639725043", "Grocery & Gourmet Food > Beverages > Coffee, Tea & Cocoa > Tea > Green", "Lipton",
         "Lipton Yellow Label Tea (loose tea) - 450g", 12.46),
        ("4639725183", "Grocery", None, "Gourmet Gift Basket", 24.99),  # a price range: its lower bound
        ("B00005344V", "Grocery & Gourmet Food > Snack Foods > Chips & Crisps", "Pringles", "Pringles Original", None),
    ]


def test_amazon_parallel_parse_matches_serial(tmp_path, monkeypatch):
    """The multi-process path (large files) gives exactly what the in-process reference gives."""
    import evorec.data.readers.amazon as amazon

    lines = []
    for i in range(60):  # several blocks' worth, bad lines included, CRLF endings, no final newline
        lines.extend(REVIEWS_2014 if i % 2 else REVIEWS_2018)
    reviews = tmp_path / "reviews.json"
    reviews.write_bytes("\r\n".join(lines).encode("utf-8"))
    meta = write(tmp_path / "meta.json.gz", (META_2014 + META_2018) * 20, gz=True)
    store = tmp_path / "s.duckdb"
    ingest_file(store, reviews, "amazon", "serial", options={"meta": str(meta)})
    monkeypatch.setattr(amazon, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(amazon, "PARALLEL_BLOCK_BYTES", 4096)
    assert len(list(amazon.line_blocks(reviews, 4096))) > 10
    res = ingest_file(store, reviews, "amazon", "parallel", options={"meta": str(meta), "workers": "2"})
    assert res.rows_read == len(lines) and res.rows_quarantined == 30 + 30  # 1 bad line in each file copy

    def content(dataset: str, sql: str) -> list[tuple]:
        return rows(store, sql + " ORDER BY ALL", [dataset])

    for sql in (
        "SELECT user_id, item_id, ts, behavior, category_id, value, source_row FROM events WHERE dataset = ?",
        "SELECT source_row, raw, reason FROM quarantine WHERE dataset = ?",
        "SELECT item_id, category_id, category_path, brand, title, price FROM items WHERE dataset = ?",
    ):
        serial, parallel = content("serial", sql), content("parallel", sql)
        assert serial == parallel and serial
    # Line numbers stay exact across blocks: the damaged review is line 3 of every 2014 copy.
    bad = [r[0] for r in content("parallel", "SELECT source_row FROM quarantine WHERE dataset = ? AND reason LIKE 'invalid JSON%'")]
    assert bad == [4 + 10 * k + 3 for k in range(30)]


def test_amazon_metadata_helpers():
    assert parse_price("$1,299.00") == 1299.0
    assert parse_price(3.5) == 3.5
    for junk in ("", ".a-box-inner{background-color:#fff}", None, True, float("nan"), -1, [1]):
        assert parse_price(junk) is None
    assert category_path({"categories": [[], ["A", " B  "]]}) == ["A", "B"]
    assert category_path({"category": ["Clothing, Shoes &amp; Jewelry", "</span></span></span>", "Men"]}) == [
        "Clothing, Shoes & Jewelry",
        "Men",
    ]
    assert category_path({"asin": "x"}) == []


# ---------------------------------------------------------------------------------------
# RetailRocket

RR_EVENTS = [
    "timestamp,visitorid,event,itemid,transactionid",
    "1433221332117,257597,view,355908,",
    "1433224214164,992329,view,248676,",
    "1433221999827,111016,view,318965,",
    "1433221955914,483717,view,253185,",
    "1433222276276,599528,transaction,356475,4000",
    "1433221337106,951259,view,367447,",
    "1433193500981,599528,addtocart,356475,",
    "1433224000000,287857,view",  # line 9: a cut row
    "1433223236124,1036938,view,344723,",
    "1433223500000,992329,addtocart,248676,",
    "143322x,992329,view,248676,",  # line 12: a damaged timestamp
]
RR_PROPS_1 = [
    "timestamp,itemid,property,value",
    "1435460400000,460429,categoryid,1338",
    "1441508400000,206783,888,1116713 960601 n277.200",
    "1439089200000,395014,400,n552.000 639502 n720.000 424566",
    "1431226800000,59481,790,n15360.000",
    "1433646000000,355908,categoryid,1173",
    "1436065200000,285026,available,0",
    "1431226800000,356475,categoryid,570",
    "1433041200000,248676,categoryid,1277",
]
RR_PROPS_2 = [
    "timestamp,itemid,property,value",
    "1439694000000,355908,categoryid,1277",  # later than part 1's 1173: wins
    "1431831600000,248676,categoryid,1173",  # earlier than part 1's 1277: loses
    "1433646000000,318965,categoryid,9999",  # not in the tree
    "1435460400000,253185,6,319724",
    "1431226800000,367447,available,1",
]
RR_TREE = [
    "categoryid,parentid",
    "1016,213",
    "809,169",
    "570,9",
    "9,570",  # a cycle
    "1691,885",
    "536,1691",
    "231,",
    "1277,312",
    "312,1490",
    "1490,",
    "1173,1490",
]


def _retailrocket(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    write(d / "item_properties_part1.csv", RR_PROPS_1)
    write(d / "item_properties_part2.csv", RR_PROPS_2)
    write(d / "category_tree.csv", RR_TREE)
    return write(d / "events.csv", RR_EVENTS)


def test_retailrocket_side_files_beside_events(tmp_path, caplog):
    events = _retailrocket(tmp_path / "rr")
    store = tmp_path / "s.duckdb"
    with caplog.at_level(logging.INFO, logger="evorec.data.readers.retailrocket"):
        res = ingest_file(store, events, "retailrocket", "rr")
    assert "cycle" in caplog.text and "item_properties_part1.csv" in caplog.text
    assert (res.rows_read, res.rows_ingested, res.rows_quarantined) == (11, 9, 2)
    assert res.items_ingested == 5
    assert res.content_hash == content_hash(
        [events, *(tmp_path / "rr" / n for n in ("item_properties_part1.csv", "item_properties_part2.csv", "category_tree.csv"))]
    )
    q = rows(store, "SELECT source_row, reason FROM quarantine ORDER BY source_row")
    assert q[0][0] == 9 and q[0][1].startswith("wrong column count")
    assert q[1] == (12, "unparseable timestamp: '143322x'")

    items = dict(
        (r[0], r[1:]) for r in rows(store, "SELECT item_id, category_id, category_path FROM items")
    )
    assert items == {
        "355908": ("1277", "1490 > 312 > 1277"),
        "248676": ("1277", "1490 > 312 > 1277"),
        "356475": ("570", "9 > 570"),  # the cycle 570 -> 9 -> 570 stops
        "318965": ("9999", None),
        "460429": ("1338", None),
    }
    ev = rows(
        store, "SELECT source_row, item_id, epoch(ts)::BIGINT, behavior, category_id FROM events ORDER BY source_row"
    )
    assert ev[0] == (2, "355908", 1433221332, "view", "1277")  # milliseconds -> seconds
    assert [(r[0], r[3]) for r in ev if r[3] != "view"] == [(6, "buy"), (8, "cart"), (11, "cart")]
    assert dict((r[0], r[4]) for r in ev)[6] == "570"
    assert dict((r[0], r[4]) for r in ev)[5] is None  # item 253185 has no categoryid property


def test_retailrocket_options(tmp_path):
    side = tmp_path / "side"
    _retailrocket(side)
    alone = tmp_path / "alone"
    alone.mkdir()
    events = write(alone / "events.csv", RR_EVENTS)
    store = tmp_path / "s.duckdb"
    props = f"{side / 'item_properties_part1.csv'};{side / 'item_properties_part2.csv'}"
    res = ingest_file(store, events, "retailrocket", "a", options={"properties": props})  # no tree: no paths
    assert res.items_ingested == 5
    assert rows(store, "SELECT count(category_path), count(category_id) FROM items WHERE dataset = 'a'") == [(0, 5)]
    res = ingest_file(
        store, events, "retailrocket", "b", options={"properties": props, "tree": str(side / "category_tree.csv")}
    )
    assert rows(store, "SELECT category_path FROM items WHERE dataset = 'b' AND item_id = '355908'") == [
        ("1490 > 312 > 1277",)
    ]
    # Without side files (none beside, none named) events still load, without categories.
    res = ingest_file(store, events, "retailrocket", "c")
    assert res.items_ingested == 0 and res.rows_ingested == 9


def test_category_paths_guard_cycles():
    paths, cyclic = category_paths({"a": None, "b": "a", "c": "b", "x": "y", "y": "x", "s": "s"})
    assert paths["c"] == "a > b > c" and paths["a"] == "a"
    assert paths["x"] == "y > x" and paths["s"] == "s"
    assert sorted(cyclic) == ["s", "x", "y"]


# ---------------------------------------------------------------------------------------
# Wrong formats fail fast, naming file and line, and leave the store as it was


def test_wrong_format_fails_fast_and_leaves_store_unchanged(tmp_path):
    store = tmp_path / "s.duckdb"
    reviews = write(tmp_path / "reviews.json", REVIEWS_2018)
    ingest_file(store, reviews, "amazon", "base")
    before = snapshot(store)

    tsv = write(tmp_path / "train.csv", ["user_id\titem_id\ttime", "2177\t3\t965779200"])
    with pytest.raises(FormatMismatch, match=r"train\.csv, line 1: expected Amazon review JSON lines") as e:
        ingest_file(store, tsv, "amazon", "x")
    assert e.value.path == str(tsv) and e.value.line == 1

    with pytest.raises(FormatMismatch, match=r"reviews\.json, line 1: expected a tab-separated header"):
        ingest_file(store, reviews, "rechorus", "x")

    meta = write(tmp_path / "meta.json", META_2018)
    with pytest.raises(FormatMismatch, match=r"meta\.json, line 1.*--option meta"):
        ingest_file(store, meta, "amazon", "x")  # metadata given as the review file
    with pytest.raises(FormatMismatch, match=r"reviews\.json, line 1: expected Amazon metadata"):
        ingest_file(store, reviews, "amazon", "x", options={"meta": str(reviews)})
    with pytest.raises(FormatMismatch, match=r"train\.csv, line 1: expected Amazon metadata"):
        ingest_file(store, reviews, "amazon", "x", options={"meta": str(tsv)})

    events = _retailrocket(tmp_path / "rr")
    with pytest.raises(FormatMismatch, match=r"item_properties_part1\.csv, line 1: expected a comma-separated header"):
        ingest_file(store, tmp_path / "rr" / "item_properties_part1.csv", "retailrocket", "x")
    with pytest.raises(FormatMismatch, match=r"category_tree\.csv, line 1"):
        ingest_file(store, events, "retailrocket", "x", options={"properties": str(tmp_path / "rr" / "category_tree.csv")})
    with pytest.raises(FormatMismatch, match=r"events\.csv, line 1: expected a tab-separated header"):
        ingest_file(store, events, "rechorus", "x")

    # Misspelt or invalid options fail before anything is written, too.
    with pytest.raises(ReaderOptionError, match=r"--option metadata.*meta, workers"):
        ingest_file(store, reviews, "amazon", "x", options={"metadata": str(meta)})
    with pytest.raises(ReaderOptionError, match="workers"):
        ingest_file(store, reviews, "amazon", "x", options={"workers": "0"})
    with pytest.raises(ReaderOptionError, match="--option item;"):
        ingest_file(store, tsv, "rechorus", "x", options={"item": "item_meta.csv"})
    with pytest.raises(ReaderOptionError, match="--map"):
        ingest_file(store, events, "retailrocket", "x", options={"map": "user_id=visitorid"})

    assert snapshot(store) == before


def test_formats_are_registered():
    for fmt in ("amazon", "rechorus", "retailrocket"):
        assert get_reader(fmt).format == fmt
