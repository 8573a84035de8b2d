"""The simulator: schema, determinism, streaming, and known answers for planted interest changes."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from evorec.data.simulate import (
    DAY,
    PLANTED_SCHEMA,
    TRUTH_SCHEMA,
    UNIT_USERS,
    SimConfig,
    ground_truth,
    interest_oracles,
    items_table,
    sidecar_paths,
    simulate_batches,
    write_simulation,
)
from evorec.types import BEHAVIORS, EVENT_SCHEMA, ITEM_SCHEMA

SMALL = SimConfig(users=200, days=200, seed=11, n_items=2000)


def events(cfg: SimConfig, **kw) -> pa.Table:
    return pa.Table.from_batches(list(simulate_batches(cfg, **kw)), schema=EVENT_SCHEMA)


@pytest.fixture(scope="module")
def small() -> pa.Table:
    return events(SMALL)


def _sql(query: str, **tables: pa.Table):
    con = duckdb.connect()
    for name, t in tables.items():
        con.register(name, t)
    return con.sql(query).fetchall()


# ---------------------------------------------------------------------------- config


def test_config_is_strict_and_normalises_start():
    with pytest.raises(ValidationError):
        SimConfig(users=10, userz=3)
    with pytest.raises(ValidationError):
        SimConfig(n_items=10, n_categories=40)
    with pytest.raises(ValidationError):
        SimConfig(p_cart=1.5)
    cfg = SimConfig(start=datetime(2023, 6, 1))
    assert cfg.start.tzinfo is not None
    assert cfg.t0 == int(datetime(2023, 6, 1, tzinfo=timezone.utc).timestamp())
    assert SimConfig.model_validate_json(cfg.model_dump_json()) == cfg


# ---------------------------------------------------------------------------- schema & order


def test_schema_rows_and_values(small: pa.Table):
    assert small.schema.equals(EVENT_SCHEMA)
    n = small.num_rows
    assert 0.5 * SMALL.expected_events() < n < 1.5 * SMALL.expected_events()
    assert small.column("source_row").to_pylist() == list(range(1, n + 1))
    assert set(small.column("behavior").unique().to_pylist()) <= set(BEHAVIORS)
    ts = small.column("ts").to_numpy()
    assert ts.min() >= SMALL.t0 and ts.max() < SMALL.t_end
    for col in ("user_id", "item_id", "ts", "behavior", "category_id", "source_row"):
        assert small.column(col).null_count == 0
    # value: the item's price on buys, null otherwise; the event's category is the item's
    items = items_table(SMALL)
    assert items.schema.equals(ITEM_SCHEMA) and items.num_rows == SMALL.n_items
    assert len(set(items.column("item_id").to_pylist())) == SMALL.n_items
    bad = _sql(
        """select count(*) filter (where e.category_id <> i.category_id),
                  count(*) filter (where e.behavior = 'buy' and e.value is distinct from i.price),
                  count(*) filter (where e.behavior <> 'buy' and e.value is not null),
                  count(*) filter (where i.item_id is null)
           from ev e left join items i using (item_id)""",
        ev=small, items=items,
    )[0]
    assert bad == (0, 0, 0, 0)


def test_users_contiguous_and_time_ordered(small: pa.Table):
    u = small.column("user_id").to_numpy(zero_copy_only=False)
    ts = small.column("ts").to_numpy()
    same = u[1:] == u[:-1]
    assert np.all(u[1:] >= u[:-1])  # zero-padded ids, written user after user
    assert np.all(ts[1:][same] >= ts[:-1][same])
    assert len(np.unique(u)) > 0.9 * SMALL.users
    # sessions: bursts seconds-to-minutes apart, with gaps of hours to days between them
    gaps = np.diff(ts)[same]
    assert np.median(gaps) < 600
    assert np.mean(gaps > DAY) > 0.03
    assert np.mean((gaps > 3600) & (gaps < DAY)) > 0.02


def test_funnel(small: pa.Table):
    counts = dict(_sql("select behavior, count(*) from ev group by 1", ev=small))
    n = sum(counts.values())
    assert counts["view"] / n > 0.8
    assert counts["view"] > counts["cart"] > counts["buy"] > 0
    assert counts["fav"] > 0
    # every buy follows a view of the same item by the same user
    orphan = _sql(
        """select count(*) from ev b where b.behavior = 'buy' and not exists (
             select 1 from ev v where v.behavior = 'view' and v.user_id = b.user_id
               and v.item_id = b.item_id and v.ts <= b.ts and v.ts > b.ts - 86400)""",
        ev=small,
    )[0][0]
    assert orphan == 0


def test_long_tails(small: pa.Table):
    def top_share(col: str) -> float:
        c = np.sort(np.array([r[0] for r in _sql(f"select count(*) from ev group by {col}", ev=small)]))[::-1]
        return c[: max(1, len(c) // 10)].sum() / c.sum()

    assert top_share("item_id") > 0.4  # Zipf popularity
    assert top_share("user_id") > 0.25  # heavy-tailed activity


# ---------------------------------------------------------------------------- determinism & streaming


def test_same_seed_same_events_other_seed_differs(small: pa.Table):
    assert events(SMALL).equals(small)
    other = events(SMALL.model_copy(update={"seed": 12}))
    assert not other.equals(small)


def test_chunking_and_batching_do_not_change_output(small: pa.Table):
    batches = list(simulate_batches(SMALL, chunk_users=UNIT_USERS))
    assert len(batches) == -(-SMALL.users // UNIT_USERS) > 1
    assert pa.Table.from_batches(batches).equals(small)
    sliced = list(simulate_batches(SMALL, chunk_users=100, max_rows=1000))
    assert all(b.num_rows <= 1000 for b in sliced) and len(sliced) > 10
    assert pa.Table.from_batches(sliced).equals(small)
    gt1 = ground_truth(SMALL, chunk_users=UNIT_USERS)
    gt2 = ground_truth(SMALL, chunk_users=10**6)
    assert gt1.interest.equals(gt2.interest) and gt1.planted.equals(gt2.planted)


def test_write_simulation_files_are_complete_deterministic_and_atomic(tmp_path: Path):
    cfg = SimConfig(users=150, days=120, seed=5, n_items=800)
    seen: list[int] = []
    s1 = write_simulation(cfg, tmp_path / "a" / "sim.parquet", progress=seen.append, chunk_users=64)
    s2 = write_simulation(cfg, tmp_path / "b" / "sim.parquet")
    assert s1.paths == sidecar_paths(tmp_path / "a" / "sim.parquet")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        ["sim.parquet", "sim.items.parquet", "sim.truth.parquet", "sim.planted.parquet"]
    )
    for key in ("events", "items", "truth", "planted"):
        assert s1.paths[key].read_bytes() == s2.paths[key].read_bytes(), key
    ev = pq.read_table(s1.paths["events"])
    assert ev.schema.equals(EVENT_SCHEMA) and ev.num_rows == s1.events
    assert ev.equals(events(cfg))
    assert seen == sorted(seen) and len(seen) == 3 and seen[-1] == s1.events
    assert sum(s1.behavior_counts.values()) == s1.events
    assert s1.time_min == pc_min(ev) and s1.time_max == pc_max(ev)
    assert pq.read_schema(s1.paths["items"]).equals(ITEM_SCHEMA)
    assert pq.read_schema(s1.paths["truth"]).equals(TRUTH_SCHEMA)
    assert pq.read_schema(s1.paths["planted"]).equals(PLANTED_SCHEMA)
    gt = ground_truth(cfg)
    assert pq.read_table(s1.paths["truth"]).equals(gt.interest)
    assert pq.read_table(s1.paths["planted"]).equals(gt.planted)


def pc_min(t: pa.Table) -> int:
    return int(t.column("ts").to_numpy().min())


def pc_max(t: pa.Table) -> int:
    return int(t.column("ts").to_numpy().max())


def test_failed_write_leaves_nothing(tmp_path: Path):
    cfg = SimConfig(users=200, days=60, seed=1)

    def boom(n: int) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_simulation(cfg, tmp_path / "sim.parquet", progress=boom, chunk_users=64)
    assert list(tmp_path.iterdir()) == []
    # an earlier complete output is left untouched by a failed rewrite
    write_simulation(cfg, tmp_path / "sim.parquet")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError):
        write_simulation(cfg.model_copy(update={"seed": 2}), tmp_path / "sim.parquet", progress=boom)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ---------------------------------------------------------------------------- known answers


def _around_planted(cfg: SimConfig, kind: str) -> list[tuple]:
    """Per planted user: (share of the planted category before onset, after onset + ramp, n_pre, n_post)."""
    ev = events(cfg)
    planted = ground_truth(cfg).planted
    return _sql(
        f"""select p.user_id,
                   avg((e.category_id = p.category_id)::int) filter (where e.ts < p.ts),
                   avg((e.category_id = p.category_id)::int)
                       filter (where e.ts >= p.ts + {cfg.transition_days * DAY}),
                   count(*) filter (where e.ts < p.ts),
                   count(*) filter (where e.ts >= p.ts + {cfg.transition_days * DAY})
            from planted p join ev e using (user_id)
            where p.kind = '{kind}' group by p.user_id""",
        ev=ev, planted=planted,
    )


KNOWN = dict(users=256, days=300, active_day_prob=0.3, life_event_prob=0.0)


def test_emerging_interest_is_recovered():
    cfg = SimConfig(seed=3, emerging_prob=1.0, fading_prob=0.0, **KNOWN)
    rows = [r for r in _around_planted(cfg, "emerging") if r[3] >= 50 and r[4] >= 50]
    assert len(rows) > 150
    pre = np.array([r[1] for r in rows])
    post = np.array([r[2] for r in rows])
    assert pre.mean() < 0.01 and post.mean() > 0.15
    assert np.mean(post > 5 * pre + 0.02) > 0.9


def test_fading_interest_is_recovered():
    cfg = SimConfig(seed=4, emerging_prob=0.0, fading_prob=1.0, **KNOWN)
    rows = [r for r in _around_planted(cfg, "fading") if r[3] >= 50 and r[4] >= 50]
    assert len(rows) > 150
    pre = np.array([r[1] for r in rows])
    post = np.array([r[2] for r in rows])
    assert pre.mean() > 0.1 and post.mean() < 0.005
    assert np.mean(pre > 5 * post + 0.02) > 0.85


def test_life_event_shifts_the_whole_distribution():
    cfg = SimConfig(seed=5, users=256, days=300, active_day_prob=0.4, emerging_prob=0.0,
                    fading_prob=0.0, life_event_prob=1.0)
    ev = events(cfg)
    planted = ground_truth(cfg).planted
    # total-variation distance between the category mix of two 45-day windows per user
    tv = _sql(
        """with w as (
             select e.user_id, e.category_id,
                    case when e.ts >= p.ts - 90 * 86400 and e.ts < p.ts - 45 * 86400 then 'a'
                         when e.ts >= p.ts - 45 * 86400 and e.ts < p.ts then 'b'
                         when e.ts >= p.ts and e.ts < p.ts + 45 * 86400 then 'c' end as win
             from ev e join planted p using (user_id)),
           s as (select user_id, category_id, win,
                        count(*) / sum(count(*)) over (partition by user_id, win) as share
                 from w where win is not null group by user_id, category_id, win),
           pv as (select user_id, category_id, max(share) filter (where win = 'a') as a,
                         max(share) filter (where win = 'b') as b, max(share) filter (where win = 'c') as c
                  from s group by all)
           select user_id, 0.5 * sum(abs(coalesce(a, 0) - coalesce(b, 0))) as placebo,
                  0.5 * sum(abs(coalesce(b, 0) - coalesce(c, 0))) as event
           from pv group by user_id
           having count(a) >= 1 and count(b) >= 1 and count(c) >= 1""",
        ev=ev, planted=planted,
    )
    placebo = np.array([r[1] for r in tv])
    event = np.array([r[2] for r in tv])
    assert len(tv) > 150
    assert event.mean() > placebo.mean() + 0.2
    assert np.mean(event > placebo) > 0.8


def test_truth_matches_the_events():
    cfg = SimConfig(users=256, days=140, seed=9, active_day_prob=0.3)
    ev = events(cfg)
    gt = ground_truth(cfg)
    period = cfg.truth_period_days
    # per (user, period) truth sums to ~1 (rows under truth_min_prob are left out)
    sums = np.array([r[0] for r in _sql("select sum(prob) from gt group by user_id, day", gt=gt.interest)])
    assert sums.max() <= 1.0 + 1e-5 and sums.min() > 0.8
    assert len(sums) == cfg.users * -(-cfg.days // cfg.truth_period_days)
    # expected category counts (events per user-period x truth) against the observed ones
    rows = _sql(
        f"""with n as (select user_id, count(*) as n,
                              (ts - {cfg.t0}) // {period * DAY} * {period} as day
                       from ev group by all),
                expd as (select g.category_id, sum(n.n * g.prob) as expected
                         from n join gt g using (user_id, day) group by all),
                obs as (select category_id, count(*) as observed from ev group by all)
           select category_id, expected, coalesce(observed, 0) from expd left join obs using (category_id)""",
        ev=ev, gt=gt.interest,
    )
    exp = np.array([r[1] for r in rows], dtype=float)
    obs = np.array([r[2] for r in rows], dtype=float)
    exp_share, obs_share = exp / exp.sum(), obs / obs.sum()
    assert np.abs(exp_share - obs_share).max() < 0.01
    assert np.corrcoef(exp_share, obs_share)[0, 1] > 0.98


def test_planted_table():
    cfg = SimConfig(users=1000, days=100, seed=2, active_day_prob=0.01)
    planted = ground_truth(cfg).planted
    assert planted.schema.equals(PLANTED_SCHEMA)
    kinds = dict(_sql("select kind, count(*) from p group by 1", p=planted))
    assert 200 < kinds["emerging"] < 400 and 200 < kinds["fading"] < 400 and 20 < kinds["life_event"] < 90
    mismatched = "select count(*) from p where (kind = 'life_event') <> (category_id is null)"
    assert _sql(mismatched, p=planted)[0][0] == 0
    assert _sql("select min(day) from p", p=planted)[0][0] >= 15
    assert _sql("select max(day) from p", p=planted)[0][0] < 85
    assert _sql(f"select count(*) from p where ts <> {cfg.t0} + day * 86400", p=planted)[0][0] == 0


# ---------------------------------------------------------------------------- oracles


def test_future_oracle_is_the_truth_of_the_window():
    cfg = SimConfig(users=150, days=120, seed=4)
    ids = [f"u{u:06d}" for u in range(0, 150, 7)]
    o = interest_oracles(cfg, ids, np.full(len(ids), cfg.t0 + 35 * DAY), [7, 14])
    assert o.future.shape == o.now.shape == (len(ids), 2, cfg.n_categories)
    np.testing.assert_allclose(o.future.sum(-1), 1.0, atol=1e-9)
    np.testing.assert_allclose(o.now.sum(-1), 1.0, atol=1e-9)
    truth = ground_truth(cfg).interest.to_pandas()
    col = {c: j for j, c in enumerate(o.category_ids)}
    for s, u in enumerate(ids):
        week = truth[(truth.user_id == u) & (truth.day == 35)]  # the 7-day period starting at day 35
        got = o.future[s, 0, [col[c] for c in week.category_id]]
        np.testing.assert_allclose(got, week.prob.to_numpy(), rtol=1e-5)
        two = truth[(truth.user_id == u) & truth.day.isin([35, 42])].groupby("category_id").prob.sum() / 2
        big = two[two > 0.05]  # both weeks above the truth table's floor
        np.testing.assert_allclose(o.future[s, 1, [col[c] for c in big.index]], big.to_numpy(), rtol=1e-3)


def test_now_oracle_carries_only_what_the_past_shows():
    static = SimConfig(users=64, days=100, seed=5, drift_sigma=0.0, emerging_prob=0.0, fading_prob=0.0, life_event_prob=0.0)
    ids = [f"u{u:06d}" for u in range(64)]
    cut = np.full(64, static.t0 + 40 * DAY)
    o = interest_oracles(static, ids, cut, [30])
    np.testing.assert_allclose(o.now, o.future, atol=1e-12)  # nothing random after the cutoff: the two agree
    # every user gets an emerging interest: an onset before the cutoff is carried forward, one after is not
    cfg = SimConfig(users=64, days=200, seed=5, drift_sigma=0.0, emerging_prob=1.0, fading_prob=0.0, life_event_prob=0.0)
    planted = ground_truth(cfg).planted.to_pandas()
    onset = planted[planted.kind == "emerging"].set_index("user_id")
    cut_day = 100
    o = interest_oracles(cfg, ids, np.full(64, cfg.t0 + cut_day * DAY), [30])
    col = {c: j for j, c in enumerate(o.category_ids)}
    before = after = 0
    for s, u in enumerate(ids):
        c, day = col[onset.loc[u, "category_id"]], int(onset.loc[u, "day"])
        if day < cut_day - 30:  # fully risen before the cutoff: the carried state has it
            assert o.now[s, 0, c] == pytest.approx(o.future[s, 0, c], rel=1e-4)
            before += 1
        elif day > cut_day + 30:  # rises after the window: neither has it
            assert o.now[s, 0, c] < 1e-3 and o.future[s, 0, c] < 1e-3
        elif cut_day <= day < cut_day + 10:  # rises inside the window: only the future knows
            assert o.future[s, 0, c] > 10 * o.now[s, 0, c]
            after += 1
    assert before and after


def test_oracles_refuse_ids_that_are_not_simulated():
    cfg = SimConfig(users=10, days=30)
    with pytest.raises(ValueError, match="outside the simulated 10 users"):
        interest_oracles(cfg, ["u000012"], np.array([cfg.t0]), [7])
    with pytest.raises(ValueError, match="not a simulated user id"):
        interest_oracles(cfg, ["alice"], np.array([cfg.t0]), [7])


@pytest.mark.parametrize(
    "cfg",
    [
        SimConfig(users=1, days=1),
        SimConfig(users=3, days=10, n_categories=2, n_items=2, sessions_per_active_day=1.0),
        SimConfig(users=70, days=8, active_day_prob=1e-4),  # no events at all
    ],
)
def test_tiny_configs(cfg: SimConfig, tmp_path: Path):
    s = write_simulation(cfg, tmp_path / "sim.parquet")
    ev = pq.read_table(s.paths["events"])
    assert ev.schema.equals(EVENT_SCHEMA) and ev.num_rows == s.events
    assert (s.time_min is None) == (s.events == 0)
    assert pq.read_table(s.paths["items"]).num_rows == cfg.n_items
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in s.paths.values())
