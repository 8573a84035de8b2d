"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis, in process through ASGI, no
network): every operation, generated valid and invalid requests, an admin key; no response may
be a server error (5xx). Then hand-written malformed inputs the generator does not reach: wrong
JSON types in every event field, event lists of non-objects, odd characters in ids, odd k.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

schemathesis = pytest.importorskip("schemathesis")  # the `test` extra
from fastapi.testclient import TestClient  # noqa: E402 - after the importorskip
from hypothesis import HealthCheck, settings  # noqa: E402 - after the importorskip
from schemathesis.checks import not_a_server_error  # noqa: E402 - after the importorskip

from evorec.experiments.runs import TrainingRun  # noqa: E402 - after the importorskip
from evorec.serving.app import create_app  # noqa: E402 - after the importorskip
from evorec.serving.eventlog import EventStore  # noqa: E402 - after the importorskip
from evorec.serving.settings import ServeSettings  # noqa: E402 - after the importorskip
from evorec.serving.state import ServiceState  # noqa: E402 - after the importorskip


def _bad_horizon(value: object) -> bool:
    """A horizon that ``str.isdigit`` takes but ``int`` refuses: a non-ASCII digit such as '¹',
    or more than Python's 4300-digit int-parsing limit."""
    v = str(value).strip()
    return v.isdigit() and (not v.isdecimal() or len(v) > 4300)


HORIZON_5XX = (
    "5xx: ?horizon=¹ (or 5000 '9's) -> ValueError from int() in evorec.data.splits.resolve_horizon "
    "(str.isdigit() is True for '¹' and for any length; int() refuses '¹' and > 4300 digits); "
    "the route catches only KeyError, so it is a 500 instead of 422"
)
RELOAD_5XX = (
    "5xx: POST /v1/admin/reload {'run': 'x'*5000} -> OSError [Errno 36] File name too long, raised by "
    "Path.exists() in models/checkpoint.load_checkpoint; reload() catches only FileNotFoundError, RuntimeError, "
    "ValueError, so it is a 500 instead of 422"
)


def _long_run_path(body: object) -> bool:
    run = body.get("run") if isinstance(body, dict) else None
    if not isinstance(run, str):
        return False
    path = str(TrainingRun(run).best_checkpoint).encode("utf-8", "surrogatepass")
    return len(path) >= 4096 or any(len(part) > 255 for part in path.split(b"/"))  # PATH_MAX, NAME_MAX


# 5xx found by fuzzing and not fixed yet: (operation, does this case hit it, reason). The fuzzer
# passes over the cases that hit one (so it goes on checking every other case of the operation);
# each bug has its own strict xfail test below, which flips when the bug is fixed.
KNOWN_5XX: list = []  # all fixed: long reload paths, non-ASCII digit horizons


@pytest.fixture(scope="module")
def fuzz_service(trained_run, tmp_path_factory):
    """(app, state, admin key): the trained SASRec and a small interest forecaster (so the
    interest routes answer instead of 503 "no forecaster loaded"), on a fresh SQLite store."""
    from evorec.experiments.config import load_forecast_experiment
    from evorec.experiments.forecasting import forecast_backtest

    tmp = tmp_path_factory.mktemp("fuzz")
    sim = Path(__file__).resolve().parents[2] / "configs" / "forecast" / "simulated.yaml"
    fc = load_forecast_experiment(sim, ["simulate.users=300", "forecast.model.epochs=2", "forecast.model.encoder=null",
                                        "forecast.bootstrap=0", "forecast.train_every=28d", f"cache_dir={tmp / 'cache'}"])
    forecast_backtest(fc, tmp / "fc")
    old = os.environ.get("EVOREC_SECRET")
    os.environ["EVOREC_SECRET"] = "fuzz-test-secret"  # read once, by create_app
    try:
        s = ServeSettings(run=str(trained_run), forecast_run=str(tmp / "fc"), db_url=f"sqlite:///{tmp / 'serve.db'}",
                          max_events_per_request=50, max_body_bytes=200_000)
        state = ServiceState(EventStore(s.db_url), s.run, forecast_run=s.forecast_run)
        app = create_app(s, state)
    finally:
        if old is None:
            os.environ.pop("EVOREC_SECRET", None)
        else:
            os.environ["EVOREC_SECRET"] = old
    return app, state, state.store.create_key("admin", "fuzz")


