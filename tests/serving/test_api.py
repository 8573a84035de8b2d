"""The HTTP API end to end (FastAPI TestClient, real SQLite store, a SASRec trained on ML-100K):
auth and roles, idempotent events, incremental state, fallback, forgetting, limits, metrics, reload."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

from evorec.experiments.runs import TrainingRun
from evorec.serving.app import create_app
from evorec.serving.eventlog import EventStore
from evorec.serving.settings import ServeSettings
from evorec.serving.state import ServiceState
from evorec.utils.privacy import Pseudonymizer


@pytest.fixture()
def service(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("EVOREC_SECRET", "serving-test-secret")
    db = tmp_path / "serve.db"
    settings = ServeSettings(run=str(trained_run), db_url=f"sqlite:///{db}", max_events_per_request=50, max_body_bytes=200_000)
    state = ServiceState(EventStore(settings.db_url), settings.run)
    client = TestClient(create_app(settings, state))
    keys = {r: state.store.create_key(r, f"test-{r}") for r in ("read", "write", "admin")}
    items = TrainingRun(trained_run).checkpoint.vocabs.items
    return client, keys, items, db, state


def h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_auth_and_roles(service):
    client, keys, items, _, _ = service
    url = "/v1/users/u1/recommendations"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=h("evk_wrong")).status_code == 401
    assert client.get(url, headers={"Authorization": "Basic abc"}).status_code == 401
    ev = {"events": [{"user_id": "u1", "item_id": items[0], "ts": 1_700_000_000}]}
    r = client.post("/v1/events", json=ev, headers=h(keys["read"]))
    assert r.status_code == 403 and "needs write" in r.json()["detail"]
    assert client.post("/v1/events", json=ev, headers=h(keys["write"])).status_code == 200
    assert client.delete("/v1/users/u1", headers=h(keys["write"])).status_code == 403
    assert client.post("/v1/admin/reload", headers=h(keys["write"])).status_code == 403
    r = client.get(url, headers=h("evk_wrong"))
    assert "items" not in r.json()  # no data with a wrong key


def test_events_are_idempotent_and_validated_one_by_one(service):
    client, keys, items, db, _ = service
    batch = {"events": [
        {"event_id": "e1", "user_id": "u2", "item_id": items[1], "ts": 1_700_000_000, "behavior": "view"},
        {"event_id": "e2", "user_id": "u2", "item_id": items[2], "ts": "2023-11-14T22:14:00", "behavior": "buy"},
        {"event_id": "e3", "user_id": "u2", "item_id": items[3], "ts": 1_700_000_100, "behavior": "teleport"},
        {"event_id": "e4", "user_id": "", "item_id": items[3], "ts": 1_700_000_100},
        {"event_id": "e5", "user_id": "u2", "item_id": items[3], "ts": 99_999_999_999},
        {"event_id": "e6", "user_id": "u2", "item_id": items[3], "ts": 1_700_000_100, "colour": "red"},
        {"event_id": "e1", "user_id": "u2", "item_id": items[1], "ts": 1_700_000_000},
    ]}
    r = client.post("/v1/events", json=batch, headers=h(keys["write"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 2 and body["duplicates"] == 1
    reasons = {x["index"]: x["reason"] for x in body["rejected"]}
    assert set(reasons) == {2, 3, 4, 5}
    assert "behavior" in reasons[2] and "user_id" in reasons[3] and "1970..2100" in reasons[4] and "colour" in reasons[5]
    again = client.post("/v1/events", json=batch, headers=h(keys["write"])).json()  # a retried batch
    assert again["accepted"] == 0 and again["duplicates"] == 3
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from events").fetchone()[0] == 2  # count in store == accepted


def test_a_new_event_changes_the_next_recommendation(service):
    client, keys, items, _, _ = service
    first = client.get("/v1/users/u3/recommendations?k=5", headers=h(keys["read"])).json()
    assert first["fallback"] == "popularity" and len(first["items"]) == 5  # no history yet: flagged fallback
    for t, it in enumerate(items[10:15]):
        client.post("/v1/events", json={"events": [{"user_id": "u3", "item_id": it, "ts": 1_700_000_000 + t}]}, headers=h(keys["write"]))
    a = client.get("/v1/users/u3/recommendations?k=10", headers=h(keys["read"])).json()
    assert a["fallback"] is None and a["history_used"] == 5
    assert not {x["item_id"] for x in a["items"]} & set(items[10:15])  # seen items excluded
    client.post("/v1/events", json={"events": [{"user_id": "u3", "item_id": items[40], "ts": 1_700_000_100, "behavior": "buy"}]},
                headers=h(keys["write"]))
    b = client.get("/v1/users/u3/recommendations?k=10", headers=h(keys["read"])).json()
    assert b["history_used"] == 6 and [x["item_id"] for x in b["items"]] != [x["item_id"] for x in a["items"]]
    seen = client.get("/v1/users/u3/recommendations?k=10&exclude_seen=false", headers=h(keys["read"])).json()
    assert len(seen["items"]) == 10
    unknown_item = client.post("/v1/events", json={"events": [{"user_id": "u3", "item_id": "never-seen-item", "ts": 1_700_000_200}]},
                               headers=h(keys["write"])).json()
    assert unknown_item["accepted"] == 1  # stored; the model skips items it does not know, and says so
    c = client.get("/v1/users/u3/recommendations", headers=h(keys["read"])).json()
    assert c["unknown_items_skipped"] == 1


def test_bad_requests_are_4xx_with_a_message(service):
    client, keys, items, _, _ = service
    w, r = h(keys["write"]), h(keys["read"])
    assert client.post("/v1/events", content=b"{not json", headers={**w, "content-type": "application/json"}).status_code == 422
    assert client.post("/v1/events", json={"events": "x"}, headers=w).status_code == 422
    assert client.post("/v1/events", json={"events": [], "extra": 1}, headers=w).status_code == 422
    many = {"events": [{"user_id": "u", "item_id": items[0], "ts": 1} for _ in range(51)]}
    resp = client.post("/v1/events", json=many, headers=w)
    assert resp.status_code == 413 and "limit is 50" in resp.json()["detail"]
    huge = {"events": [{"user_id": "u" * 250, "item_id": "i" * 250, "ts": 1}] * 40}
    big = client.post("/v1/events", content=(str(huge) * 20).encode(), headers={**w, "content-type": "application/json"})
    assert big.status_code == 413
    assert client.get("/v1/users/u1/recommendations?k=0", headers=r).status_code == 422
    assert client.get("/v1/users/u1/recommendations?k=abc", headers=r).status_code == 422
    assert client.get("/v1/users/u1/recommendations?k=5000", headers=r).status_code == 422
    resp = client.get("/v1/users/u1/recommendations?category=no-such-category", headers=r)
    assert resp.status_code == 404 and "unknown category" in resp.json()["detail"]
    assert client.get("/v1/users/nobody", headers=r).status_code == 404


def test_right_to_be_forgotten_leaves_no_trace(service, monkeypatch):
    client, keys, items, db, _ = service
    raw = "alice@example.com"
    client.post("/v1/events", json={"events": [{"event_id": f"a{t}", "user_id": raw, "item_id": items[t], "ts": 1_700_000_000 + t}
                                               for t in range(5)]}, headers=h(keys["write"]))
    client.post("/v1/events", json={"events": [{"user_id": "bob", "item_id": items[7], "ts": 1_700_000_000}]}, headers=h(keys["write"]))
    assert client.get(f"/v1/users/{raw}", headers=h(keys["read"])).json()["events"] == 5
    pseudo = Pseudonymizer.from_environment()(raw)
    with sqlite3.connect(db) as con:  # the store never holds the raw id
        dump = "\n".join(con.iterdump())
    assert raw not in dump and pseudo in dump
    r = client.delete(f"/v1/users/{raw}", headers=h(keys["admin"]))
    assert r.status_code == 200 and r.json()["events_deleted"] == 5
    assert client.get(f"/v1/users/{raw}", headers=h(keys["read"])).status_code == 404
    assert client.delete(f"/v1/users/{raw}", headers=h(keys["admin"])).status_code == 404
    with sqlite3.connect(db) as con:
        con.execute("pragma wal_checkpoint(TRUNCATE)")
        dump = "\n".join(con.iterdump())
    assert pseudo not in dump and raw not in dump
    assert client.get("/v1/users/bob", headers=h(keys["read"])).status_code == 200  # others untouched
    rec = client.get(f"/v1/users/{raw}/recommendations", headers=h(keys["read"])).json()
    assert rec["fallback"] == "popularity"  # nothing of the user is left to personalise with


def test_health_readiness_metrics_and_reload(service, trained_run):
    client, keys, items, _, state = service
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"]
    client.get("/v1/users/u9/recommendations", headers=h(keys["read"]))
    text = client.get("/metrics").text
    assert 'evorec_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="200"}' in text
    assert "evorec_request_seconds_bucket" in text and "evorec_model_info{version=" in text
    r = client.post("/v1/admin/reload", json={}, headers=h(keys["admin"]))
    assert r.status_code == 200 and r.json()["run"] == str(trained_run)
    bad = client.post("/v1/admin/reload", json={"run": "/nonexistent"}, headers=h(keys["admin"]))
    assert bad.status_code == 422 and "current model stays" in bad.json()["detail"]
    assert client.get("/v1/users/u9/recommendations", headers=h(keys["read"])).status_code == 200
    docs = client.get("/openapi.json").json()
    assert "/v1/events" in docs["paths"] and "/v1/users/{user_id}/recommendations" in docs["paths"]


def test_not_ready_without_a_model(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOREC_SECRET", "x")
    settings = ServeSettings(run=None, db_url=f"sqlite:///{tmp_path / 's.db'}")
    state = ServiceState(EventStore(settings.db_url), None)
    client = TestClient(create_app(settings, state))
    key = state.store.create_key("read")
    assert client.get("/readyz").status_code == 503
    r = client.get("/v1/users/u/recommendations", headers=h(key))
    assert r.status_code == 503 and "no model loaded" in r.json()["detail"]
    with pytest.raises(ValueError, match="role must be"):
        state.store.create_key("root")


def test_explanations_attribute_the_score_to_past_events(service):
    client, keys, items, _, _ = service
    hist = items[20:26]
    client.post("/v1/events", json={"events": [{"user_id": "u7", "item_id": it, "ts": 1_700_000_000 + 3600 * t, "behavior": "view"}
                                               for t, it in enumerate(hist)]}, headers=h(keys["write"]))
    rec = client.get("/v1/users/u7/recommendations?k=1", headers=h(keys["read"])).json()
    target = rec["items"][0]["item_id"]
    r = client.get(f"/v1/users/u7/explanations?item_id={target}", headers=h(keys["read"]))
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["method"] == "integrated_gradients" and [x["item_id"] for x in e["events"]] == hist
    total = sum(x["weight"] for x in e["events"])
    assert total == pytest.approx(e["score"] - e["baseline_score"], abs=max(0.05, 2 * e["completeness_delta"]))
    assert 0 < sum(g["share"] for g in e["by_category"]) <= 1 + 1e-6  # |sum of a group| <= sum of |weights|
    assert {g["age"] for g in e["by_age"]} <= {"last day", "last week", "last month", "older"}
    occ = client.get(f"/v1/users/u7/explanations?item_id={target}&method=occlusion", headers=h(keys["read"])).json()
    assert occ["method"] == "occlusion" and len(occ["events"]) == len(hist)
    assert client.get("/v1/users/u7/explanations?item_id=nope", headers=h(keys["read"])).status_code == 404
    assert client.get(f"/v1/users/ghost/explanations?item_id={target}", headers=h(keys["read"])).status_code == 404
    assert client.get(f"/v1/users/u7/explanations?item_id={target}&method=shap", headers=h(keys["read"])).status_code == 422


@pytest.fixture(scope="module")
def forecast_service(trained_run, forecast_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_fc_api")
    settings = ServeSettings(run=str(trained_run), forecast_run=str(forecast_run), db_url=f"sqlite:///{tmp / 's.db'}", pseudonymize=False)
    state = ServiceState(EventStore(settings.db_url), settings.run, forecast_run=settings.forecast_run)
    client = TestClient(create_app(settings, state))
    return client, state.store.create_key("write"), state


def test_interests_audiences_and_segments(forecast_service):
    client, key, state = forecast_service
    seq = state.forecast.seq
    items = seq.items.ids.to_pylist()[:30]
    events = [{"user_id": "shopper", "item_id": it, "ts": 1_760_000_000 + 86_400 * t, "behavior": "view"} for t, it in enumerate(items)]
    assert client.post("/v1/events", json={"events": events}, headers=h(key)).json()["accepted"] == 30
    r = client.get("/v1/users/shopper/interests?horizons=7d,30d&top=5", headers=h(key))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc["forecasts"]) == {"7d", "30d"} and len(doc["current"]) <= 5
    f30 = doc["forecasts"]["30d"]
    assert 0 <= f30["p_emerging"] <= 1 and f30["drift"]["label"] in {"stable", "drifting", "emerging-interest", "fading"}
    assert all(0 <= c["p_engage"] <= 1 for c in f30["categories"])
    shares = [c["share"] for c in f30["categories"]]
    assert shares == sorted(shares, reverse=True)
    # the `new` list: only categories the shopper never engaged with, at most `top`
    mine = {c["category_id"] for c in doc["current"]}
    assert 0 < len(f30["new"]) <= 5 and not mine & {c["category_id"] for c in f30["new"]}
    assert all(0 <= c["p_engage"] <= 1 for c in f30["new"])
    assert client.get("/v1/users/shopper/interests?horizons=5d", headers=h(key)).status_code == 422
    assert client.get("/v1/users/ghost/interests", headers=h(key)).status_code == 404
    r = client.get("/v1/users/shopper/interests?horizons=30d&explain=true", headers=h(key))  # the neural forecaster has no signals
    assert r.status_code == 422 and "ranker" in r.json()["detail"]
    cat = doc["current"][0]["category_id"]
    a = client.get(f"/v1/audiences?category={cat}&horizon=30d&top=10", headers=h(key))
    assert a.status_code == 200, a.text
    aud = a.json()
    assert len(aud["users"]) == 10 and aud["expected_reach_top"] <= aud["expected_reach_all"]
    assert client.get("/v1/audiences?category=nope&horizon=30d", headers=h(key)).status_code == 404
    s = client.get("/v1/segments?horizon=30d&k=4", headers=h(key))
    assert s.status_code == 200, s.text
    seg = s.json()
    assert all(p["size"] >= seg["min_size"] for p in seg["segments"]) and "users" not in seg


def test_a_new_checkpoint_in_the_watched_run_is_hot_swapped(trained_run, tmp_path, monkeypatch):
    import shutil
    import time as _time

    monkeypatch.setenv("EVOREC_SECRET", "x")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    settings = ServeSettings(run=str(run), db_url=f"sqlite:///{tmp_path / 'w.db'}", watch_seconds=0.1)
    state = ServiceState(EventStore(settings.db_url), settings.run)
    app = create_app(settings, state)
    client = TestClient(app)
    key = state.store.create_key("read")
    before = state.model.version
    assert client.get("/v1/users/u/recommendations", headers=h(key)).json()["model_version"] == before
    _time.sleep(1.1)  # the version carries the file's mtime in seconds
    best = TrainingRun(run).best_checkpoint
    tmp = best.with_name(f".{best.name}.new")
    shutil.copy(best, tmp)
    tmp.replace(best)  # a new checkpoint lands atomically, as the trainer writes it
    deadline = _time.time() + 10
    while state.model.version == before and _time.time() < deadline:
        _time.sleep(0.05)
    assert state.model.version != before
    assert client.get("/v1/users/u/recommendations", headers=h(key)).json()["model_version"] == state.model.version
    best.write_bytes(b"half a file")  # a bad file: the current model stays
    _time.sleep(0.5)
    assert client.get("/v1/users/u/recommendations", headers=h(key)).status_code == 200
    app.state.watch_stop.set()


def test_forgetting_reaches_the_forecasts_behind_audiences(forecast_service):
    client, key, state = forecast_service
    admin = state.store.create_key("admin")
    pop = state.forecast.population
    cat = pop.categories[int(pop.engage[:, pop.horizon_index("30d")].sum(0)[1:].argmax()) + 1]
    top = client.get(f"/v1/audiences?category={cat}&horizon=30d&top=3", headers=h(key)).json()["users"]
    victim = top[0]["user_id"]
    r = client.delete(f"/v1/users/{victim}", headers=h(admin))
    assert r.status_code == 200 and r.json()["forecasts_deleted"] == 1
    after = client.get(f"/v1/audiences?category={cat}&horizon=30d&top=100000", headers=h(key)).json()
    assert victim not in {u["user_id"] for u in after["users"]}
    assert client.delete(f"/v1/users/{victim}", headers=h(admin)).status_code == 404


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_forgetting_through_one_replica_reaches_every_replica_and_restarts(db, forecast_run, tmp_path, request):
    """Two replicas share one event store. DELETE on replica A: replica B stops listing the user
    in audiences and recounts segments and population without them, and so does a replica started
    afterwards; the store keeps only a one-way tombstone, never the raw or pseudonymised id."""
    from sqlalchemy import text

    from evorec.serving.eventlog import tombstone

    if db == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        with EventStore(url).engine.begin() as conn:
            conn.execute(text("TRUNCATE events, api_keys, forgotten"))

    def replica():
        settings = ServeSettings(forecast_run=str(forecast_run), db_url=url, pseudonymize=False)
        state = ServiceState(EventStore(url), None, forecast_run=settings.forecast_run)
        return TestClient(create_app(settings, state)), state

    a, sa = replica()
    b, sb = replica()
    admin, read = sa.store.create_key("admin"), sa.store.create_key("read")
    pop = sa.forecast.population
    cat = pop.categories[int(pop.engage[:, pop.horizon_index("30d")].sum(0)[1:].argmax()) + 1]

    def audience(client):
        r = client.get(f"/v1/audiences?category={cat}&horizon=30d&top=100000", headers=h(read))
        assert r.status_code == 200, r.text
        return [u["user_id"] for u in r.json()["users"]]

    before = audience(b)
    n_before = b.get("/v1/segments?horizon=30d&k=3", headers=h(read)).json()["n_users"]
    victim = before[0]
    assert a.delete(f"/v1/users/{victim}", headers=h(admin)).status_code == 200
    assert victim not in audience(b) and len(audience(b)) == len(before) - 1
    assert b.get("/v1/segments?horizon=30d&k=3", headers=h(read)).json()["n_users"] == n_before - 1
    assert b.get("/v1/population?top=5", headers=h(read)).status_code == 200
    c, _ = replica()  # started after the DELETE
    assert victim not in audience(c)
    assert a.delete(f"/v1/users/{victim}", headers=h(admin)).status_code == 404  # nothing left to forget
    with sa.store.engine.connect() as conn:
        stones = [t for (t,) in conn.execute(text("SELECT tombstone FROM forgotten"))]
    assert stones == [tombstone(victim)] and victim not in stones[0]
    if db == "sqlite":
        with sa.store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("shared.db*"))
        assert victim.encode() not in raw


def test_reload_swaps_the_forecaster_too_and_keeps_both_on_failure(forecast_service, forecast_run, trained_run):
    client, _, state = forecast_service
    admin = h(state.store.create_key("admin"))
    before_fc, before_model = state.forecast, state.model
    bad = client.post("/v1/admin/reload", json={"forecast_run": "/nonexistent"}, headers=admin)
    assert bad.status_code == 422 and "current model stays, and so does the forecaster" in bad.json()["detail"]
    assert state.forecast is before_fc and state.model is before_model  # nothing swapped
    r = client.post("/v1/admin/reload", json={"forecast_run": str(forecast_run)}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["forecast_run"] == str(forecast_run) and r.json()["run"] == str(trained_run)
    assert state.forecast is not before_fc and state.forecast.run == str(forecast_run)  # built again, once, on reload
    plain = client.post("/v1/admin/reload", json={}, headers=admin)  # a model reload keeps the forecaster
    assert plain.status_code == 200 and plain.json()["forecast_run"] == str(forecast_run)
