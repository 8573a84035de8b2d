"""/v1/users/{id}/recommendations?mode=buy_again|explore|mixed, and bad modes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from evorec.experiments.runs import TrainingRun
from evorec.serving.app import create_app
from evorec.serving.eventlog import EventStore
from evorec.serving.settings import ServeSettings
from evorec.serving.state import ServiceState


@pytest.fixture()
def client(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("EVOREC_SECRET", "serving-test-secret")
    settings = ServeSettings(run=str(trained_run), db_url=f"sqlite:///{tmp_path / 'modes.db'}")
    state = ServiceState(EventStore(settings.db_url), settings.run)
    c = TestClient(create_app(settings, state))
    read, write = (state.store.create_key(r, f"test-{r}") for r in ("read", "write"))
    items = TrainingRun(trained_run).checkpoint.vocabs.items
    bought = items[20:26]
    events = [{"user_id": "shopper", "item_id": it, "ts": 1_700_000_000 + 86400 * t, "behavior": "buy"} for t, it in enumerate(bought)]
    assert c.post("/v1/events", json={"events": events}, headers={"Authorization": f"Bearer {write}"}).status_code == 200
    return c, {"Authorization": f"Bearer {read}"}, set(bought)


def get(c, hdr, query):
    return c.get(f"/v1/users/shopper/recommendations?{query}", headers=hdr)


def test_buy_again_lists_only_the_users_items(client):
    c, hdr, bought = client
    r = get(c, hdr, "k=10&mode=buy_again").json()
    got = [x["item_id"] for x in r["items"]]
    assert set(got) == bought and len(got) == len(bought)  # all six, nothing else, even with k=10
    assert all(x["repeat"] for x in r["items"]) and r["mode"] == "buy_again" and r["fallback"] is None


def test_explore_excludes_them_and_mixed_keeps_the_model_order(client):
    c, hdr, bought = client
    ex = get(c, hdr, "k=10&mode=explore").json()
    assert not {x["item_id"] for x in ex["items"]} & bought and not any(x["repeat"] for x in ex["items"])
    assert [x["item_id"] for x in ex["items"]] == [x["item_id"] for x in get(c, hdr, "k=10").json()["items"]]  # = exclude_seen (default)
    mixed = get(c, hdr, f"k={len(bought) + 200}&mode=mixed").json()["items"]
    scores = [x["score"] for x in mixed]
    assert scores == sorted(scores, reverse=True)
    assert {x["item_id"] for x in mixed if x["repeat"]} <= bought


def test_bad_modes_are_clear_4xx(client):
    c, hdr, _ = client
    r = get(c, hdr, "mode=again")
    assert r.status_code == 422 and "buy_again, explore, mixed" in r.json()["detail"]
    r = get(c, hdr, "mode=mixed&exclude_seen=true")
    assert r.status_code == 422 and "leave out exclude_seen" in r.json()["detail"]
    none = c.get("/v1/users/nobody/recommendations?mode=buy_again", headers=hdr).json()
    assert none["items"] == [] and none["fallback"] is None  # nothing bought: nothing to buy again
