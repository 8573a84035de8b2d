"""Readers for order-only sequence files, MovieLens/RecBole and session logs (Diginetica, YOOCHOOSE).

Real files come from the shared data folder beside the repository (skipped if absent); files
that are not there are written here in their exact official formats, each with bad rows that
must end in quarantine with their line numbers and reasons.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import pytest

from evorec.data.ingest import ingest_file
from evorec.data.readers import FormatMismatch
from evorec.utils.privacy import Pseudonymizer

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SECRET = "test-secret"
pseudo = Pseudonymizer(SECRET.encode())


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("EVOREC_SECRET", SECRET)


def real(rel: str) -> Path:
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"real data file {rel} not found under {DATA} (the shared data folder beside the repo)")
    return path


def ingest(store: Path, src: Path, fmt: str, dataset: str = "d", **options):
    r = ingest_file(store, src, fmt, dataset, options=options or None)
    assert r.rows_ingested + r.rows_quarantined == r.rows_read
    return r


def sql(store: Path, query: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


def counts(store: Path, dataset: str = "d") -> tuple[int, int, int]:
    """(events, users, items) of a dataset."""
    return sql(
        store, "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id) FROM events WHERE dataset = ?", [dataset]
    )[0]


def time_kind(store: Path, dataset: str = "d") -> str:
    return sql(store, "SELECT time_kind FROM datasets WHERE dataset = ?", [dataset])[0][0]


def history(store: Path, user: str, dataset: str = "d") -> list[tuple]:
    """(item, unix ts, behavior, category, value, source_row) of a raw user id, in time order."""
    return sql(
        store,
        "SELECT item_id, epoch(ts)::BIGINT, behavior, category_id, value, source_row FROM events "
        "WHERE dataset = ? AND user_id = ? ORDER BY ts, source_row",
        [dataset, pseudo(user)],
    )


def quarantine(store: Path, dataset: str = "d") -> list[tuple]:
    return sql(store, "SELECT source_row, raw, reason FROM quarantine WHERE dataset = ? ORDER BY source_row, reason", [dataset])


def snapshot(store: Path) -> dict:
    if not store.exists():
        return {}
    tables = ("datasets", "ingests", "events", "items", "quarantine")
    return {t: sql(store, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def assert_fails_fast(store: Path, src: Path, fmt: str, line: int | None = 1, match: str | None = None, **options):
    before = snapshot(store)
    with pytest.raises(FormatMismatch) as exc:
        ingest_file(store, src, fmt, "wrong", options=options or None)
    assert str(src) in str(exc.value)
    if line is not None:
        assert exc.value.line == line and f"line {line}" in str(exc.value)
    if match is not None:
        assert match in str(exc.value)
    assert snapshot(store) == before
    return exc.value


# ---------------------------------------------------------------------------------------
# Order-only sequence files.


def test_s3rec_beauty_real(tmp_path):
    src = real("amazon_s3rec_seq/Beauty.txt")
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "s3rec")  # Beauty_item2attributes.json is found beside it
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (198502, 198502, 0, 12101)
    assert counts(store) == (198502, 22363, 12101)
    assert time_kind(store) == "ordinal"
    assert quarantine(store) == []
    # Line 1 is "1 1 2 3 4 5": positions 1..5 as ts seconds after the epoch, behaviour rate.
    h = history(store, "1")
    assert [(e[0], e[1], e[2], e[5]) for e in h] == [(str(i), i, "rate", 1) for i in range(1, 6)]
    assert all(e[4] is None for e in h)
    # Item 4's attributes are [1, 2, 3]: category 1 (the first), path "1|2|3", joined into events.
    assert h[3][3] == "1"
    assert sql(store, "SELECT category_id, category_path FROM items WHERE item_id = '4'") == [("1", "1|2|3")]
    last = history(store, "22363")
    assert [e[0] for e in last] == ["6466", "9744", "3025", "10607", "10487"] and last[-1][1] == 5
    assert last[-1][5] == 22363
    assert sql(store, "SELECT count(*) FROM events WHERE category_id IS NULL") == [(0,)]


def test_s3rec_behavior_option_and_no_attributes(tmp_path):
    src = real("amazon_s3rec_seq/Beauty.txt")
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "s3rec", behavior="buy", attributes="none")
    assert r.items_ingested == 0
    assert sql(store, "SELECT DISTINCT behavior FROM events") == [("buy",)]
    assert sql(store, "SELECT count(*) FROM events WHERE category_id IS NOT NULL") == [(0,)]


@pytest.mark.parametrize(
    ("rel", "users", "items", "events", "first", "last", "n_first_user"),
    [
        ("sasrec_bert4rec_benchmarks/SASRec_Video.txt", 31013, 23715, 287107, ("1", "6393", "19263"), ("31013", "23512"), 9),
        ("sasrec_bert4rec_benchmarks/BERT4Rec_beauty.txt", 40226, 54542, 353962, ("1", "1", "42"), ("40226", "29458"), 42),
    ],
)
def test_sasrec_real(tmp_path, rel, users, items, events, first, last, n_first_user):
    src = real(rel)
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "sasrec")
    assert (r.rows_read, r.rows_quarantined) == (events, 0)
    assert counts(store) == (events, users, items)
    assert time_kind(store) == "ordinal"
    assert quarantine(store) == []
    h = history(store, first[0])
    assert len(h) == n_first_user
    assert (h[0][0], h[0][1], h[0][5]) == (first[1], 1, 1)
    assert (h[-1][0], h[-1][1]) == (first[2], n_first_user)
    hl = history(store, last[0])
    assert hl[-1][0] == last[1] and hl[-1][1] == len(hl) and hl[-1][5] == events


SASREC_FIXTURE = (
    "1 10\n"          # 1
    "2 20\n"          # 2
    "1 11\n"          # 3  user 1 again, interleaved with user 2
    "x 5\n"           # 4  non-integer user
    "2\n"             # 5  user without items
    "1 12 13\n"       # 6  three fields
    "3 y\n"           # 7  non-integer item
    "\n"              # 8  empty
    "2 21\n"          # 9
    "1 14\n"          # 10
    + "".join(f"{u} {100 + u}\n" for u in range(4, 14))  # 11..20: ten more users
    + "3 30"          # 21 no final newline
)


@pytest.mark.parametrize("compress", [False, True])
def test_sasrec_fixture_interleaved_and_bad_lines(tmp_path, compress):
    src = tmp_path / ("seq.txt.gz" if compress else "seq.txt")
    data = SASREC_FIXTURE.encode()
    src.write_bytes(gzip.compress(data) if compress else data)
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "sasrec")
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined) == (21, 16, 5)
    assert [(e[0], e[1], e[5]) for e in history(store, "1")] == [("10", 1, 1), ("11", 2, 3), ("14", 3, 10)]
    assert [(e[0], e[1]) for e in history(store, "2")] == [("20", 1), ("21", 2)]
    assert [(e[0], e[1], e[5]) for e in history(store, "3")] == [("30", 1, 21)]  # the bad line 7 takes no position
    assert quarantine(store) == [
        (4, "x 5", "non-integer user id: 'x'"),
        (5, "2", "user without items"),
        (6, "1 12 13", "wrong field count: expected 2 (user item), found 3"),
        (7, "3 y", "non-integer item id: 'y'"),
        (8, "", "empty line"),
    ]
    assert r.quarantine_reasons == {
        "non-integer user id": 1, "user without items": 1, "wrong field count": 1, "non-integer item id": 1, "empty line": 1,
    }


def test_s3rec_fixture_bad_tokens_and_lines(tmp_path):
    src = tmp_path / "Toy.txt"
    src.write_text(
        "1 5 6 x 7\n"      # 1: token 'x' quarantined alone, 5 6 7 kept at positions 1..3
        "2\n"              # 2: user without items
        "u 1 2\n"          # 3: non-integer user: the whole line
        "\n"               # 4: empty
        "3  8\t9 \r\n"     # 5: any whitespace, CRLF
        "4 1 2 3 4 5 6\n"  # 6
        "1 9\n"            # 7: user 1 again continues at position 4
    )
    (tmp_path / "Toy_item2attributes.json").write_text('{"5": [7, 8], "8": [], "9": [3]}')
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "s3rec")
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (16, 12, 4, 3)
    assert [(e[0], e[1], e[3], e[5]) for e in history(store, "1")] == [
        ("5", 1, "7", 1), ("6", 2, None, 1), ("7", 3, None, 1), ("9", 4, "3", 7),
    ]
    assert [(e[0], e[1], e[3]) for e in history(store, "3")] == [("8", 1, None), ("9", 2, "3")]
    assert quarantine(store) == [
        (1, "1 x", "non-integer item id: 'x' (token 4 of the line)"),
        (2, "2", "user without items"),
        (3, "u 1 2", "non-integer user id: 'u'"),
        (4, "", "empty line"),
    ]
    assert sql(store, "SELECT item_id, category_id, category_path FROM items ORDER BY item_id") == [
        ("5", "7", "7|8"), ("8", None, None), ("9", "3", "3"),
    ]


def test_seqtext_wrong_format_fails_fast(tmp_path):
    store = tmp_path / "s.duckdb"
    ok = tmp_path / "ok.txt"
    ok.write_text("1 2\n1 3\n")
    ingest(store, ok, "sasrec", dataset="ok")
    e = assert_fails_fast(store, real("amazon_s3rec_seq/Beauty.txt"), "sasrec", line=1, match="--format s3rec")
    assert "6 field(s)" in str(e)
    assert_fails_fast(store, real("sasrec_bert4rec_benchmarks/SASRec_Video.txt"), "s3rec", line=1, match="--format sasrec")
    assert_fails_fast(store, real("movielens_latest_small/ratings.csv"), "s3rec", line=1)
    with pytest.raises(Exception, match="behavior"):
        ingest_file(store, ok, "sasrec", "x", options={"behavior": "like"})


# ---------------------------------------------------------------------------------------
# MovieLens.

ML1M_RATINGS = (
    "1::1193::5::978300760\n"      # 1
    "1::661::3::978302109\n"       # 2
    "1::914::3::978301968\n"       # 3
    "1::3408::4::978300275\n"      # 4
    "1::2355::5::978824291\n"      # 5
    "2::1357::5::978298709\n"      # 6
    "2::3068::4::978299000\n"      # 7
    "1::1197\n"                    # 8  two fields
    "2::1537::x::978299620\n"      # 9  unparseable rating
    "2::647::3::yesterday\n"       # 10 unparseable timestamp
    "::1194::4::978298413\n"       # 11 missing user
    "\n"                           # 12 empty line
    "2::73::4::978299839\n"        # 13
)


def test_movielens_dat_fixture_with_real_movies(tmp_path):
    movies = real("movielens_1m_metadata_only/movies.dat")
    src = tmp_path / "ratings.dat"
    src.write_text(ML1M_RATINGS)
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "movielens-dat", movies=str(movies))
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (13, 8, 5, 3883)
    assert time_kind(store) == "unix"
    h = history(store, "1")
    assert (h[0][0], h[0][1], h[0][2], h[0][3], h[0][4]) == ("3408", 978300275, "rate", "Drama", 4.0)
    assert (h[-1][0], h[-1][1], h[-1][3], h[-1][4], h[-1][5]) == ("2355", 978824291, "Animation", 5.0, 5)
    assert [e[0] for e in history(store, "2")] == ["1357", "3068", "73"]
    assert [(row, reason.split(":")[0]) for row, _, reason in quarantine(store)] == [
        (8, "wrong column count"), (9, "unparseable value"), (10, "unparseable timestamp"), (11, "missing user_id"),
        (12, "empty line"),
    ]
    assert quarantine(store)[1][1] == "2::1537::x::978299620"
    # movies.dat is Latin-1: accents decoded, genres -> category, title kept.
    assert sql(store, "SELECT title, category_id, category_path FROM items WHERE item_id IN ('1', '73') ORDER BY item_id") == [
        ("Toy Story (1995)", "Animation", "Animation|Children's|Comedy"),
        ("Misérables, Les (1995)", "Drama", "Drama|Musical"),
    ]
    assert sql(store, "SELECT count(*) FROM items WHERE category_id IS NULL") == [(0,)]


def test_movielens_dat_autodetects_latin1_movies_beside(tmp_path):
    (tmp_path / "ratings.dat").write_text("7::5::4::978300760\n7::6::2::978300761\n")
    (tmp_path / "movies.dat").write_bytes(
        "5::Café au Lait (1993)::Comedy|Drama\n6::Nowhere::(no genres listed)\n".encode("latin-1")
    )
    store = tmp_path / "s.duckdb"
    r = ingest(store, tmp_path / "ratings.dat", "movielens-dat")
    assert r.items_ingested == 2
    assert [(e[0], e[3]) for e in history(store, "7")] == [("5", "Comedy"), ("6", None)]
    assert sql(store, "SELECT title FROM items WHERE item_id = '5'") == [("Café au Lait (1993)",)]


def test_movielens_100k_fixture(tmp_path):
    src = tmp_path / "u.data"
    src.write_text(
        "196\t242\t3\t881250949\n"   # 1
        "186\t302\t3\t891717742\n"   # 2
        "196\t267\t1\t881250950\n"   # 3
        "22\t377\t1\t878887116\n"    # 4
        "244\t51\t2\n"               # 5 three fields
        "166\t346\t1.x\t886397596\n"  # 6 unparseable rating
        "298\t474\t4\t884182806\n"   # 7
    )
    flags = ["0"] * 19

    def item(i, title, genres):
        f = list(flags)
        for g in genres:
            f[g] = "1"
        return f"{i}|{title}|01-Jan-1995||http://us.imdb.com/M/title-exact?x|" + "|".join(f) + "\n"

    (tmp_path / "u.item").write_bytes(
        (item(242, "Kolya (1996)", [5]) + item(302, "L.A. Confidential (1997)", [6, 10, 16])
         + item(267, "unknown", [0]) + item(377, "Heavyweights (1994)", [5, 4]) + item(474, "Misérables, Les (1995)", [8, 12])
         ).encode("latin-1")
    )
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "movielens-100k")
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (7, 5, 2, 5)
    assert [(e[0], e[1], e[3], e[4]) for e in history(store, "196")] == [("242", 881250949, "Comedy", 3.0), ("267", 881250950, None, 1.0)]
    assert sql(store, "SELECT category_id, category_path, title FROM items WHERE item_id IN ('302', '474') ORDER BY item_id") == [
        ("Crime", "Crime|Film-Noir|Thriller", "L.A. Confidential (1997)"),
        ("Drama", "Drama|Musical", "Misérables, Les (1995)"),
    ]
    assert [(q[0], q[2].split(":")[0]) for q in quarantine(store)] == [(5, "wrong column count"), (6, "unparseable value")]


def test_movielens_csv_real(tmp_path):
    src = real("movielens_latest_small/ratings.csv")
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "movielens-csv")  # movies.csv beside it
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (100004, 100004, 0, 9125)
    assert counts(store) == (100004, 671, 9066)
    assert time_kind(store) == "unix"
    assert quarantine(store) == []
    h = history(store, "1")
    assert len(h) == 20
    assert (h[0][0], h[0][1], h[0][4], h[0][5]) == ("2294", 1260759108, 2.0, 18)
    assert (h[-1][0], h[-1][1], h[-1][4]) == ("1172", 1260759205, 4.0)
    assert sql(store, "SELECT title, category_id, category_path FROM items WHERE item_id IN ('1', '11') ORDER BY item_id") == [
        ("Toy Story (1995)", "Adventure", "Adventure|Animation|Children|Comedy|Fantasy"),
        ("American President, The (1995)", "Comedy", "Comedy|Drama|Romance"),  # a quoted comma in the title
    ]
    assert sql(store, "SELECT category_id, category_path FROM items WHERE item_id = '83829'") == [(None, None)]
    # Only the 18 ratings of "(no genres listed)" movies lack a category.
    assert sql(store, "SELECT count(*) FROM events WHERE category_id IS NULL") == [(18,)]


def test_movielens_csv_fixture_bad_rows(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"  # 1
        "1,31,2.5,1260759144\n"              # 2
        "1,1029,3.0,1260759179\n"            # 3
        "1,1061,,1260759182\n"               # 4 missing rating
        "2,10,4.0,99999999999\n"             # 5 out of range (year 5138)
        "2,52,3.0\n"                         # 6 three fields
        "2,62,3.0,835355749\n"               # 7
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n31,"Dangerous Minds, The (1995)",Drama\n1029,Dumbo (1941),Animation|Children|Drama|Musical\n'
        "62,Mr. Holland's Opus (1995),(no genres listed)\n"
    )
    store = tmp_path / "s.duckdb"
    r = ingest(store, tmp_path / "ratings.csv", "movielens-csv")
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (6, 3, 3, 3)
    assert [(e[0], e[3]) for e in history(store, "1")] == [("31", "Drama"), ("1029", "Animation")]
    assert [(q[0], q[2].split(":")[0]) for q in quarantine(store)] == [
        (4, "missing rating"), (5, "timestamp out of range"), (6, "wrong column count"),
    ]
    assert sql(store, "SELECT title FROM items WHERE item_id = '31'") == [("Dangerous Minds, The (1995)",)]


def test_movielens_wrong_format_fails_fast(tmp_path):
    store = tmp_path / "s.duckdb"
    ingest(store, real("movielens_100k_recbole/ml-100k.inter"), "recbole", dataset="ok")
    assert_fails_fast(store, real("movielens_latest_small/ratings.csv"), "movielens-dat", line=1)
    assert_fails_fast(store, real("movielens_100k_recbole/ml-100k.inter"), "movielens-csv", line=1)
    assert_fails_fast(store, real("movielens_latest_small/ratings.csv"), "recbole", line=1)
    assert_fails_fast(store, real("movielens_1m_metadata_only/movies.dat"), "movielens-dat", line=1, match="3 field(s)")
    assert_fails_fast(store, real("movielens_100k_recbole/ml-100k.inter"), "movielens-100k", line=1, match="a header?")


# ---------------------------------------------------------------------------------------
# RecBole atomic files.


def test_recbole_ml100k_real(tmp_path):
    src = real("movielens_100k_recbole/ml-100k.inter")
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "recbole")  # ml-100k.item beside it
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (100000, 100000, 0, 1682)
    assert counts(store) == (100000, 943, 1682)
    assert time_kind(store) == "unix"
    assert quarantine(store) == []
    h = history(store, "196")
    assert len(h) == 39
    assert (h[0][0], h[0][1], h[0][2], h[0][4], h[0][5]) == ("242", 881250949, "rate", 3.0, 2)
    assert (h[-1][0], h[-1][1], h[-1][4]) == ("110", 881252305, 1.0)
    assert sql(store, "SELECT title, category_id, category_path FROM items WHERE item_id IN ('1', '267') ORDER BY item_id") == [
        ("Toy Story", "Animation", "Animation|Children's|Comedy"),
        ("unkonwn", None, None),  # the source's own spelling
    ]
    assert h[0][3] == sql(store, "SELECT category_id FROM items WHERE item_id = '242'")[0][0] == "Comedy"
    lo, hi = sql(store, "SELECT min(ts)::DATE::VARCHAR, max(ts)::DATE::VARCHAR FROM events")[0]
    assert lo.startswith("1997-09") and hi.startswith("1998-04")


def test_recbole_fixture_bad_rows_and_missing_timestamp(tmp_path):
    src = tmp_path / "toy.inter"
    src.write_text(
        "session:token\tuser_id:token\titem_id:token\trating:float\ttimestamp:float\n"  # 1 extra column allowed
        "a\t1\t10\t4\t881250949.5\n"   # 2
        "a\t1\t11\t5\t881250950\n"     # 3
        "a\t1\t12\tfive\t881250951\n"  # 4 unparseable rating
        "a\t1\t13\t3\n"                # 5 four fields
        "a\t2\t\t3\t881250952\n"       # 6 missing item
        "a\t2\t14\t2\t881250953\n"     # 7
    )
    (tmp_path / "toy.item").write_text(
        "item_id:token\ttitle:token_seq\tbrand:token\tprice:float\tcategories:token_seq\n"
        "10\tRed Lipstick\tAcme\t9.5\tBeauty Makeup Lips\n11\tPlain\t\tx\t\n"
    )
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "recbole")
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (6, 3, 3, 2)
    assert [(e[0], e[1], e[3], e[4]) for e in history(store, "1")] == [("10", 881250949, "Beauty", 4.0), ("11", 881250950, None, 5.0)]
    assert [(q[0], q[2].split(":")[0]) for q in quarantine(store)] == [
        (4, "unparseable value"), (5, "wrong column count"), (6, "missing item_id"),
    ]
    assert sql(store, "SELECT title, brand, price, category_path FROM items ORDER BY item_id") == [
        ("Red Lipstick", "Acme", 9.5, "Beauty|Makeup|Lips"), ("Plain", None, None, None),
    ]
    no_ts = tmp_path / "nots.inter"
    no_ts.write_text("user_id:token\titem_id:token\trating:float\n1\t2\t3\n")
    assert_fails_fast(store, no_ts, "recbole", line=1, match="without a 'timestamp' field")


# ---------------------------------------------------------------------------------------
# Sessions: Diginetica.


def _diginetica_expected_users(path: Path) -> set[str]:
    rows = [line.split(";") for line in path.read_text().splitlines()[1:]]
    known: dict[str, str] = {}
    for s, u, *_ in rows:
        if u != "NA":
            known[s] = min(known.get(s, u), u)
    return {u if u != "NA" else known.get(s, "s" + s) for s, u, *_ in rows}


def test_diginetica_real(tmp_path):
    src = real("diginetica_sample_srgnn/sample_train-item-views.csv")
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "diginetica")
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined) == (12391, 12391, 0)
    users = _diginetica_expected_users(src)
    assert counts(store) == (12391, len(users), 7139)
    assert sql(store, "SELECT count(DISTINCT user_id) FROM events") == [(len({pseudo(u) for u in users}),)]
    assert time_kind(store) == "unix"
    assert quarantine(store) == []
    # Session 1 is anonymous: user "s1"; ts = 2016-05-09 + timeframe ms.
    h = history(store, "s1")
    assert len(h) == 10
    assert (h[0][0], h[0][1], h[0][2], h[0][5]) == ("9654", 1462752000 + 75, "view", 5)  # timeframe 75848 ms
    assert (h[-1][0], h[-1][1], h[-1][5]) == ("32627", 1462752000 + 1112, 6)  # timeframe 1112408 ms
    # Session 104 names user 4 on all rows but one NA row: that row is user 4's too.
    u4 = history(store, "4")
    assert ("10858", 1458518400 + 7, 360) in [(e[0], e[1], e[5]) for e in u4]
    assert history(store, "s104") == []
    lo, hi = sql(store, "SELECT min(ts)::DATE::VARCHAR, max(ts)::DATE::VARCHAR FROM events")[0]
    assert lo.startswith("2016-01") and hi.startswith("2016-06")


def test_diginetica_fixture_official_header_categories_bad_rows(tmp_path):
    src = tmp_path / "train-item-views.csv"
    src.write_text(
        "sessionId;userId;itemId;timeframe;eventdate\n"  # 1
        "1;NA;81766;526309;2016-05-09\n"                 # 2
        "1;NA;31331;1031018;2016-05-09\n"                # 3
        "2;7;32118;243569;2016-05-10\n"                  # 4
        "3;7;119;0;2016-05-11\n"                         # 5 user 7's second session
        "4;NA;NA;5;2016-05-11\n"                         # 6 missing item
        "4;NA;55;5;2016-13-45\n"                         # 7 bad date
        "4;NA;56\n"                                      # 8 three fields
        "4;NA;57;12000;2016-05-11\n"                     # 9
    )
    (tmp_path / "product-categories.csv").write_text("itemId;categoryId\n81766;1\n31331;2\n119;NA\n")
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "diginetica")
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined, r.items_ingested) == (8, 5, 3, 3)
    assert [(e[0], e[1], e[3]) for e in history(store, "s1")] == [("81766", 1462752526, "1"), ("31331", 1462753031, "2")]
    assert [(e[0], e[3]) for e in history(store, "7")] == [("32118", None), ("119", None)]
    assert [(e[0], e[1]) for e in history(store, "s4")] == [("57", 1462924812)]
    assert [(q[0], q[2].split(":")[0]) for q in quarantine(store)] == [
        (6, "missing item_id"), (7, "unparseable timestamp"), (8, "wrong column count"),
    ]
    assert "2016-13-45 + 5 ms" in quarantine(store)[1][2]


# ---------------------------------------------------------------------------------------
# Sessions: YOOCHOOSE.


def test_yoochoose_sessionrec_real(tmp_path):
    src = real("yoochoose_100k_sessionrec/yoochoose-clicks-100k_train_full.txt")
    store = tmp_path / "s.duckdb"
    r = ingest(store, src, "yoochoose")
    assert (r.rows_read, r.rows_ingested, r.rows_quarantined) == (70278, 70278, 0)
    assert counts(store) == (70278, 17794, 2933)
    assert time_kind(store) == "unix"
    assert quarantine(store) == []
    h = history(store, "3")
    assert [(e[0], e[1], e[2], e[5]) for e in h] == [("214716935", 1396437466, "click", 2), ("214832672", 1396438212, "click", 3)]
    lo, hi = sql(store, "SELECT min(ts)::DATE::VARCHAR, max(ts)::DATE::VARCHAR FROM events")[0]
    assert lo >= "2014-04-01" and hi <= "2014-04-08"


def test_yoochoose_official_clicks_and_buys_fixture(tmp_path):
    clicks = tmp_path / "yoochoose-clicks.dat"
    clicks.write_text(
        "1,2014-04-07T10:51:09.277Z,214536502,0\n"           # 1 category 0 -> null
        "1,2014-04-07T10:54:09.868Z,214536500,0\n"           # 2
        "2,2014-04-07T13:56:37.614Z,214662742,S\n"           # 3 special offer
        "3,2014-04-02T13:17:46.940Z,214717089,2053378436\n"  # 4 brand id kept
        "4,2014-04-07T12:09:10.948Z,214826705,5\n"           # 5
        "5,not-a-time,214,1\n"                               # 6 unparseable timestamp
        "6,2014-04-07T12:09:10.948Z,,1\n"                    # 7 missing item
        "7,2014-04-07T12:09:10.948Z\n"                       # 8 two fields
        "4,2014-04-07T12:10:00Z,214826706,12\n"              # 9 no milliseconds
    )
    buys = tmp_path / "yoochoose-buys.dat"
    buys.write_text(
        "1,2014-04-07T11:00:00.000Z,214536502,12462,1\n"  # 1 session 1 = the same user as its clicks
        "4,2014-04-07T12:20:00.500Z,214826705,0,2\n"      # 2
        "4,2014-04-07T12:21:00.000Z,214826706,x,1\n"      # 3 unparseable price
        "8,2014-04-07T12:22:00.000Z,214826707,1046,4\n"   # 4
    )
    store = tmp_path / "s.duckdb"
    rc = ingest(store, clicks, "yoochoose")
    assert (rc.rows_read, rc.rows_ingested, rc.rows_quarantined) == (9, 6, 3)
    rb = ingest(store, buys, "yoochoose")
    assert (rb.rows_read, rb.rows_ingested, rb.rows_quarantined) == (4, 3, 1)
    assert [(e[0], e[1], e[2], e[3], e[4]) for e in history(store, "1")] == [
        ("214536502", 1396867869, "click", None, None),
        ("214536500", 1396868049, "click", None, None),
        ("214536502", 1396868400, "buy", None, 12462.0),
    ]
    assert history(store, "2")[0][3] == "S"
    assert history(store, "3")[0][3] == "2053378436"
    assert [(e[1], e[2], e[3]) for e in history(store, "4")] == [
        (1396872550, "click", "5"), (1396872600, "click", "12"), (1396873200, "buy", None),
    ]
    assert [(q[0], q[2].split(":")[0]) for q in quarantine(store)] == [
        (3, "unparseable value"), (6, "unparseable timestamp"), (7, "missing item_id"), (8, "wrong column count"),
    ]


def test_sessions_wrong_format_fails_fast(tmp_path):
    store = tmp_path / "s.duckdb"
    ingest(store, real("yoochoose_100k_sessionrec/yoochoose-clicks-100k_train_full.txt"), "yoochoose", dataset="ok")
    assert_fails_fast(store, real("diginetica_sample_srgnn/sample_train-item-views.csv"), "yoochoose", line=1)
    assert_fails_fast(store, real("yoochoose_100k_sessionrec/yoochoose-clicks-100k_train_full.txt"), "diginetica", line=1)
    assert_fails_fast(store, real("movielens_latest_small/ratings.csv"), "yoochoose", line=1)
