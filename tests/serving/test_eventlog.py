"""The event store on SQLite and on a real PostgreSQL (same code, SQLAlchemy Core): idempotent
inserts, recent history, forgetting, keys; and the whole API on PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from evorec.experiments.runs import TrainingRun
from evorec.serving.app import create_app
from evorec.serving.eventlog import EventStore
from evorec.serving.settings import ServeSettings
from evorec.serving.state import ServiceState


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return EventStore(f"sqlite:///{tmp_path / 'e.db'}")
    url = request.getfixturevalue("postgres_url")
    s = EventStore(url)
    with s.engine.begin() as conn:  # the server lives for the session: start each test empty
        conn.execute(text("TRUNCATE events, api_keys"))
    return s


def test_store_round_trip(store):
    rows = [{"event_id": f"e{i}", "user_id": "u", "item_id": f"i{i}", "category_id": None, "behavior": "view", "ts": 100 + i}
            for i in range(5)]
    assert store.add_events(rows) == (5, [])
    n, dup = store.add_events(rows[:3] + [{**rows[0], "event_id": None}])  # a retry, plus one event without an id
    assert n == 1 and dup == [0, 1, 2]
    assert store.count() == 6
    batch_dup = [{"event_id": "x", "user_id": "v", "item_id": "a", "category_id": "c", "behavior": "buy", "ts": 5}] * 2
    assert store.add_events(batch_dup) == (1, [1])
    recent = store.recent("u", 3)
    assert [e.ts for e in recent] == [102, 103, 104] and recent[-1].item_id == "i4"
    assert store.user_summary("u") == {"events": 6, "first_ts": 100, "last_ts": 104}
    assert store.delete_user("u") == 6 and store.user_summary("u") is None and store.count() == 1
    key = store.create_key("write", "k")
    assert store.role_of(key) == "write" and store.role_of(key + "x") is None
    assert key not in str(store.list_keys())


def test_api_on_postgres(postgres_url, trained_run, monkeypatch):
    monkeypatch.setenv("EVOREC_SECRET", "pg")
    settings = ServeSettings(run=str(trained_run), db_url=postgres_url)
    state = ServiceState(EventStore(settings.db_url), settings.run)
    with state.store.engine.begin() as conn:
        conn.execute(text("TRUNCATE events, api_keys"))
    client = TestClient(create_app(settings, state))
    w, a = state.store.create_key("write"), state.store.create_key("admin")
    items = TrainingRun(trained_run).checkpoint.vocabs.items
    ev = {"events": [{"event_id": f"p{t}", "user_id": "carol", "item_id": items[t], "ts": 1_700_000_000 + t} for t in range(4)]}
    assert client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {w}"}).json()["accepted"] == 4
    assert client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {w}"}).json()["duplicates"] == 4
    rec = client.get("/v1/users/carol/recommendations?k=5", headers={"Authorization": f"Bearer {w}"}).json()
    assert rec["fallback"] is None and rec["history_used"] == 4
    assert client.delete("/v1/users/carol", headers={"Authorization": f"Bearer {a}"}).json()["events_deleted"] == 4
    with state.store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from events")).scalar_one() == 0
    assert client.get("/readyz").status_code == 200


def test_concurrent_retries_of_one_batch_store_it_once(store):
    """Two writers (e.g. a client's retry landing on another replica) post the same batch at the
    same moment: one stores it, the other reports duplicates; no error, nothing stored twice."""
    import threading

    rows = [{"event_id": f"c{i}", "user_id": f"u{i % 7}", "item_id": f"i{i}", "category_id": None, "behavior": "view", "ts": i}
            for i in range(3000)]
    go = threading.Barrier(4)
    out: list = []

    def post():
        go.wait()
        try:
            out.append(store.add_events(rows))
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            out.append(exc)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [r for r in out if isinstance(r, Exception)], out
    assert sorted(n for n, _ in out) == [0, 0, 0, 3000]
    assert sorted(len(d) for _, d in out) == [0, 3000, 3000, 3000]
    assert store.count() == 3000
