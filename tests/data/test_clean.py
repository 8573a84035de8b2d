"""Cleaning: dedup, collapse, bot filter, behaviour filter, k-core (DuckDB backend)."""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import make_beauty_ordinal_store, make_event_store, make_taobao_store
from pydantic import ValidationError

from evorec.data.clean import (
    BotFilterConfig,
    CleanConfig,
    CollapseConfig,
    KCoreConfig,
    clean_events,
    open_store_events,
    order_events,
    user_activity,
)


def _clean(store_path: Path, dataset: str, cfg: CleanConfig):
    backend, events, time_kind = open_store_events(store_path, dataset)
    result = clean_events(events, cfg, time_kind=time_kind)
    return backend, result


def _rows(result) -> list[dict]:
    return order_events(result.events).to_pyarrow().to_pylist()


# --------------------------------------------------------------------------------------------
# dedup
# --------------------------------------------------------------------------------------------


def test_dedup_removes_exactly_the_planted_duplicates(tmp_path):
    path = make_taobao_store(tmp_path / "s.duckdb")
    con = duckdb.connect(str(path))
    # Plant duplicates of 500 real rows as a second ingest (later ingest_id), and duplicates
    # with NULL category / value inside ingest 1 (two copies: both NULL, one must go).
    con.execute(
        """
        INSERT INTO events (dataset, user_id, item_id, ts, behavior, category_id, value, ingest_id, source_row)
        SELECT dataset, user_id, item_id, ts, behavior, category_id, value, 2, source_row
        FROM events WHERE source_row % 150 = 0
        """
    )
    planted = con.execute("SELECT count(*) FROM events WHERE ingest_id = 2").fetchone()[0]
    con.execute(
        """
        INSERT INTO events (dataset, user_id, item_id, ts, behavior, category_id, value, ingest_id, source_row) VALUES
          ('taobao', 'dupuser', 'i1', make_timestamp(1511600000000000), 'view', NULL, NULL, 1, 900001),
          ('taobao', 'dupuser', 'i1', make_timestamp(1511600000000000), 'view', NULL, NULL, 1, 900002),
          -- near duplicates that must stay: other behaviour, other value, other second
          ('taobao', 'dupuser', 'i1', make_timestamp(1511600000000000), 'cart', NULL, NULL, 1, 900003),
          ('taobao', 'dupuser', 'i1', make_timestamp(1511600000000000), 'view', NULL, 4.0, 1, 900004),
          ('taobao', 'dupuser', 'i1', make_timestamp(1511600001000000), 'view', NULL, NULL, 1, 900005)
        """
    )
    con.close()
    backend, result = _clean(path, "taobao", CleanConfig(dedup=True))
    with result:
        report = result.report()
        assert report.removed("dedup") == planted + 1
        kept = result.events.to_pyarrow()
        assert kept.num_rows == 84_475 + 4
        # The first copy (ingest 1) is the one kept.
        assert set(kept.column("ingest_id").to_pylist()) == {1}
        dup = [r for r in kept.to_pylist() if r["user_id"] == "dupuser"]
        assert sorted(r["source_row"] for r in dup) == [900001, 900003, 900004, 900005]
    backend.disconnect()


def test_dedup_off_keeps_everything(taobao_store):
    backend, result = _clean(taobao_store, "taobao", CleanConfig(dedup=False))
    with result:
        report = result.report()
        assert [s.step for s in report.steps] == ["input"]
        assert report.output.events == 84_475
        assert report.output.users == 815
    backend.disconnect()


# --------------------------------------------------------------------------------------------
# collapse
# --------------------------------------------------------------------------------------------


