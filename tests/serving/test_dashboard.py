"""The web dashboard (``/dashboard``) in a real browser against a real uvicorn server: a SASRec
trained on ML-100K and a small interest forecaster trained on the simulator behind it. Also the
thin read endpoints it needs (a user's events, the population's interests, capabilities)."""

from __future__ import annotations

import re
import socket
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from evorec.experiments.runs import TrainingRun
from evorec.forecasting.audience import population_interests
from evorec.serving.app import create_app
from evorec.serving.eventlog import EventStore
from evorec.serving.settings import ServeSettings
from evorec.serving.state import ServiceState

DAY = 86_400
USER = "dash user ü"  # a space and an accent: ids travel URL-encoded


def h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def dash(trained_run, forecast_run, tmp_path_factory):
    """The app (pseudonymised ids) served by uvicorn on a free loopback port, with one user whose
    interests drift: 40 ML-100K items over 120 days, from two of the forecaster's categories to two others."""
    import uvicorn

    tmp = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVOREC_SECRET", "dashboard-test-secret")
        settings = ServeSettings(run=str(trained_run), forecast_run=str(forecast_run), db_url=f"sqlite:///{tmp / 'd.db'}")
        state = ServiceState(EventStore(settings.db_url), settings.run, forecast_run=settings.forecast_run)
        app = create_app(settings, state)
    keys = {r: state.store.create_key(r, f"dash-{r}") for r in ("read", "write")}
    client = TestClient(app)
    items = TrainingRun(trained_run).checkpoint.vocabs.items
    cats = state.forecast.seq.categories.ids.to_pylist()[:4]
    start = int(time.time()) - 120 * DAY
    events = [{"event_id": f"d{t}", "user_id": USER, "item_id": items[100 + t], "ts": start + 3 * DAY * t,
               "category_id": cats[(t % 2) + (2 if t >= 20 else 0)], "behavior": "buy" if t % 7 == 0 else "view"}
              for t in range(40)]
    events.append({"user_id": USER, "item_id": items[200], "ts": start + 121 * DAY})  # no category: the model's is shown
    events.append({"user_id": "newcomer", "item_id": "not-in-the-catalogue", "ts": start})  # only popularity for them
    r = client.post("/v1/events", json={"events": events}, headers=h(keys["write"]))
    assert r.json()["accepted"] == 42, r.text
    events = events[:-1]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dashboard-uvicorn", daemon=True)
    thread.start()
    deadline = time.time() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield SimpleNamespace(url=url, app=app, state=state, keys=keys, client=client, items=items, cats=cats, events=events)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextmanager
def no_forecaster(state: ServiceState):
    fc, state.forecast = state.forecast, None
    try:
        yield
    finally:
        state.forecast = fc


# -- plain HTTP -------------------------------------------------------------------------------