def _schema_app():
    """The same app without a model or secrets, only for its OpenAPI document: schemathesis
    needs the schema at import (collection) time, before the session's trained run exists; the
    generated requests go to the real service (``app=`` below). Its lazy ``from_fixture`` loader
    would avoid this but fails on pytest 9 (it sets the removed ``Function._nodeid``)."""
    s = ServeSettings(run=None, db_url="sqlite://", pseudonymize=False)
    return create_app(s, ServiceState(EventStore(s.db_url), None))


schema = schemathesis.openapi.from_asgi("/openapi.json", _schema_app())


def test_fuzzed_schema_is_the_served_one(fuzz_service):
    app, _, _ = fuzz_service
    assert schema.raw_schema == app.openapi()


SEEDED = "fz-seeded-user"  # a user with stored events, so user routes get past "unknown user"


def _seed(client: TestClient, headers: dict[str, str], state: ServiceState) -> None:
    """Idempotent (event ids): events of SEEDED over items of both the recommender and the
    forecaster, re-inserted after a fuzzed DELETE removed them."""
    items = state.model.items[1:21] + state.forecast.seq.items.ids.to_pylist()[:20]
    events = [{"event_id": f"fz-seed-{t}", "user_id": SEEDED, "item_id": it, "ts": 1_760_000_000 + 86_400 * t,
               "behavior": "buy" if t % 5 == 0 else "view"} for t, it in enumerate(items)]
    r = client.post("/v1/events", json={"events": events}, headers=headers)
    assert r.status_code == 200 and not r.json()["rejected"], r.text