def test_collapse_window_keeps_first_of_each_run(tmp_path):
    rows = [
        # user, item, ts, behavior, category, value, ingest, source_row
        ("u", "A", 0, "view", "c", None, 1, 1),
        ("u", "A", 20, "view", "c", None, 1, 2),  # 20 s after previous: dropped
        ("u", "A", 40, "view", "c", None, 1, 3),  # chains: 20 s after a dropped one, dropped
        ("u", "A", 100, "view", "c", None, 1, 4),  # 60 s gap: new run, kept
        ("u", "A", 130, "view", "c", None, 1, 5),  # exactly the window: dropped
        ("u", "A", 161, "view", "c", None, 1, 6),  # 31 s: kept
        ("u", "A", 20, "cart", "c", None, 1, 7),  # other behaviour: kept
        ("u", "B", 10, "view", "c", None, 1, 8),  # other item: kept
        ("v", "A", 10, "view", "c", None, 1, 9),  # other user: kept
        ("u", "A", 0, "view", "c", None, 1, 10),  # same second as row 1, later source row: dropped
    ]
    path = make_event_store(tmp_path / "s.duckdb", rows)
    backend, result = _clean(path, "toy", CleanConfig(dedup=False, collapse=CollapseConfig(window_s=30)))
    with result:
        kept = sorted(r["source_row"] for r in _rows(result))
        assert kept == [1, 4, 6, 7, 8, 9]
        assert result.report().removed("collapse") == 4
    backend.disconnect()


def _collapse_reference(rows: list[tuple], window: int) -> int:
    """Plain-Python collapse: count of kept events."""
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for u, i, ts, b, ing, src in rows:
        groups[(u, i, b)].append((ts, ing, src))
    kept = 0
    for evs in groups.values():
        evs.sort()
        prev = None
        for ts, _, _ in evs:
            if prev is None or ts - prev > window:
                kept += 1
            prev = ts
    return kept


def test_collapse_matches_plain_python_on_taobao(taobao_store):
    con = duckdb.connect(str(taobao_store), read_only=True)
    rows = con.execute(
        "SELECT user_id, item_id, epoch(ts)::BIGINT, behavior, ingest_id, source_row FROM events"
    ).fetchall()
    con.close()
    window = 300
    backend, result = _clean(taobao_store, "taobao", CleanConfig(dedup=False, collapse=CollapseConfig(window_s=window)))
    with result:
        n = result.events.count().execute()
        assert n == _collapse_reference(rows, window)
        assert n < len(rows)  # real Taobao logs have repeated views of the same item
    backend.disconnect()


# --------------------------------------------------------------------------------------------
# bot filter
# --------------------------------------------------------------------------------------------


def test_bot_filter_drops_planted_bot(tmp_path):
    rows = []
    src = itertools.count(1)
    day = 86_400
    # 20 ordinary users: 3 events on each of 2 days
    for u in range(20):
        for d in range(2):
            for k in range(3):
                rows.append((f"user{u:02d}", f"item{k}", d * day + 100 * k, "view", "c", None, 1, next(src)))
    # a bot: 500 events in one day
    for k in range(500):
        rows.append(("bot", f"item{k % 7}", 5 * day + k, "view", "c", None, 1, next(src)))
    path = make_event_store(tmp_path / "s.duckdb", rows)
    backend, result = _clean(path, "toy", CleanConfig(bots=BotFilterConfig(quantile=0.9)))
    with result:
        users = {r["user_id"] for r in _rows(result)}
        assert "bot" not in users
        assert len(users) == 20
        rep = result.report()
        assert rep.removed("bots") == 500
        assert rep.bot_threshold == pytest.approx(3.0)
    backend.disconnect()


def test_bot_filter_on_taobao_matches_numpy(taobao_store):
    con = duckdb.connect(str(taobao_store), read_only=True)
    per_user = con.execute(
        "SELECT user_id, count(*) AS n, count(DISTINCT epoch(ts)::BIGINT // 86400) AS d FROM events GROUP BY 1"
    ).fetchall()
    con.close()
    rate = np.array([n / d for _, n, d in per_user])
    q = 0.99
    thr = np.quantile(rate, q)  # linear interpolation, like percentile_cont
    expected_bots = {u for (u, _, _), r in zip(per_user, rate) if r > thr}
    assert expected_bots  # the real head file does have hyperactive users

    backend, result = _clean(taobao_store, "taobao", CleanConfig(dedup=False, bots=BotFilterConfig(quantile=q)))
    with result:
        assert result.bot_threshold == pytest.approx(thr)
        kept_users = set(result.events.select("user_id").distinct().to_pyarrow().column("user_id").to_pylist())
        assert kept_users == {u for u, _, _ in per_user} - expected_bots
        assert result.report().steps[-1].users_removed == len(expected_bots)
    backend.disconnect()


