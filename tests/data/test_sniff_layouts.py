"""Any real log in without --format: the sniffer, the readers' layouts, and the refusals.

Variant files are built here from rows of the real files in ../shared/data, in the layouts real
copies of each dataset circulate in; each must ingest with no --format, every row accounted for.
"""

from __future__ import annotations

import csv
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from evorec.cli.main import app
from evorec.data.describe import describe_dataset
from evorec.data.forget import forget_users
from evorec.data.ingest import IngestError, ingest_file
from evorec.data.readers import FormatMismatch
from evorec.data.sniff import SniffError, sniff

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TAOBAO = SHARED / "taobao_userbehavior_head84k" / "UserBehavior_head.csv"
ML_RATINGS = SHARED / "movielens_latest_small" / "ratings.csv"
GROCERY = SHARED / "amazon_grocery_rechorus" / "train.csv"

# The event file of every dataset in ../shared/data and the format the sniffer must name.
SHARED_EVENT_FILES = {
    "taobao_userbehavior_head84k/UserBehavior_head.csv": "taobao",
    "tianchi_mobile2014_sample2k/sample_user_behavior.csv": "tianchi-mobile",
    "taobao_userbehavior_enriched_tianchi216549/UserBehavior_enriched.csv": "tianchi-216549",
    "amazon_grocery_rechorus/train.csv": "rechorus",
    "amazon_s3rec_seq/Beauty.txt": "s3rec",
    "dunnhumby_completejourney_sample/transactions_sample.csv": "completejourney",
    "sasrec_bert4rec_benchmarks/SASRec_Video.txt": "sasrec",
    "sasrec_bert4rec_benchmarks/BERT4Rec_beauty.txt": "sasrec",
    "movielens_latest_small/ratings.csv": "movielens-csv",
    "movielens_100k_recbole/ml-100k.inter": "recbole",
    "diginetica_sample_srgnn/sample_train-item-views.csv": "diginetica",
    "yoochoose_100k_sessionrec/yoochoose-clicks-100k_train_full.txt": "yoochoose",
}
needs_shared = pytest.mark.skipif(not TAOBAO.exists(), reason="../shared/data not present")


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("EVOREC_SECRET", "test-secret")


def _rows(path: Path, n: int, delimiter: str = ",", skip_header: bool = False) -> list[list[str]]:
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.reader(f, delimiter=delimiter)
        if skip_header:
            next(r)
        for row in r:
            out.append(row)
            if len(out) == n:
                break
    return out