@schema.parametrize()
@settings(max_examples=int(os.environ.get("EVOREC_FUZZ_EXAMPLES", "40")),  # per operation; 500 for a longer hunt
          deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error_on_any_operation(case, fuzz_service):
    app, state, admin = fuzz_service
    headers = {"Authorization": f"Bearer {admin}"}
    cases = [case]
    if "user_id" in (case.path_parameters or {}):
        # The same generated query/body once more for a user that has history: a random user id
        # almost always stops at 404, before the model or forecaster runs.
        _seed(TestClient(app), headers, state)
        known = case.derive()
        known.path_parameters["user_id"] = SEEDED
        cases.append(known)
    for c in cases:
        label = f"{c.method.upper()} {c.path}"
        if any(label == op and hits(c) for op, hits, _ in KNOWN_5XX):
            continue
        c.call_and_validate(headers=headers, checks=[not_a_server_error], app=app)


# -- hand-written malformed inputs the generator does not reach --------------------------------


@pytest.fixture(scope="module")
def client(fuzz_service):
    app, state, admin = fuzz_service
    return TestClient(app), {"Authorization": f"Bearer {admin}"}, state.model.items[1:]


def _post(client: TestClient, events: list, headers: dict[str, str]):
    return client.post("/v1/events", json={"events": events}, headers=headers)


NOT_A_STRING = [True, 1.5, -3, [], {}, ["x"], {"a": 1}]
# Values each field must refuse, event by event (the rest of the batch still lands).
MUST_REJECT = {
    "event_id": [*NOT_A_STRING, "", "x" * 129],
    "user_id": [None, *NOT_A_STRING, "", "x" * 257],
    "item_id": [None, *NOT_A_STRING, "", "x" * 257],
    "behavior": [None, *NOT_A_STRING, "", "teleport", "VIEW "],
    "ts": [None, [], {}, ["x"], {"a": 1}, "", "soon", -3, 4_102_444_801, "2101-01-01T00:00:00", 1e300, "NaN"],
    "category_id": [*NOT_A_STRING, "x" * 257],
}


@pytest.mark.parametrize("field", sorted(MUST_REJECT))
def test_wrong_json_types_in_every_event_field_are_rejected_one_by_one(client, field):
    c, h, items = client
    good = {"user_id": "fz-types", "item_id": items[0], "behavior": "view", "ts": 1_700_000_000, "category_id": "c1"}
    bad = MUST_REJECT[field]
    events = [{**good, field: v} for v in bad] + [{**good, "event_id": None}]  # the last one is valid
    r = _post(c, events, h)
    assert r.status_code == 200, r.text
    body = r.json()
    reasons = {x["index"]: x["reason"] for x in body["rejected"]}
    assert set(reasons) == set(range(len(bad))), {repr(bad[i])[:20] for i in set(range(len(bad))) - set(reasons)}
    assert all(r.startswith(field) for r in reasons.values()), reasons  # the reason names the field
    assert body["accepted"] == 1


@pytest.mark.parametrize("value", [True, False])
def test_boolean_timestamp_is_rejected(client, value):
    c, h, items = client
    r = _post(c, [{"user_id": "fz-bool", "item_id": items[0], "ts": value}], h)
    assert r.status_code == 200 and [x["index"] for x in r.json()["rejected"]] == [0]


@pytest.mark.parametrize("events", [[1, 2], ["a"], [None], [[{"user_id": "u"}]], [True, 1.5], [{"user_id": "u"}, "x"]])
def test_event_list_of_non_objects_is_422(client, events):
    c, h, _ = client
    r = _post(c, events, h)
    assert r.status_code == 422, r.text
    assert "events" in r.text


@pytest.mark.parametrize("body", [[], "events", 1, None, {"events": None}, {"events": {"user_id": "u"}}, {}])
def test_body_of_the_wrong_shape_is_422(client, body):
    c, h, _ = client
    assert c.post("/v1/events", json=body, headers=h).status_code == 422


ODD_IDS = ["nul\x00id", "ünïcödé-用户-🙂", "tab\tand\nnewline", " ", "\u202eRTL", "\ud7ff\ue000", "?x=1&y", "#frag", "x" * 256]


def _post_two(c: TestClient, h: dict[str, str], uid: str, item: str):
    return _post(c, [{"user_id": uid, "item_id": item, "ts": 1_700_000_000, "category_id": "cat\x00🙂"},
                     {"user_id": uid, "item_id": "item\x00🙂" + uid[:100], "ts": 1_700_000_001, "event_id": "ev\x00🙂" + uid[:100]}], h)


@pytest.mark.parametrize("uid", ODD_IDS)
def test_unicode_and_nul_in_ids_round_trip(client, uid):
    c, h, items = client
    r = _post_two(c, h, uid, items[3])
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    path = quote(uid, safe="")
    summary = c.get(f"/v1/users/{path}", headers=h)
    assert summary.status_code == 200 and summary.json()["user_id"] == uid and summary.json()["events"] == 2, summary.text
    rec = c.get(f"/v1/users/{path}/recommendations?k=3", headers=h)
    assert rec.status_code == 200, rec.text
    assert rec.json()["history_used"] == 1 and rec.json()["unknown_items_skipped"] == 1  # the NUL item is unknown
    assert c.delete(f"/v1/users/{path}", headers=h).json()["events_deleted"] == 2
    assert c.get(f"/v1/users/{path}", headers=h).status_code == 404


def test_user_id_with_a_slash_is_rejected_at_the_door(client):
    """A '/' in a user id could never be addressed by /v1/users/{user_id} (nor forgotten), so the
    event is rejected with a reason instead of being stored."""
    c, h, items = client
    r = _post_two(c, h, "a/b", items[3]).json()
    assert r["accepted"] == 0 and all("user_id" in x["reason"] for x in r["rejected"])


@pytest.mark.parametrize("k", ["-1", "-0", "0", "1.5", "2.5", "1e3", "NaN", "inf", "", "99999999999999999999999", "0x10", "true"])
def test_negative_float_or_odd_k_is_422(client, k):
    c, h, _ = client
    r = c.get(f"/v1/users/fz-user/recommendations?k={quote(k)}", headers=h)
    assert r.status_code == 422, (k, r.status_code, r.text)


@pytest.mark.parametrize("horizon", ["¹", "9" * 5000])
@pytest.mark.parametrize("route", ["/v1/audiences?category={cat}&horizon={h}", "/v1/segments?horizon={h}"])
def test_unparseable_digit_horizon_is_422(client, fuzz_service, route, horizon):
    c, h, _ = client
    _, state, _ = fuzz_service
    cat = quote(str(state.forecast.population.categories[1]))  # a category the forecaster knows
    r = c.get(route.format(cat=cat, h=quote(horizon)), headers=h)
    assert r.status_code == 422, r.text


def test_horizons_of_interests_are_4xx(client, fuzz_service):
    c, h, _ = client
    _seed(c, h, fuzz_service[1])  # a user with history, so the horizons are parsed
    for hz in ("¹", "9" * 5000, "9" * 30 + "d", "0", "-1", "30D", "\x00", "7d,,zz"):
        r = c.get(f"/v1/users/{SEEDED}/interests?horizons={quote(hz)}", headers=h)
        assert 400 <= r.status_code < 500, (hz[:20], r.status_code, r.text[:200])


@pytest.mark.parametrize("q", ["exclude_seen=maybe", "exclude_seen=", "category=", "category=%00"])
def test_odd_query_flags_are_4xx(client, q):
    c, h, _ = client
    r = c.get(f"/v1/users/fz-user/recommendations?{q}", headers=h)
    assert 400 <= r.status_code < 500, (q, r.status_code, r.text)


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b"[" * 5000 + b"]" * 5000,
                                  b'{"events": [], "events": 1}', b"\x00", b'{"events": [{"user_id": "u", "ts": 1}]'])