def test_the_dashboard_is_served_without_a_key_and_loads_nothing_from_elsewhere(dash):
    c = dash.client
    r = c.get("/dashboard", follow_redirects=False)
    assert r.status_code in (301, 307, 308) and r.headers["location"] == "/dashboard/"
    r = c.get("/dashboard")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert 'id="user-id"' in html and 'id="api-key"' in html
    assert "default-src 'none'" in r.headers["content-security-policy"] and "script-src 'self'" in r.headers["content-security-policy"]
    for name in ("dashboard.js", "dashboard.css"):
        f = c.get(f"/dashboard/{name}")
        assert f.status_code == 200 and f.text
        assert not re.search(r"https?://", f.text), f"{name} refers to another origin"
    # every script and stylesheet is local: no http(s):// or protocol-relative URL
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert re.findall(r'<script[^>]*src="([^"]+)"', html) == ["plotly.min.js", "dashboard.js"]
    js = c.get("/dashboard/plotly.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and len(js.content) > 1_000_000
    assert "max-age=" in js.headers["cache-control"] and js.headers.get("content-encoding") == "gzip"
    assert c.get("/dashboard/plotly.min.js", headers={"If-None-Match": js.headers["etag"]}).status_code == 304
    assert c.get("/dashboard/app.py").status_code == 404 and c.get("/dashboard/..%2Fapp.py").status_code == 404
    assert c.get("/metrics").status_code == 200  # the ops routes are untouched


def test_the_read_endpoints_behind_the_dashboard(dash):
    c, read = dash.client, h(dash.keys["read"])
    url = f"/v1/users/{USER}/events"
    assert c.get(url).status_code == 401
    r = c.get(url, headers=read)
    assert r.status_code == 200, r.text
    ev = r.json()["events"]
    assert [e["item_id"] for e in ev] == [e["item_id"] for e in dash.events]  # oldest first, under the raw id
    assert ev[0]["category_id"] == dash.cats[0] and ev[-1]["category_id"] is not None  # the model's category filled in
    assert [e["item_id"] for e in c.get(url + "?limit=3", headers=read).json()["events"]] == [e["item_id"] for e in dash.events[-3:]]
    assert c.get("/v1/users/nobody/events", headers=read).status_code == 404
    assert c.get(url + "?limit=0", headers=read).status_code == 422

    caps = c.get("/v1/capabilities", headers=read).json()
    assert caps["recommendations"] and caps["forecaster"] and caps["horizons"] == ["1d", "7d", "30d", "90d"]
    p = c.get("/v1/population?top=5", headers=read)
    assert p.status_code == 200, p.text
    pop = p.json()
    assert not pop["withheld"] and pop["n_users"] == len(dash.state.forecast.population.users) and len(pop["categories"]) == 5
    assert all(0 <= x["current_share"] <= 1 and set(x["forecast"]) == set(caps["horizons"]) for x in pop["categories"])
    assert all(0 <= x["forecast"]["30d"]["expected_users"] <= pop["n_users"] for x in pop["categories"])
    assert c.get("/v1/population").status_code == 401
    small = population_interests(dash.state.forecast.population, 5, min_users=10**9)
    assert small["withheld"] and small["categories"] == []
    with no_forecaster(dash.state):
        assert c.get("/v1/population", headers=read).status_code == 503
        assert c.get("/v1/capabilities", headers=read).json()["forecaster"] is False


# -- in the browser ---------------------------------------------------------------------------

# a Plotly chart is drawn: its SVG exists and some trace shape has an area on the screen
DRAWN = """(id) => {
  const svg = document.querySelector('#' + id + ' .main-svg');
  if (!svg || svg.getBoundingClientRect().width === 0) return false;
  return [...svg.querySelectorAll('.cartesianlayer .trace path')].some((p) => {
    const b = p.getBBox(); return b.width > 0 && b.height > 0; });
}"""


def wait_drawn(page, chart_id: str) -> None:
    page.wait_for_function(DRAWN, arg=chart_id, timeout=20_000)


def deliberate(errors: list[str], *statuses: int) -> list[str]:
    """The errors left once the browser's own log lines for the deliberate 4xx answers are dropped
    (Chromium logs every failed fetch as a console error; the page itself logs none)."""
    codes = "|".join(map(str, statuses))
    pat = re.compile(rf"Failed to load resource: the server responded with a status of ({codes})")
    return [e for e in errors if not (e.startswith("console.error") and pat.search(e))]


def test_a_user_in_the_dashboard(dash, page, artifacts):
    page.goto(f"{dash.url}/dashboard/#key={dash.keys['read']}")
    assert page.url.endswith("/dashboard/")  # the key left the address bar
    page.wait_for_selector("#key-status >> text=Key accepted")
    wait_drawn(page, "chart-population")
    assert page.locator("#segments-table tbody tr").count() >= 1
    page.fill("#user-id", USER)
    page.click("#lookup")
    page.wait_for_selector("#recs-table tbody tr")
    want = httpx.get(f"{dash.url}/v1/users/{USER}/recommendations", params={"k": 10}, headers=h(dash.keys["read"])).json()
    assert want["fallback"] is None and want["unknown_items_skipped"] == 0
    assert "fallback: none" in page.inner_text("#recs-meta") and page.locator("#recs-note").is_hidden()
    shown = page.eval_on_selector_all("#recs-table tbody tr", "rows => rows.map((r) => r.dataset.item)")
    assert shown == [x["item_id"] for x in want["items"]]
    for chart in ("chart-timeline", "chart-forecast"):
        wait_drawn(page, chart)
    assert page.locator("#forecast-drift li").count() == 4  # one line per horizon
    assert page.locator("#forecast-note").is_hidden() and page.locator("#user-message").is_hidden()
    timeline = page.evaluate("() => document.getElementById('chart-timeline').data.map((t) => t.name)")
    assert set(dash.cats) <= set(timeline)
    assert "41 events" in page.inner_text("#user-summary")

    page.click("#recs-table tbody tr:nth-child(2) button.explain")
    wait_drawn(page, "chart-explain-category")
    wait_drawn(page, "chart-explain-age")
    assert page.inner_text("#explain-item") == want["items"][1]["item_id"]
    assert "integrated gradients" in page.inner_text("#explain-meta")
    shot = artifacts / "dashboard_user.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.errors == []


def test_an_unknown_user_is_a_message_not_a_crash(dash, page):
    page.goto(f"{dash.url}/dashboard/#key={dash.keys['read']}&user=nobody-here")
    page.wait_for_selector("#user-message >> text=Unknown user")
    assert '"nobody-here"' in page.inner_text("#user-message")
    assert page.locator("#user-panels").is_hidden()
    page.fill("#user-id", USER)  # the page still works afterwards
    page.click("#lookup")
    page.wait_for_selector("#recs-table tbody tr")
    assert deliberate(page.errors, 404) == []


def test_a_popularity_fallback_is_flagged_and_not_explained(dash, page):
    page.goto(f"{dash.url}/dashboard/#key={dash.keys['read']}&user=newcomer")
    page.wait_for_selector("#recs-table tbody tr")
    assert "fallback: popularity" in page.inner_text("#recs-meta")
    assert "most popular items" in page.inner_text("#recs-note")
    assert page.locator("#recs-table button.explain:enabled").count() == 0
    assert page.errors == []


def test_a_wrong_key_is_an_auth_message(dash, page):
    page.goto(f"{dash.url}/dashboard/#key=evk_not-a-key&user={USER}")
    page.wait_for_selector("#user-message >> text=API key was not accepted")
    assert "not accepted" in page.inner_text("#key-status")
    assert page.locator("#user-panels").is_hidden() and page.locator("#population-panels").is_hidden()
    assert deliberate(page.errors, 401) == []


def test_without_a_forecaster_the_forecast_views_say_so(dash, page, artifacts):
    with no_forecaster(dash.state):
        page.goto(f"{dash.url}/dashboard/#key={dash.keys['read']}&user={USER}")
        page.wait_for_selector("#recs-table tbody tr")
        page.wait_for_selector("#forecast-note >> text=No interest forecaster")
        page.wait_for_selector("#population-note >> text=No interest forecaster")
        wait_drawn(page, "chart-timeline")
        assert page.locator("#chart-forecast").is_hidden()
        page.screenshot(path=str(artifacts / "dashboard_no_forecaster.png"), full_page=True)
    assert page.errors == []  # no 503 was even asked for