def test_bot_activity_on_ordinal_dataset_counts_events(tmp_path):
    path = make_beauty_ordinal_store(tmp_path / "b.duckdb", n_users=300)
    backend, events, time_kind = open_store_events(path, "beauty")
    act = user_activity(events, time_kind).to_pyarrow()
    assert act.column("rate").to_pylist() == [float(x) for x in act.column("events").to_pylist()]
    result = clean_events(events, CleanConfig(bots=BotFilterConfig(quantile=0.95)), time_kind=time_kind)
    with result:
        rep = result.report()
        assert 0 < rep.steps[-1].users_removed <= 0.06 * 300
    backend.disconnect()


# --------------------------------------------------------------------------------------------
# behaviour filter
# --------------------------------------------------------------------------------------------


def test_behavior_filter(taobao_store):
    backend, result = _clean(taobao_store, "taobao", CleanConfig(behaviors=["buy", "cart"]))
    with result:
        beh = result.events.behavior.value_counts().to_pyarrow().to_pylist()
        counts = {r["behavior"]: r["behavior_count"] for r in beh}
        assert counts == {"buy": 1750, "cart": 4497}
        assert result.report().removed("behaviors") == 84_475 - 1750 - 4497
    backend.disconnect()


# --------------------------------------------------------------------------------------------
# k-core
# --------------------------------------------------------------------------------------------


def test_kcore_satisfies_core_property_on_taobao(taobao_store):
    k_user, k_item = 5, 4
    backend, result = _clean(taobao_store, "taobao", CleanConfig(kcore=KCoreConfig(user_min=k_user, item_min=k_item)))
    with result:
        kept = result.events
        u = kept.group_by("user_id").aggregate(n=kept.count()).n.min().execute()
        i = kept.group_by("item_id").aggregate(n=kept.count()).n.min().execute()
        assert u >= k_user and i >= k_item
        rep = result.report()
        assert rep.kcore_converged and rep.kcore_iterations >= 2
        assert 0 < rep.output.events < rep.input.events
    backend.disconnect()


def _brute_force_core(events: list[tuple[str, str]], k_user: int, k_item: int) -> tuple[set, set]:
    """The maximal (users, items) whose induced events satisfy the core property, by brute force."""
    users = sorted({u for u, _ in events})
    items = sorted({i for _, i in events})
    best: tuple[set, set] = (set(), set())
    best_n = -1
    for ru in range(len(users) + 1):
        for us in itertools.combinations(users, ru):
            for ri in range(len(items) + 1):
                for its in itertools.combinations(items, ri):
                    sub = [(u, i) for u, i in events if u in us and i in its]
                    cu, ci = defaultdict(int), defaultdict(int)
                    for u, i in sub:
                        cu[u] += 1
                        ci[i] += 1
                    if all(cu[u] >= k_user for u in us) and all(ci[i] >= k_item for i in its) and len(sub) > best_n:
                        best, best_n = ({u for u, _ in sub}, {i for _, i in sub}), len(sub)
    return best