def test_malformed_or_deeply_nested_bodies_are_4xx(client, body):
    c, h, _ = client
    r = c.post("/v1/events", content=body, headers={**h, "content-type": "application/json"})
    assert 400 <= r.status_code < 500, (body[:30], r.status_code, r.text[:200])


def test_non_finite_numbers_are_rejected_per_event(client):
    c, h, items = client
    events = ", ".join(f'{{"user_id": "fz-nan", "item_id": "{items[0]}", "ts": {ts}}}' for ts in ("1e999", "-1e999", "NaN", "Infinity", "-Infinity"))
    body = f'{{"events": [{events}]}}'.encode()
    r = c.post("/v1/events", content=body, headers={**h, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 0 and [x["index"] for x in r.json()["rejected"]] == [0, 1, 2, 3, 4]


def test_content_length_lies_are_4xx(client):
    c, h, _ = client
    for value in ("-1", "abc", "1e9", str(10**30)):
        r = c.post("/v1/events", content=b"{}", headers={**h, "content-type": "application/json", "content-length": value})
        assert 400 <= r.status_code < 500, (value, r.status_code)


@pytest.mark.parametrize("body", [
    {"run": 1}, {"run": "\x00"}, {"run": "/"}, {"run": "../../etc"}, {"other": 1}, [1], "run",
    {"run": "x" * 5000},
])
def test_reload_with_odd_bodies_is_4xx_and_keeps_the_model(client, fuzz_service, body):
    c, h, _ = client
    _, state, _ = fuzz_service
    before = state.model
    r = c.post("/v1/admin/reload", json=body, headers=h)
    assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    assert state.model is before