def _write(path: Path, header: list[str] | None, rows: list[list], delimiter: str = ",", opener=open) -> Path:
    with opener(path, "wt", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


def _ingest_auto(tmp_path: Path, source: Path, fmt: str, layout_has: str, **kw):
    """Sniff names ``fmt``; ingest without --format reads every row; returns (result, store)."""
    s = sniff(source, kw.get("options"))
    assert s.certain and s.recognised is not None, s.summary()
    assert s.recognised.format == fmt, s.summary()
    store = tmp_path / "s.duckdb"
    res = ingest_file(store, source, None, **kw)
    assert res.format == fmt and res.sniffed
    assert layout_has in res.layout, res.layout
    assert res.rows_ingested + res.rows_quarantined == res.rows_read > 0
    return res, store


def _q(store: Path, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------------------------------
# The sniffer on every shared dataset


@needs_shared
@pytest.mark.parametrize("rel", sorted(SHARED_EVENT_FILES))
def test_sniffer_names_the_format_of_every_shared_dataset(rel):
    s = sniff(SHARED / rel)
    assert s.certain, s.summary()
    assert s.recognised is not None and s.recognised.format == SHARED_EVENT_FILES[rel]
    assert "--format" not in s.command()  # the file needs none


@needs_shared
@pytest.mark.parametrize("rel", ["movielens_latest_small/ratings.csv", "diginetica_sample_srgnn/sample_train-item-views.csv"])
def test_shared_files_ingest_without_format(tmp_path, rel):
    _ingest_auto(tmp_path, SHARED / rel, SHARED_EVENT_FILES[rel], "")


# ---------------------------------------------------------------------------------------
# Tmall IJCAI-15 variants (rows from Taobao: the same Alibaba ids and categories)

ACTION = {"pv": "0", "cart": "1", "buy": "2", "fav": "3"}


def _tmall_rows(n: int) -> list[dict]:
    out = []
    for u, i, c, b, t in _rows(TAOBAO, n):
        d = datetime.fromtimestamp(int(t), tz=timezone.utc)
        out.append({
            "user_id": u, "item_id": i, "cat_id": c, "merchant_id": str(int(i) % 997), "brand_id": str(int(i) % 89),
            "month": str(d.month), "day": str(d.day), "time_stamp": f"{d.month:02d}{d.day:02d}", "action": ACTION[b],
            "age_range": str(int(u) % 8), "gender": str(int(u) % 3), "province": f"p{int(u) % 31}",
        })
    return out


@needs_shared
def test_tmall_month_day_action_profile_layout(tmp_path):
    """The issue's file: month/day, `action`, profile columns joined in (users table, merchant in items)."""
    header = ["user_id", "item_id", "cat_id", "merchant_id", "brand_id", "month", "day", "action", "age_range", "gender", "province"]
    rows = _tmall_rows(3000)
    src = _write(tmp_path / "user_log.csv", header, [[r[h] for h in header] for r in rows])
    res, store = _ingest_auto(tmp_path, src, "tmall", "month/day")
    assert "action" in res.layout and "profile" in res.layout
    assert res.rows_quarantined == 0 and res.rows_ingested == 3000
    users = {r["user_id"] for r in rows}
    assert res.users_ingested == len(users)
    # Pseudonymised like the events: the same ids in both tables, none of them raw.
    assert _q(store, "SELECT count(*) FROM users WHERE user_id NOT IN (SELECT user_id FROM events)") == [(0,)]
    assert _q(store, "SELECT count(*) FROM users WHERE user_id IN (SELECT unnest(?))", [sorted(users)]) == [(0,)]
    one = rows[0]
    got = _q(store, "SELECT u.age_range, u.gender, u.region FROM users u JOIN events e USING (user_id) "
                    "WHERE e.source_row = 2")
    assert got == [(one["age_range"], one["gender"], one["province"])]
    assert _q(store, "SELECT merchant, brand FROM items WHERE item_id = ?", [one["item_id"]]) == [(one["merchant_id"], one["brand_id"])]
    # 2015 assumed (the file has no year); the date is the row's month/day.
    ts = _q(store, "SELECT strftime(ts, '%Y-%m-%d') FROM events WHERE source_row = 2")[0][0]
    assert ts == f"2015-{int(one['month']):02d}-{int(one['day']):02d}"
    assert describe_dataset(store, "user_log")["user_profiles"] == len(users)
    # Forgotten with the events.
    report = forget_users([rows[0]["user_id"]], store)
    assert report["tables"].get("users") == 1
    assert _q(store, "SELECT count(*) FROM users") == [(len(users) - 1,)]


@needs_shared
def test_tmall_official_user_log_format1(tmp_path):
    header = ["user_id", "item_id", "cat_id", "seller_id", "brand_id", "time_stamp", "action_type"]
    rows = _tmall_rows(500)
    src = _write(tmp_path / "user_log_format1.csv", header,
                 [[r["user_id"], r["item_id"], r["cat_id"], r["merchant_id"], r["brand_id"], r["time_stamp"], r["action"]] for r in rows])
    res, store = _ingest_auto(tmp_path, src, "tmall", "time_stamp (MMDD)", options={"year": "2016"})
    assert res.rows_ingested == 500 and res.users_ingested == 0
    assert _q(store, "SELECT DISTINCT year(ts) FROM events") == [(2016,)]


# ---------------------------------------------------------------------------------------
# Taobao UserBehavior variants


@needs_shared
def test_taobao_with_a_header_any_order_extra_column(tmp_path):
    rows = _rows(TAOBAO, 2000)
    header = ["Timestamp", "User_ID", "Behavior_type", "Item_ID", "Category_ID", "Datetime"]
    out = [[t, u, b, i, c, datetime.fromtimestamp(int(t), tz=timezone.utc).isoformat()] for u, i, c, b, t in rows]
    src = _write(tmp_path / "UserBehavior_kaggle.csv", header, out)
    res, store = _ingest_auto(tmp_path, src, "taobao", "with a header", pseudonymize=False)
    assert res.rows_ingested == 2000
    u, i, c, b, t = rows[0]
    assert _q(store, "SELECT user_id, item_id, category_id, behavior, epoch(ts)::BIGINT FROM events WHERE source_row = 2") == [
        (u, i, c, {"pv": "view"}.get(b, b), int(t))
    ]


@needs_shared
def test_taobao_headerless_gzipped(tmp_path):
    src = _write(tmp_path / "UserBehavior.csv.gz", None, _rows(TAOBAO, 1000), opener=gzip.open)
    res, _ = _ingest_auto(tmp_path, src, "taobao", "no header")
    assert res.rows_ingested == 1000


# ---------------------------------------------------------------------------------------
# RetailRocket variants (rows from Taobao: same shapes of ids and times)

RR_EVENT = {"pv": "view", "fav": "view", "cart": "addtocart", "buy": "transaction"}


@needs_shared
def test_retailrocket_official_and_resaved_copies(tmp_path):
    rows = _rows(TAOBAO, 1500)
    official = [[str(int(t) * 1000 + 123), u, RR_EVENT[b], i, str(k) if b == "buy" else ""] for k, (u, i, c, b, t) in enumerate(rows)]
    src = _write(tmp_path / "events.csv", ["timestamp", "visitorid", "event", "itemid", "transactionid"], official)
    res, store = _ingest_auto(tmp_path, src, "retailrocket", "events.csv", pseudonymize=False)
    assert res.rows_ingested == 1500
    assert _q(store, "SELECT epoch(ts)::BIGINT FROM events WHERE source_row = 2") == [(int(rows[0][4]),)]
    # Re-saved by pandas: an index column, another order, snake_case names, seconds.
    resaved = [[str(k), u, i, RR_EVENT[b], t] for k, (u, i, c, b, t) in enumerate(rows)]
    src2 = _write(tmp_path / "events_resaved.csv", ["", "visitor_id", "item_id", "event_type", "timestamp"], resaved)
    sub = tmp_path / "b"
    sub.mkdir()
    res2, store2 = _ingest_auto(sub, src2, "retailrocket", "visitor_id", pseudonymize=False)
    assert res2.rows_ingested == 1500
    assert _q(store2, "SELECT epoch(ts)::BIGINT, behavior FROM events WHERE source_row = 2") == [
        (int(rows[0][4]), {"view": "view", "addtocart": "cart", "transaction": "buy"}[RR_EVENT[rows[0][3]]])
    ]


# ---------------------------------------------------------------------------------------
# MovieLens variants (rows from ml-latest-small)


@needs_shared
@pytest.mark.parametrize(
    "name, fmt, layout, make",
    [
        ("ratings.dat", "movielens-dat", "", lambda rows: "".join("::".join(r) + "\n" for r in rows)),
        ("u.data", "movielens-100k", "", lambda rows: "".join("\t".join([r[0], r[1], str(int(float(r[2]))), r[3]]) + "\n" for r in rows)),
        ("ratings_noheader.csv", "movielens-csv", "without a header", lambda rows: "".join(",".join(r) + "\n" for r in rows)),
        ("ratings_snake.csv", "movielens-csv", "movie_id",
         lambda rows: "timestamp,movie_id,user_id,rating\n" + "".join(",".join([r[3], r[1], r[0], r[2]]) + "\n" for r in rows)),
    ],
)
def test_movielens_variants(tmp_path, name, fmt, layout, make):
    rows = _rows(ML_RATINGS, 1000, skip_header=True)
    src = tmp_path / name
    src.write_text(make(rows))
    res, store = _ingest_auto(tmp_path, src, fmt, layout, pseudonymize=False)
    assert res.rows_ingested == 1000
    u, i, r, t = rows[0]
    first_row = 1 if res.layout.endswith("header") or fmt != "movielens-csv" or "without" in res.layout else 2
    got = _q(store, "SELECT user_id, item_id, epoch(ts)::BIGINT FROM events ORDER BY source_row LIMIT 1")
    assert got == [(u, i, int(t))], first_row


# ---------------------------------------------------------------------------------------
# Amazon variants (rows from the ReChorus Grocery file, ids spelt as Amazon's)


def _asin(i: str) -> str:
    return "B" + i.zfill(9)


def _reviewer(u: str) -> str:
    return "A" + u.zfill(12)


@needs_shared
@pytest.mark.parametrize("variant", ["2014", "2018", "kaggle", "2023"])
def test_amazon_ratings_and_2023_reviews(tmp_path, variant):
    rows = _rows(GROCERY, 800, delimiter="\t", skip_header=True)
    data = [(_reviewer(u), _asin(i), str(float(int(u) % 5 + 1)), t) for u, i, t in rows]
    if variant == "2014":
        src = _write(tmp_path / "ratings_Grocery.csv", None, [list(r) for r in data])
        fmt, layout = "amazon-ratings", "user,item"
    elif variant == "2018":
        src = _write(tmp_path / "Grocery.csv", None, [[i, u, r, t] for u, i, r, t in data])
        fmt, layout = "amazon-ratings", "item,user"
    elif variant == "kaggle":
        src = _write(tmp_path / "ratings_Beauty.csv", ["UserId", "ProductId", "Rating", "Timestamp"], [list(r) for r in data])
        fmt, layout = "amazon-ratings", "header"
    else:
        src = tmp_path / "Grocery.jsonl"
        src.write_text("".join(json.dumps({"rating": float(r), "title": "t", "text": "x", "images": [], "asin": i,
                                           "parent_asin": i, "user_id": u, "timestamp": int(t) * 1000,
                                           "helpful_vote": 0, "verified_purchase": True}) + "\n" for u, i, r, t in data))
        fmt, layout = "amazon", "review"
    res, store = _ingest_auto(tmp_path, src, fmt, layout, pseudonymize=False)
    assert res.rows_ingested == 800
    u, i, r, t = data[0]
    assert _q(store, "SELECT user_id, item_id, value, epoch(ts)::BIGINT FROM events ORDER BY source_row LIMIT 1") == [
        (u, i, float(r), int(t))
    ]


# ---------------------------------------------------------------------------------------
# YOOCHOOSE's official .dat files (rows from session-rec's prepared YOOCHOOSE TSV)

YOOCHOOSE = SHARED / "yoochoose_100k_sessionrec" / "yoochoose-clicks-100k_train_full.txt"
DIGINETICA = SHARED / "diginetica_sample_srgnn" / "sample_train-item-views.csv"
CJ = SHARED / "dunnhumby_completejourney_sample"


def _iso_z(t: str) -> str:
    """Unix seconds -> ``2014-04-07T10:51:09.277Z``, as yoochoose-clicks.dat writes its times."""
    return datetime.fromtimestamp(float(t), tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@needs_shared
def test_yoochoose_official_clicks_and_buys_dat(tmp_path):
    rows = _rows(YOOCHOOSE, 1200, delimiter="\t", skip_header=True)
    cats = ("0", "S", "3", "2089325493")  # unknown, special offer, a category, a brand id
    clicks = _write(tmp_path / "yoochoose-clicks.dat", None,
                    [[s, _iso_z(t), i, cats[k % 4]] for k, (s, i, t) in enumerate(rows)])
    res, store = _ingest_auto(tmp_path, clicks, "yoochoose", "clicks", pseudonymize=False)
    assert (res.rows_ingested, res.rows_quarantined) == (1200, 0)
    got = _q(store, "SELECT source_row, user_id, item_id, epoch(ts)::BIGINT, behavior, category_id FROM events "
                    "WHERE source_row <= 4 ORDER BY source_row")
    assert got == [(k + 1, rows[k][0], rows[k][1], int(float(rows[k][2])), "click", [None, "S", "3", "2089325493"][k])
                   for k in range(4)]
    # Buys: a purchase in some of the sessions (price 0 = unknown, as in the real file), quantity not kept.
    bought = rows[::7]
    buys = _write(tmp_path / "yoochoose-buys.dat", None,
                  [[s, _iso_z(t), i, str((k % 3) * 1046), str(k % 4)] for k, (s, i, t) in enumerate(bought)])
    sub = tmp_path / "b"
    sub.mkdir()
    res, store = _ingest_auto(sub, buys, "yoochoose", "buys", pseudonymize=False)
    assert (res.rows_ingested, res.rows_quarantined) == (len(bought), 0)
    s, i, t = bought[1]
    assert _q(store, "SELECT user_id, item_id, epoch(ts)::BIGINT, behavior, value FROM events WHERE source_row = 2") == [
        (s, i, int(float(t)), "buy", 1046.0)
    ]


@needs_shared
def test_diginetica_without_a_header_reads_like_with_one(tmp_path):
    """Some preprocessors drop the header of train-item-views.csv: same events either way."""
    rows = _rows(DIGINETICA, 2000, delimiter=";", skip_header=True)
    src = _write(tmp_path / "train-item-views.csv", None, rows, delimiter=";")
    res, store = _ingest_auto(tmp_path, src, "diginetica", "without a header", pseudonymize=False)
    assert res.rows_ingested + res.rows_quarantined == 2000 and res.rows_ingested > 1900
    with_header = _write(tmp_path / "h.csv", ["sessionId", "userId", "itemId", "timeframe", "eventdate"], rows, delimiter=";")
    sub = tmp_path / "h"
    sub.mkdir()
    res_h, store_h = _ingest_auto(sub, with_header, "diginetica", "with a header", pseudonymize=False)
    assert (res_h.rows_ingested, res_h.rows_quarantined) == (res.rows_ingested, res.rows_quarantined)
    sql = "SELECT user_id, item_id, epoch(ts)::BIGINT FROM events ORDER BY source_row"
    headerless = _q(store, sql)
    assert headerless == _q(store_h, sql)
    sess, user, item, frame, day = rows[0]
    start = int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp())
    assert headerless[0] == ("s" + sess if user == "NA" else user, item, start + int(frame) // 1000)


# ---------------------------------------------------------------------------------------
# Tmall: the year in the file (time_stamp as YYYYMMDD, or a year column beside month/day)


@needs_shared
def test_tmall_yyyymmdd_time_stamp(tmp_path):
    rows = _tmall_rows(600)
    header = ["user_id", "item_id", "cat_id", "seller_id", "brand_id", "time_stamp", "action_type"]
    out = [[r["user_id"], r["item_id"], r["cat_id"], r["merchant_id"], r["brand_id"],
            "2017" + r["time_stamp"], r["action"]] for r in rows]  # Taobao's rows are of 2017
    src = _write(tmp_path / "user_log_yyyymmdd.csv", header, out)
    s = sniff(src)
    assert s.certain and not s.recognised.notes  # no year assumed: the file has it
    res, store = _ingest_auto(tmp_path, src, "tmall", "time_stamp", options={"year": "2015"})  # the year option loses
    assert (res.rows_ingested, res.rows_quarantined) == (600, 0)
    got = _q(store, "SELECT strftime(ts, '%Y%m%d') FROM events ORDER BY source_row")
    assert [g for (g,) in got] == ["2017" + r["time_stamp"] for r in rows]


@needs_shared
def test_tmall_year_column_beside_month_day(tmp_path):
    rows = _tmall_rows(600)
    header = ["user_id", "item_id", "cat_id", "merchant_id", "brand_id", "year", "month", "day", "action"]
    years = ["2016", "2017", ""]  # a blank year falls back to --option year (default 2015)
    out = [[r["user_id"], r["item_id"], r["cat_id"], r["merchant_id"], r["brand_id"], years[k % 3], r["month"], r["day"],
            r["action"]] for k, r in enumerate(rows)]
    src = _write(tmp_path / "user_log_year.csv", header, out)
    s = sniff(src)
    assert s.certain and s.recognised.found.get("year") == "year" and not s.recognised.notes
    res, store = _ingest_auto(tmp_path, src, "tmall", "month/day")
    assert (res.rows_ingested, res.rows_quarantined) == (600, 0)
    got = [g for (g,) in _q(store, "SELECT strftime(ts, '%Y-%m-%d') FROM events ORDER BY source_row")]
    want = [f"{years[k % 3] or '2015'}-{int(r['month']):02d}-{int(r['day']):02d}" for k, r in enumerate(rows)]
    assert got == want


# ---------------------------------------------------------------------------------------
# RetailRocket re-saved with date-time text (pandas.to_datetime, then to_csv)


@needs_shared
def test_retailrocket_date_time_text_timestamps(tmp_path):
    rows = _rows(TAOBAO, 900)

    def when(k: int, t: str) -> str:
        d = datetime.fromtimestamp(int(t), tz=timezone.utc).replace(tzinfo=None)
        return (d.isoformat(sep=" "), d.isoformat(sep=" ") + ".123", d.isoformat())[k % 3]  # s, ms, ISO 'T'

    out = [[when(k, t), u, RR_EVENT[b], i, str(k) if b == "buy" else ""] for k, (u, i, c, b, t) in enumerate(rows)]
    src = _write(tmp_path / "events.csv", ["timestamp", "visitorid", "event", "itemid", "transactionid"], out)
    res, store = _ingest_auto(tmp_path, src, "retailrocket", "events.csv", pseudonymize=False)
    assert (res.rows_ingested, res.rows_quarantined) == (900, 0)
    got = _q(store, "SELECT user_id, epoch(ts)::BIGINT FROM events ORDER BY source_row")
    assert got == [(u, int(t)) for u, i, c, b, t in rows]


# ---------------------------------------------------------------------------------------
# Complete Journey: Dunnhumby's original transaction_data.csv + product.csv (rows from the sample)

ORIG_TX = ["household_key", "BASKET_ID", "DAY", "PRODUCT_ID", "QUANTITY", "SALES_VALUE", "STORE_ID", "RETAIL_DISC",
           "TRANS_TIME", "WEEK_NO", "COUPON_DISC", "COUPON_MATCH_DISC"]
ORIG_PRODUCT = ["PRODUCT_ID", "MANUFACTURER", "DEPARTMENT", "BRAND", "COMMODITY_DESC", "SUB_COMMODITY_DESC",
                "CURR_SIZE_OF_PRODUCT"]


@needs_shared
def test_completejourney_original_files_need_start_date(tmp_path):
    """The original release counts days: the sniffer names the format and asks for start_date."""
    tx = _rows(CJ / "transactions_sample.csv", 1500, skip_header=True)
    day1 = datetime(2017, 1, 1, tzinfo=timezone.utc)
    out, want = [], []
    for hh, store_id, basket, product, qty, sales, retail, coupon, match, week, stamp in tx:
        d = datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc)
        out.append([hh, basket, str((d - day1).days + 1), product, str(int(float(qty))), sales, store_id, retail,
                    f"{d.hour:02d}{d.minute:02d}", week, coupon, match])
        want.append((hh, product, int(d.replace(second=0).timestamp()), float(sales), basket))
    src = _write(tmp_path / "transaction_data.csv", ORIG_TX, out)
    bought = {r[3] for r in tx}
    products = [r for r in _rows(CJ / "products.csv", 200_000, skip_header=True) if r[0] in bought]
    _write(tmp_path / "product.csv", ORIG_PRODUCT, products)

    s = sniff(src)
    assert not s.certain and s.recognised is not None and s.recognised.format == "completejourney"
    assert s.needs == ["start_date"] and "needs --option start_date=..." in s.summary()
    assert "--format completejourney --option start_date=..." in s.command()
    store = tmp_path / "s.duckdb"
    with pytest.raises(IngestError, match="start_date"):
        ingest_file(store, src, None)
    assert not store.exists()

    res, store = _ingest_auto(tmp_path, src, "completejourney", "transaction_data.csv",
                              options={"start_date": "2017-01-01"}, pseudonymize=False)
    assert s.recognised.layout.startswith("transaction_data.csv")
    assert (res.rows_ingested, res.rows_quarantined) == (1500, 0)
    listed = {p[0] for p in products}  # a few products of the sample are missing from its product table
    assert res.items_ingested == len(products)
    assert res.events_without_item_metadata == sum(1 for r in tx if r[3] not in listed)
    got = _q(store, "SELECT user_id, item_id, epoch(ts)::BIGINT, value, basket_id FROM events ORDER BY source_row")
    assert got == want
    p = products[0]
    assert _q(store, "SELECT category_id FROM items WHERE item_id = ?", [p[0]]) == [(p[4] or None,)]


# ---------------------------------------------------------------------------------------
# User profiles in a side file beside the events -> the users table (pseudonymised, forgotten)

ML1M_USERS = SHARED / "movielens_1m_metadata_only" / "users.dat"
RECBOLE = SHARED / "movielens_100k_recbole"


def _profiles_like_events(store: Path, raw_ids: set[str]) -> None:
    """Every profile belongs to a user with events, under the same pseudonym; no raw id stored."""
    assert _q(store, "SELECT count(*) FROM users WHERE user_id NOT IN (SELECT user_id FROM events)") == [(0,)]
    assert _q(store, "SELECT count(*) FROM users WHERE user_id IN (SELECT unnest(?))", [sorted(raw_ids)]) == [(0,)]


@needs_shared
def test_tmall_user_info_beside_the_log(tmp_path):
    rows = _tmall_rows(800)
    header = ["user_id", "item_id", "cat_id", "seller_id", "brand_id", "time_stamp", "action_type"]
    src = _write(tmp_path / "user_log_format1.csv", header,
                 [[r["user_id"], r["item_id"], r["cat_id"], r["merchant_id"], r["brand_id"], r["time_stamp"], r["action"]]
                  for r in rows])
    users = sorted({r["user_id"] for r in rows})
    # user_info_format1.csv lists every user of the release: one more here, without events.
    info = [[u, str(int(u) % 9), str(int(u) % 3)] for u in users] + [["999999999", "3", "1"]]
    _write(tmp_path / "user_info_format1.csv", ["user_id", "age_range", "gender"], info)
    res, store = _ingest_auto(tmp_path, src, "tmall", "time_stamp")
    assert res.users_ingested == len(users)
    _profiles_like_events(store, set(users) | {"999999999"})
    u = rows[0]["user_id"]
    got = _q(store, "SELECT u.age_range, u.gender, u.region FROM users u JOIN events e USING (user_id) WHERE e.source_row = 2")
    assert got == [(str(int(u) % 9), str(int(u) % 3), None)]
    report = forget_users([u], store)
    assert report["tables"].get("users") == 1 and _q(store, "SELECT count(*) FROM users") == [(len(users) - 1,)]
    # --option users=none: no profiles read; a profile file with another header: refused, nothing written.
    sub = tmp_path / "none"
    sub.mkdir()
    res2 = ingest_file(sub / "s.duckdb", src, None, options={"users": "none"})
    assert res2.users_ingested == 0
    bad = _write(tmp_path / "bad_info.csv", ["uid", "age", "sex"], info)
    with pytest.raises(FormatMismatch, match="user_info_format1.csv header"):
        ingest_file(sub / "t.duckdb", src, None, options={"users": str(bad)})
    assert not (sub / "t.duckdb").exists() or _q(sub / "t.duckdb", "SELECT count(*) FROM events") == [(0,)]


@needs_shared
def test_movielens_1m_users_dat_beside_ratings_dat(tmp_path):
    """ML-1M's users.dat (the real file) beside a ratings.dat of ml-latest-small rows (ids 1..610)."""
    rows = _rows(ML_RATINGS, 1500, skip_header=True)
    src = tmp_path / "ratings.dat"
    src.write_text("".join("::".join([u, i, str(int(float(r))), t]) + "\n" for u, i, r, t in rows))
    (tmp_path / "users.dat").write_bytes(ML1M_USERS.read_bytes())
    res, store = _ingest_auto(tmp_path, src, "movielens-dat", "")
    users = {r[0] for r in rows}
    assert res.users_ingested == len(users)  # not the 6,040 of users.dat: only users with events
    _profiles_like_events(store, users)
    first = ML1M_USERS.read_text().splitlines()[0].split("::")  # 1::F::1::10::48067
    got = _q(store, "SELECT u.age_range, u.gender, u.region FROM users u JOIN events e USING (user_id) WHERE e.source_row = 1")
    assert rows[0][0] == first[0] and got == [(first[2], first[1], first[4])]
    assert forget_users([first[0]], store)["tables"].get("users") == 1


@needs_shared
def test_recbole_user_file_beside_the_inter_file(tmp_path):
    """The shared ml-100k.inter with its ml-100k.item and ml-100k.user: every user's profile."""
    res, store = _ingest_auto(tmp_path, RECBOLE / "ml-100k.inter", "recbole", "")
    assert (res.rows_ingested, res.rows_quarantined, res.items_ingested, res.users_ingested) == (100_000, 0, 1682, 943)
    raw = _rows(RECBOLE / "ml-100k.user", 2000, delimiter="\t", skip_header=True)
    _profiles_like_events(store, {r[0] for r in raw})
    u, age, gender, occupation, zip_code = raw[0]
    mine = _q(store, "SELECT age_range, gender, region FROM users WHERE age_range = ? AND gender = ? AND region = ?",
              [age, gender, zip_code])
    assert mine == [(age, gender, zip_code)]
    report = forget_users([u], store)
    assert report["tables"].get("users") == 1 and _q(store, "SELECT count(*) FROM users") == [(942,)]


# ---------------------------------------------------------------------------------------
# Unknown layouts: the proposal, its evidence, and its exact command


def test_unknown_header_gets_a_map_proposal_that_reads_it(tmp_path):
    """REES46-style export: nothing recognises it; the proposed --map and options read every row."""
    header = ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id", "user_session"]
    rows = [
        ["2019-10-01 00:00:00 UTC", "view", "44600062", "2103807459595387724", "", "shiseido", "35.79", "541312140", "72d7"],
        ["2019-10-01 00:00:01 UTC", "cart", "3900821", "2053013552326770905", "appliances", "aqua", "33.20", "554748717", "9333"],
        ["2019-10-01 00:00:02 UTC", "purchase", "17200506", "2053013559792632471", "furniture", "", "543.10", "519107250", "566c"],
    ] * 20
    src = _write(tmp_path / "2019-Oct.csv", header, rows)
    s = sniff(src)
    assert not s.certain and s.proposal is not None
    p = s.proposal
    assert p.mapping == {"user_id": "user_id", "item_id": "product_id", "ts": "event_time", "behavior": "event_type",
                         "category_id": "category_id", "value": "price"}
    assert p.options == {"ts_format": "%Y-%m-%d %H:%M:%S UTC", "behavior_map": "purchase:buy"}
    assert any(e.field == "ts" and e.samples for e in p.evidence)
    cmd = s.command()
    assert "--format csv --map user_id=user_id,item_id=product_id,ts=event_time" in cmd and "ts_format=" in cmd
    # Without --format: stopped, nothing written, the proposal in the message.
    store = tmp_path / "s.duckdb"
    with pytest.raises(IngestError, match="--map") as info:
        ingest_file(store, src, None)
    assert "event_time" in str(info.value)
    assert not store.exists()
    # The proposal as given reads every row.
    options = {"map": ",".join(f"{k}={v}" for k, v in p.mapping.items()), **p.options}
    res = ingest_file(store, src, "csv", options=options)
    assert res.rows_ingested == 60 and res.rows_quarantined == 0


# ---------------------------------------------------------------------------------------
# Bad input


def _no_store(store: Path) -> None:
    assert not store.exists()


def test_headerless_file_matching_nothing_shows_its_first_rows(tmp_path):
    src = tmp_path / "mystery.csv"
    src.write_text("".join(f"x{i},{i * 7},hello world,{i % 3}\n" for i in range(50)))
    s = sniff(src)
    assert not s.certain and not s.has_header and "no header" in s.summary()
    store = tmp_path / "s.duckdb"
    with pytest.raises(IngestError) as info:
        ingest_file(store, src, None)
    msg = str(info.value)
    assert "no header" in msg and "x0 | 0 | hello world | 0" in msg
    _no_store(store)


def test_header_fitting_two_formats_equally_asks_for_format(tmp_path):
    src = tmp_path / "both.csv"
    src.write_text("userId,movieId,rating,timestamp,visitorid,event,itemid\n"
                   + "".join(f"{i},{i},4.0,1260759144,{i},view,{i}\n" for i in range(30)))
    s = sniff(src)
    assert s.ambiguous == ["movielens-csv", "retailrocket"]
    assert "--format" in s.summary()
    store = tmp_path / "s.duckdb"
    with pytest.raises(IngestError, match="'movielens-csv' and 'retailrocket'"):
        ingest_file(store, src, None)
    _no_store(store)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("garbage.bin", bytes(range(256)) * 40, "binary data"),
        ("empty.csv", b"", "empty file"),
        ("blank.csv", b"\n\n  \n", "empty file"),
        ("header_only.csv", b"user_id,item_id,cat_id,merchant_id,brand_id,month,day,action\n", "only"),
        ("header_only.gz", gzip.compress(b"userId,movieId,rating,timestamp\n"), "only"),
    ],
)
def test_unusable_files_fail_in_one_line_and_write_nothing(tmp_path, name, content, match):
    src = tmp_path / name
    src.write_bytes(content)
    with pytest.raises(SniffError, match=match) as info:
        sniff(src)
    assert "\n" not in str(info.value)
    store = tmp_path / "s.duckdb"
    with pytest.raises(SniffError, match=match):
        ingest_file(store, src, None)
    _no_store(store)