def test_kcore_is_maximal_on_hand_example(tmp_path):
    # Removing item d leaves user z with one event, which then leaves item c with one... a chain
    # that a single pass would not finish; users x, y and items a, b form the 2-core.
    pairs = [
        ("x", "a"), ("x", "b"), ("y", "a"), ("y", "b"), ("x", "a"),
        ("z", "c"), ("z", "d"), ("w", "c"), ("w", "e"),
        ("v", "e"),
    ]
    rows = [(u, i, 10 * n, "view", None, None, 1, n) for n, (u, i) in enumerate(pairs, start=1)]
    path = make_event_store(tmp_path / "s.duckdb", rows)
    backend, result = _clean(path, "toy", CleanConfig(kcore=KCoreConfig(user_min=2, item_min=2)))
    with result:
        got = _rows(result)
        got_users = {r["user_id"] for r in got}
        got_items = {r["item_id"] for r in got}
        exp_users, exp_items = _brute_force_core(pairs, 2, 2)
        assert (got_users, got_items) == (exp_users, exp_items) == ({"x", "y"}, {"a", "b"})
        assert len(got) == 5
        assert result.kcore_iterations >= 2
    backend.disconnect()


def test_kcore_max_iter_is_reported(tmp_path, caplog):
    # A long chain: each iteration peels one more layer.
    pairs = [("u0", "i0"), ("u0", "i0")]
    for k in range(1, 8):
        pairs += [(f"u{k}", f"i{k - 1}"), (f"u{k}", f"i{k}")]
    rows = [(u, i, n, "view", None, None, 1, n) for n, (u, i) in enumerate(pairs, start=1)]
    path = make_event_store(tmp_path / "s.duckdb", rows)
    backend, events, tk = open_store_events(path, "toy")
    with caplog.at_level(logging.WARNING, logger="evorec.data.clean"):
        result = clean_events(events, CleanConfig(dedup=False, kcore=KCoreConfig(user_min=2, item_min=2, max_iter=1)), time_kind=tk)
    with result:
        assert result.kcore_converged is False
        assert "not converged" in caplog.text
    full = clean_events(events, CleanConfig(dedup=False, kcore=KCoreConfig(user_min=2, item_min=2)), time_kind=tk)
    with full:
        assert full.kcore_converged
        assert {r["user_id"] for r in _rows(full)} == {"u0"}
    backend.disconnect()


# --------------------------------------------------------------------------------------------
# config and report
# --------------------------------------------------------------------------------------------


def test_config_forbids_typos():
    with pytest.raises(ValidationError):
        CleanConfig.model_validate({"dedupe": True})
    with pytest.raises(ValidationError):
        CleanConfig.model_validate({"kcore": {"user_min": 5, "itme_min": 5}})
    with pytest.raises(ValidationError):
        CleanConfig.model_validate({"behaviors": ["purchase"]})


def test_report_adds_up(taobao_store):
    cfg = CleanConfig(
        behaviors=["view", "buy", "cart", "fav"],
        collapse=CollapseConfig(window_s=60),
        bots=BotFilterConfig(quantile=0.995),
        kcore=KCoreConfig(user_min=3, item_min=3),
    )
    backend, result = _clean(taobao_store, "taobao", cfg)
    with result:
        rep = result.report()
        assert [s.step for s in rep.steps] == ["input", "behaviors", "dedup", "collapse", "bots", "kcore"]
        assert rep.input.events - sum(s.events_removed for s in rep.steps) == rep.output.events
        assert rep.output.events == result.events.count().execute()
    backend.disconnect()


def test_materialize_gives_identical_results(taobao_store):
    cfg = CleanConfig(
        materialize=False,
        collapse=CollapseConfig(window_s=60),
        bots=BotFilterConfig(quantile=0.99),
        kcore=KCoreConfig(user_min=3, item_min=2),
    )
    backend, events, tk = open_store_events(taobao_store, "taobao")
    with clean_events(events, cfg, time_kind=tk) as lazy:
        lazy_rows = order_events(lazy.events).drop("ts").to_pyarrow()
        lazy_report = lazy.report()
    with clean_events(events, cfg.model_copy(update={"materialize": True}), time_kind=tk) as mat:
        mat_rows = order_events(mat.events).drop("ts").to_pyarrow()
        assert mat.report() == lazy_report
        assert _temp_tables(backend) == 1  # only the last step is kept
    assert mat_rows.equals(lazy_rows)
    assert _temp_tables(backend) == 0  # released on exit
    backend.disconnect()


def _temp_tables(backend) -> int:
    return backend.con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0]
