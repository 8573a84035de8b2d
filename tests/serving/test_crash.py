"""Kill the server during an event batch (issue #6): on restart the store holds either the whole
batch or none of it -- on SQLite and on a real PostgreSQL.

A real ``evorec serve`` child process gets batches of N = 10,000 valid events (the most one request
may carry; every event has its own ``event_id``, each batch its own prefix and user) and is killed
with SIGKILL (no shutdown handler, no rollback) at different moments of a batch:

- ``0ms``, ``20ms``, ``60ms``, ``150ms`` after the request body starts to go out (on this machine
  a batch takes ~130 ms: reading and validating the body ~100 ms, then the insert ~20 ms);
- ``in-transaction``: as soon as another connection sees the server's write transaction open
  (SQLite: the write lock is taken, ``BEGIN IMMEDIATE`` fails; PostgreSQL: the server's backend
  has a transaction id, i.e. has written rows not yet committed);
- ``after-response``: once the 200 arrived (what the API said it accepted must survive).

After each kill the store is counted directly (all-or-nothing per batch), the next attempt runs on
a restarted server, and a last restart reads every batch back through the API and retries it: the
event ids make the retry exactly-once (a stored batch comes back as duplicates, a lost one is
accepted whole). The outcomes are recorded in test-artifacts/serve_crash_<store>.json and printed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx
import live_server
import pytest
from sqlalchemy import create_engine, text

N = 10_000  # ServeSettings.max_events_per_request: the largest batch one request may carry
ATTEMPTS = ("0ms", "20ms", "60ms", "150ms", "in-transaction", "after-response")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class SqliteProbe:
    """Is a write transaction open on the SQLite file? ``BEGIN IMMEDIATE`` takes the write lock at
    once; it fails (timeout 0) exactly while another connection holds it, i.e. between the
    server's first INSERT and its COMMIT. On success it rolls straight back (the server's busy
    handler waits out the microseconds it held the lock)."""

    def __init__(self, path: Path):
        self.con = sqlite3.connect(path, timeout=0, isolation_level=None)

    def writing(self) -> bool:
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # database is locked: the writer is inside its transaction
            return True
        self.con.execute("ROLLBACK")
        return False

    def close(self) -> None:
        self.con.close()


class PostgresProbe:
    """Is a write transaction open on PostgreSQL? A backend gets a transaction id (backend_xid)
    with its first write and keeps it until COMMIT or ROLLBACK."""

    def __init__(self, url: str):
        import psycopg

        self.con = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def writing(self) -> bool:
        q = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
             "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL")
        return bool(self.con.execute(q).fetchone()[0])

    def close(self) -> None:
        self.con.close()


def batch_body(prefix: str, items: list[str]) -> bytes:
    events = [{"event_id": f"{prefix}-{i:05d}", "user_id": f"user-{prefix}", "item_id": items[i % len(items)],
               "behavior": "view", "ts": 1_700_000_000 + i} for i in range(N)]
    return json.dumps({"events": events}).encode()


def stored(engine, prefix: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM events WHERE event_id LIKE :p"), {"p": f"{prefix}-%"}).scalar_one())


def attempt(server: live_server.Server, key: str, prefix: str, items: list[str], when: str, probe) -> dict:
    """Post one batch and SIGKILL the server at ``when``; return what the client saw and when."""
    body = batch_body(prefix, items)
    started = threading.Event()
    seen: dict = {}

    def chunks():
        started.set()  # request line and headers are out: the body starts now
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    def send() -> None:
        try:
            r = httpx.post(f"{server.base}/v1/events", content=chunks(), timeout=60,
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                    "Content-Length": str(len(body))})
            seen["client"] = f"HTTP {r.status_code}"
            seen["accepted"] = r.json().get("accepted") if r.status_code == 200 else None
        except httpx.TransportError as exc:  # the connection died under the request
            seen["client"] = f"connection error ({type(exc).__name__})"
        seen["client_done_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    assert started.wait(30), "the client never started sending"
    t0 = time.perf_counter()
    in_tx = False
    if when == "after-response":
        sender.join(60)
    elif when == "in-transaction":
        while sender.is_alive() and time.perf_counter() - t0 < 30:
            if probe.writing():
                in_tx = True
                break
            time.sleep(0.0005)
    else:
        time.sleep(max(0.0, t0 + int(when.removesuffix("ms")) / 1000 - time.perf_counter()))
    killed_at = time.perf_counter() - t0
    server.kill()
    sender.join(60)
    assert not sender.is_alive(), "the client hung after the server died"
    return {"when": when, "prefix": prefix, "killed_at_ms": round(killed_at * 1000, 1), "in_transaction": in_tx,
            "mid_request": seen["client"].startswith("connection error"), **seen}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> tuple[str, str, object]:
    if request.param == "sqlite":
        db = tmp_path / "serve.db"
        return "sqlite", f"sqlite:///{db}", lambda: SqliteProbe(db)
    url = request.getfixturevalue("postgres_url")  # a real server; `.ci/run` guarantees it
    return "postgresql", url, lambda: PostgresProbe(url)


def test_killed_mid_batch_stores_all_or_nothing(store_url, trained_run, tmp_path):
    from evorec.experiments.runs import TrainingRun

    kind, url, make_probe = store_url
    items = list(TrainingRun(trained_run).checkpoint.vocabs.items)
    env = live_server.clean_env(EVOREC_SECRET="crash-test-secret", EVOREC_SERVE_TORCH_THREADS="1")
    key = live_server.create_key("write", url, env)  # also creates the schema
    admin = live_server.create_key("admin", url, env)
    engine = create_engine(url)
    run_id = uuid.uuid4().hex[:8]  # the PostgreSQL server is shared by the session: unique prefixes
    log = tmp_path / "serve.log"
    results: list[dict] = []
    t_start = time.perf_counter()
    probe = make_probe()
    try:
        for j, when in enumerate(ATTEMPTS):
            server = live_server.serve(trained_run, url, env, log)  # a restart after the previous kill
            try:
                for retry in range(3):
                    res = attempt(server, key, f"crash-{run_id}-{j}{'abc'[retry]}", items, when, probe)
                    if when != "in-transaction" or res["in_transaction"] or res["mid_request"]:
                        break
                    # The probe missed the (~20 ms) transaction and the kill came after the response:
                    # keep the record (it is still a kill), restart and try another batch.
                    res["stored"], res["note"] = stored(engine, res["prefix"]), "probe missed the transaction"
                    assert res["stored"] in (0, N), f"partial batch after a kill: {res}"
                    results.append(res)
                    server = live_server.serve(trained_run, url, env, log)
            finally:
                server.kill()
            res["stored"] = stored(engine, res["prefix"])
            results.append(res)
            assert res["stored"] in (0, N), f"partial batch after a kill: {res}"

        # The last restart: every batch through the API, then retried (event ids: exactly once).
        server = live_server.serve(trained_run, url, env, log)
        try:
            with httpx.Client(base_url=server.base, timeout=60, headers={"Authorization": f"Bearer {admin}"}) as c:
                for res in results:
                    r = c.get(f"/v1/users/user-{res['prefix']}")
                    via_api = r.json()["events"] if r.status_code == 200 else 0
                    assert r.status_code in (200, 404) and via_api == res["stored"], (r.status_code, r.text, res)
                    res["outcome"] = "whole" if res["stored"] == N else "none"
                    again = c.post("/v1/events", content=batch_body(res["prefix"], items),
                                   headers={"Content-Type": "application/json"}).json()
                    assert (again["accepted"], again["duplicates"]) == ((0, N) if res["stored"] == N else (N, 0)), again
                    assert stored(engine, res["prefix"]) == N
        finally:
            server.stop()
    finally:
        probe.close()
        engine.dispose()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"serve_crash_{kind}.json").write_text(json.dumps(
            {"store": kind, "batch": N, "seconds": round(time.perf_counter() - t_start, 1), "attempts": results}, indent=2))
        for r in results:
            print(f"[{kind}] {r['when']:>15} killed at {r['killed_at_ms']:7.1f} ms  in_tx={r['in_transaction']!s:5}  "
                  f"client: {r['client']:<40} stored {r['stored']:>5} / {N}  {r.get('note', '')}")

    outcomes = {r["outcome"] for r in results if "outcome" in r}
    by_when = {r["when"]: r for r in results if "note" not in r}
    assert by_when["after-response"]["accepted"] == N and by_when["after-response"]["stored"] == N  # accepted = durable
    assert any(r["mid_request"] for r in results), "no attempt killed the server while the request was open"
    assert by_when["in-transaction"]["in_transaction"] or by_when["in-transaction"]["mid_request"], by_when["in-transaction"]
    assert outcomes == {"whole", "none"}, f"both outcomes should occur across the attempts: {results}"