@needs_shared
def test_wrong_format_refusal_lists_columns_closest_layouts_and_a_map(tmp_path):
    """A file given the wrong --format: the error says what the file is and what would read it."""
    store = tmp_path / "s.duckdb"
    with pytest.raises(FormatMismatch) as info:
        ingest_file(store, ML_RATINGS, "tmall")
    msg = str(info.value)
    assert "columns found: userId, movieId, rating, timestamp" in msg
    assert "format 'movielens-csv'" in msg
    # A near miss of a known layout: its closest layouts and a proposed --map.
    src = tmp_path / "near.csv"
    src.write_text("user_id,item_id,cat_id,action_type,when\n" + "".join(f"{i},{i},3,0,1511544070\n" for i in range(30)))
    with pytest.raises(FormatMismatch) as info:
        ingest_file(store, src, "tmall")
    msg = str(info.value)
    assert "closest layout: tmall" in msg and "missing ['time_stamp (or month and day)']" in msg
    assert "--map user_id=user_id,item_id=item_id,ts=when" in msg
    _no_store(store)


# ---------------------------------------------------------------------------------------
# CLI


@needs_shared
def test_cli_sniff_and_ingest_without_format(tmp_path):
    cli = CliRunner()
    r = cli.invoke(app, ["data", "sniff", str(TAOBAO), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["certain"] and doc["recognised"]["format"] == "taobao" and doc["command"].startswith("evorec data ingest")
    src = _write(tmp_path / "t.csv", None, _rows(TAOBAO, 300))
    r = cli.invoke(app, ["data", "ingest", str(src), "--store", str(tmp_path / "s.duckdb")])
    assert r.exit_code == 0, r.output
    assert "recognised" in r.output and "format 'taobao'" in r.output and "ingested 300 events" in r.output
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n3,4\n")
    r = cli.invoke(app, ["data", "sniff", str(bad)])
    assert r.exit_code == 1 and "no known layout" in r.output
