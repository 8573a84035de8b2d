"""Load benchmark of ``evorec serve`` on loopback: an open-loop mix of recommendations and event posts.

The issue's target: 200 requests/s, 80% ``GET /v1/users/{id}/recommendations?k=10`` and 20%
``POST /v1/events`` (one new event each), for 60 s against one uvicorn worker on this machine;
p99 <= 30 ms, zero errors, zero events lost (events in the store == events the API accepted).

What the script does:

0. with ``--wait-quiet L``, first waits (polling every 20 s, at most ``--wait-max`` s) until the
   1-minute load average is below ``L``, and runs anyway when it never gets there;
1. makes a fresh store with a read and a write key: ``--db sqlite`` (default) a SQLite file in
   ``benchmarks/scratch/serve_load/``; ``--db postgres`` a throwaway PostgreSQL cluster on loopback
   (``benchmarks/_pg.py``: ``initdb`` in a temp dir as the ``postgres`` user, a free port,
   ``pg_ctl start``; stopped and removed at the end, also on an error or Ctrl-C), served through
   ``postgresql+psycopg://``;
2. starts ``evorec serve --run RUN --host 127.0.0.1 --port P --db URL`` (one worker) as a child
   process with its own pseudonymisation secret and waits for ``/readyz`` == 200;
3. pre-loads ``--users`` histories through the API (``POST /v1/events`` in batches): each user's
   latest ``--history`` events of a real Amazon-Beauty (S3-Rec) sequence when the shared data
   file is there, else uniformly random items of the model's vocabulary;
4. warms up (sequential requests, not measured), then drives an **open-loop** schedule: request
   ``i`` is due at ``t0 + i / rate`` (``--arrivals poisson`` draws exponential gaps instead)
   whatever the earlier requests are doing; ``httpx.AsyncClient`` over HTTP/1.1 keep-alive with
   a pool of ``--connections`` connections. **Latency is measured from the planned send time to
   the end of the response**, so time spent queued (in the client's pool, the server's accept
   queue or its thread pool) is counted; the send-to-response "service" time is reported too;
   With ``--burn N``, N CPU burners (``python -c "while True: pass"``, children of this script)
   run from 2 s before the schedule starts until it ends: a deliberate noisy neighbour;
5. counts every non-2xx answer, timeout or exception as an error; afterwards compares the rows
   in the store (``sqlite3`` on the file, or SQLAlchemy on PostgreSQL) with the sum of
   ``accepted`` of all responses (preload + run);
6. reads the server's own ``/metrics`` histogram before and after the run (server-side mean);
7. stops the server (SIGINT, then SIGTERM) and, with the machine otherwise idle, times the parts
   of one recommendation in-process (key lookup, history query, model forward + top-k) so the
   table says where the time goes.

Run from the project root::

    .venv/bin/python benchmarks/serve_load.py                         # 200 req/s for 60 s
    .venv/bin/python benchmarks/serve_load.py --rate 400 --duration 30
    .venv/bin/python benchmarks/serve_load.py --db postgres --wait-quiet 0.8   # PostgreSQL store
    .venv/bin/python benchmarks/serve_load.py --burn 1 --out benchmarks/results/serve_load_contention.json

Prints a markdown table and writes ``benchmarks/results/serve_load.json`` (``serve_load_postgres.json``
with ``--db postgres``). The client runs on the
same machine as the server and takes CPU from it: the numbers are for client and server sharing
the cores (the load average before the run is reported).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _pg import Cluster, throwaway_postgres, tree_cpu_seconds  # benchmarks/_pg.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN = ROOT / "benchmarks" / "scratch" / "reproduce" / "sasrec"
FALLBACK_RUN = ROOT / "benchmarks" / "scratch" / "serve_run"
SCRATCH = ROOT / "benchmarks" / "scratch" / "serve_load"
RESULTS = ROOT / "benchmarks" / "results"
BEAUTY = ROOT.parent / "shared" / "data" / "amazon_s3rec_seq" / "Beauty.txt"
EVOREC = Path(sys.executable).with_name("evorec")
ROUTES = ("recommendations", "events")


# -- setup ------------------------------------------------------------------------------------


def ensure_run(run: Path) -> Path:
    """The run directory to serve; trains a short SASRec on Beauty when the default one is missing."""
    from evorec.experiments.runs import TrainingRun

    if TrainingRun(run).finished:
        return run
    if run != DEFAULT_RUN:
        sys.exit(f"{run} is not a finished training run (no {TrainingRun(run).best_checkpoint.name})")
    if TrainingRun(FALLBACK_RUN).finished:
        return FALLBACK_RUN
    print(f"{run} is not a finished training run: training one (60 s budget) into {FALLBACK_RUN} ...", flush=True)
    subprocess.run(
        [str(EVOREC), "train", "--config", "configs/beauty/sasrec.yaml", "--out", str(FALLBACK_RUN), "--time-budget", "60"],
        cwd=ROOT, check=True,
    )
    return FALLBACK_RUN


def item_ids(run: Path) -> list[str]:
    from evorec.experiments.runs import TrainingRun

    return list(TrainingRun(run).checkpoint.vocabs.items)


def histories(n_users: int, per_user: int, items: list[str], rng: random.Random) -> tuple[dict[str, list[str]], str]:
    """{raw user id: item ids oldest first} for ``n_users`` users."""
    known = set(items)
    if BEAUTY.exists():
        seqs = []
        for line in BEAUTY.read_text().splitlines():
            parts = line.split()
            seq = [x for x in parts[1:] if x in known]
            if seq:
                seqs.append(seq[-per_user:])
        chosen = rng.sample(seqs, min(n_users, len(seqs)))
        return {f"load-user-{u:06d}": s for u, s in enumerate(chosen)}, "latest events of real Amazon-Beauty (S3-Rec) sequences"
    return ({f"load-user-{u:06d}": rng.choices(items, k=per_user) for u in range(n_users)},
            "uniformly random items of the model's vocabulary (Beauty.txt not found)")


def start_server(run: Path, port: int, db_url: str, log_path: Path, secret: str, forecast_run: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env["EVOREC_SECRET"] = secret  # a fresh pseudonymisation key for this store
    for k in ("EVOREC_SERVE_RUN", "EVOREC_SERVE_DB_URL", "EVOREC_SERVE_FORECAST_RUN"):
        env.pop(k, None)
    if forecast_run is not None:
        env["EVOREC_SERVE_FORECAST_RUN"] = str(forecast_run)
    cmd = [str(EVOREC), "serve", "--run", str(run), "--host", "127.0.0.1", "--port", str(port), "--db", db_url]
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(proc: subprocess.Popen) -> str:
    if proc.poll() is not None:
        return f"already exited (rc {proc.returncode})"
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10)):
        proc.send_signal(sig)
        try:
            proc.wait(wait)
            return f"stopped by {sig.name} (rc {proc.returncode})"
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    proc.wait()
    return "killed"


async def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 180) -> float:
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=5) as c:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with rc {proc.returncode} before it was ready")
            try:
                if (await c.get("/readyz")).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout:.0f} s")


def server_hist(text: str) -> dict[str, tuple[float, float]]:
    """{route: (sum seconds, count)} of the server's evorec_request_seconds histogram."""
    out: dict[str, list[float]] = {}
    for m in re.finditer(r'^evorec_request_seconds_(sum|count)\{route="([^"]*)"\} ([0-9.e+-]+)$', text, re.MULTILINE):
        kind, route, v = m.group(1), m.group(2), float(m.group(3))
        out.setdefault(route, [0.0, 0.0])[0 if kind == "sum" else 1] = v
    return {k: (v[0], v[1]) for k, v in out.items()}


# -- the load ---------------------------------------------------------------------------------


class Load:
    def __init__(self, client: httpx.AsyncClient, users: list[str], items: list[str], read_key: str, write_key: str, k: int):
        self.c, self.users, self.items, self.k = client, users, items, k
        self.read_h = {"Authorization": f"Bearer {read_key}"}
        self.write_h = {"Authorization": f"Bearer {write_key}"}
        self.records: list[dict[str, Any]] = []
        self.accepted = 0
        self.posted = 0
        self.error_samples: list[str] = []
        self.t0 = time.perf_counter()

    async def one(self, route: str, planned: float, rng: random.Random) -> None:
        sent = time.perf_counter()
        rec: dict[str, Any] = {"route": route, "lag": sent - planned, "ok": False, "t": planned - self.t0}
        user = rng.choice(self.users)
        try:
            if route == "recommendations":
                r = await self.c.get(f"/v1/users/{user}/recommendations", params={"k": self.k}, headers=self.read_h)
                body = r.json() if r.status_code == 200 else {}
                ok = r.status_code == 200 and len(body["items"]) > 0
                rec["history_used"] = body.get("history_used")
            else:
                ev = {"event_id": f"load-{uuid.uuid4().hex}", "user_id": user, "item_id": rng.choice(self.items),
                      "behavior": "view", "ts": int(time.time())}
                self.posted += 1
                r = await self.c.post("/v1/events", json={"events": [ev]}, headers=self.write_h)
                ok = r.status_code == 200
                if ok:
                    body = r.json()
                    self.accepted += int(body["accepted"])
                    ok = body["accepted"] == 1
            rec["status"] = r.status_code
            rec["ok"] = ok
            if not ok and len(self.error_samples) < 10:
                self.error_samples.append(f"{route}: HTTP {r.status_code} {r.text[:200]}")
        except Exception as exc:  # noqa: BLE001 - every failure is an error of the run
            rec["status"] = type(exc).__name__
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{route}: {type(exc).__name__}: {exc}")
        done = time.perf_counter()
        rec["latency"] = done - planned
        rec["service"] = done - sent
        self.records.append(rec)

    async def run(self, rate: float, duration: float, read_share: float, arrivals: str, seed: int, drain: float) -> dict[str, Any]:
        rng = random.Random(seed)
        n = round(rate * duration)
        if arrivals == "poisson":
            offsets = np.cumsum(np.random.default_rng(seed).exponential(1 / rate, n))
            offsets = offsets[offsets < duration]
        else:
            offsets = np.arange(n) / rate
        routes = ["recommendations" if rng.random() < read_share else "events" for _ in offsets]
        loop_t0 = self.t0 = time.perf_counter() + 0.05
        tasks = []
        for off, route in zip(offsets, routes):
            planned = loop_t0 + float(off)
            delay = planned - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(route, planned, random.Random(rng.random()))))
        sent_until = time.perf_counter() - loop_t0
        _, pending = await asyncio.wait(tasks, timeout=drain)
        for t in pending:  # bounded in time: what is still open after the drain is an error
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for _ in pending:
            self.records.append({"route": "unfinished", "ok": False, "status": "cancelled", "latency": math.nan, "service": math.nan, "lag": 0.0})
        return {"scheduled": len(offsets), "send_window_s": sent_until, "wall_s": time.perf_counter() - loop_t0,
                "unfinished": len(pending)}


class ClientGC:
    """Records this (client) process's garbage collections while active: a full collection stalls
    the client's event loop, and that stall is counted in the latency of the requests due then."""

    def __init__(self) -> None:
        self.pauses: list[dict[str, float]] = []
        self._start = 0.0
        self.t0 = time.perf_counter()

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append({"generation": info["generation"], "at_s": self._start - self.t0,
                                "ms": (time.perf_counter() - self._start) * 1000})

    def __enter__(self) -> ClientGC:  # noqa: PYI034 - Self needs Python 3.11
        self.t0 = time.perf_counter()
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._cb)

    def summary(self) -> dict[str, Any]:
        full = [p for p in self.pauses if p["generation"] == 2]
        return {"collections": len(self.pauses), "total_ms": sum(p["ms"] for p in self.pauses),
                "max_ms": max((p["ms"] for p in self.pauses), default=0.0),
                "full_collections": [{"at_s": round(p["at_s"], 2), "ms": round(p["ms"], 1)} for p in full]}


def cpu_seconds(pid: int) -> tuple[float, float, float]:
    """(machine busy CPU seconds, server process CPU seconds, this process's CPU seconds) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = (sum(f) - f[3] - f[4]) / tick  # everything but idle and iowait
    st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    server = (int(st[11]) + int(st[12])) / tick  # utime + stime
    me = os.times()
    return busy, server, me.user + me.system


def slow_analysis(records: list[dict[str, Any]], limit: float = 0.030) -> dict[str, Any]:
    """When the requests over ``limit`` happened, and how many were the first request at a new
    history length (the model's first forward at a new sequence length is slow)."""
    slow = [r for r in records if r["ok"] and r["latency"] > limit]
    per_sec: dict[int, int] = {}
    for r in slow:
        per_sec[int(r["t"])] = per_sec.get(int(r["t"]), 0) + 1
    seen: set[int] = set()
    first_len = 0
    for r in sorted(records, key=lambda r: r["t"]):
        h = r.get("history_used")
        if h is not None and h not in seen:
            seen.add(h)
            first_len += r["ok"] and r["latency"] > limit
    worst = sorted(per_sec.items(), key=lambda kv: -kv[1])[:10]
    return {"slow": len(slow), "seconds_with_slow": len(per_sec), "worst_seconds": [{"second": s, "slow": n} for s, n in worst],
            "slow_in_worst_5_seconds": sum(n for _, n in worst[:5]), "history_lengths_seen": sorted(seen),
            "slow_that_were_first_at_a_history_length": first_len}


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) * 1000 if xs else float("nan")


def summarise(records: list[dict[str, Any]], route: str | None) -> dict[str, Any]:
    rs = [r for r in records if route is None or r["route"] == route]
    lat = [r["latency"] for r in rs if r["ok"]]
    svc = [r["service"] for r in rs if r["ok"]]
    return {
        "requests": len(rs), "ok": len(lat), "errors": sum(not r["ok"] for r in rs),
        "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99), "max_ms": max(lat) * 1000 if lat else float("nan"),
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
        "service_p50_ms": pct(svc, 50), "service_p99_ms": pct(svc, 99),
        "over_30ms": sum(x > 0.030 for x in lat),
    }


# -- where the time goes (in-process, server stopped) -----------------------------------------


def breakdown(run: Path, db_url: str, secret: str | None, users: list[str], read_key: str, n: int, seed: int) -> dict[str, Any]:
    """Mean/p99 ms of the parts of one recommendation, timed in this process on the same store."""
    import torch

    from evorec.serving.eventlog import EventStore, StoredEvent
    from evorec.serving.state import ModelState
    from evorec.utils.privacy import Pseudonymizer

    store = EventStore(db_url)
    model = ModelState.from_run(run)
    pseudo = Pseudonymizer(secret.encode()) if secret else None
    rng = random.Random(seed)
    for t in range(1, model.history_len + 1):  # the first forward at each sequence length is slow: warm all up
        model.recommend([StoredEvent(model.items[1 + j], None, "view", 1000 + j) for j in range(t)], 10)
    parts: dict[str, list[float]] = {"role_of (key lookup)": [], "recent (history query)": [], "batch (tensors)": [],
                                     "model.score (forward)": [], "recommend (batch+forward+top-k)": []}
    warm = 50
    for i in range(n + warm):
        u = rng.choice(users)
        uid = pseudo(u) if pseudo else u
        t0 = time.perf_counter()
        store.role_of(read_key)
        t1 = time.perf_counter()
        hist = store.recent(uid, model.history_len * 4)
        t2 = time.perf_counter()
        b, _ = model.batch(hist, int(time.time()))
        t3 = time.perf_counter()
        with torch.no_grad():
            model.model.score(b)
        t4 = time.perf_counter()
        model.recommend(hist, 10)
        t5 = time.perf_counter()
        if i >= warm:
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                parts[key].append(dt)
    return {k: {"mean_ms": statistics.fmean(v) * 1000, "p99_ms": pct(v, 99)} for k, v in parts.items()} | {
        "_torch_threads": torch.get_num_threads(), "_samples": n}


# -- /interests beside /recommendations (closed loop, one request at a time) -------------------


def event_histories(path: Path, n_users: int, per_user: int, rng: random.Random) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """{raw user id: the latest ``per_user`` events, oldest first} of ``n_users`` random users of an
    event file (e.g. the simulator's Parquet the forecast run was trained on), every timestamp
    moved by one shift so that the file's last event is one day before now."""
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["user_id", "item_id", "category_id", "behavior", "ts"]).to_pydict()
    by_user: dict[str, list[int]] = {}
    for i, u in enumerate(t["user_id"]):
        by_user.setdefault(u, []).append(i)
    shift = int(time.time()) - 86_400 - max(t["ts"])
    chosen = rng.sample(sorted(by_user), min(n_users, len(by_user)))
    out = {}
    for u in chosen:
        rows = sorted(by_user[u], key=lambda i: t["ts"][i])[-per_user:]
        out[f"load-user-{u}"] = [{"item_id": t["item_id"][i], "category_id": t["category_id"][i], "behavior": t["behavior"][i],
                                  "ts": int(t["ts"][i]) + shift} for i in rows]
    return out, f"latest events of {len(out)} random users of {rel(path)} (timestamps shifted: the file's last event = now - 1 day)"


async def bench_interests(args: argparse.Namespace, secret: str) -> dict[str, Any]:
    """``GET /v1/users/{id}/interests`` and ``GET /v1/users/{id}/recommendations`` of the same
    users, one request at a time against a server with a recommender and a forecast run loaded."""
    from evorec.serving.eventlog import EventStore
    from evorec.utils.hardware import machine_record

    run, forecast_run = ensure_run(Path(args.run).resolve()), Path(args.interests).resolve()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    db_path = SCRATCH / "serve_interests.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    db_url = f"sqlite:///{db_path}"
    store = EventStore(db_url)
    read_key, write_key = store.create_key("read", "serve-interests"), store.create_key("write", "serve-interests")
    store.engine.dispose()
    rng = random.Random(args.seed)
    hist, hist_source = event_histories(Path(args.events), args.users, args.history, rng)
    users = list(hist)
    paths = {"interests": "/v1/users/{user_id}/interests", "recommendations": "/v1/users/{user_id}/recommendations"}
    params = {"interests": {"top": 10}, "recommendations": {"k": 10}}
    load_before = os.getloadavg()
    proc = start_server(run, args.port, db_url, SCRATCH / "server_interests.log", secret, forecast_run)
    base = f"http://127.0.0.1:{args.port}"
    lat: dict[str, list[float]] = {r: [] for r in paths}
    errors: dict[str, int] = {r: 0 for r in paths}
    samples: list[str] = []
    try:
        ready_s = await wait_ready(base, proc)
        async with httpx.AsyncClient(base_url=base, timeout=args.timeout) as c:
            wh, rh = {"Authorization": f"Bearer {write_key}"}, {"Authorization": f"Bearer {read_key}"}
            batch: list[dict[str, Any]] = []
            for u, evs in hist.items():
                batch += [{"event_id": f"pre-{u}-{j}", "user_id": u, **e} for j, e in enumerate(evs)]
                if len(batch) >= 1000 or u == users[-1]:
                    (await c.post("/v1/events", json={"events": batch}, headers=wh, timeout=120)).raise_for_status()
                    batch = []
            for u in users[: args.warmup]:  # not measured
                for route in paths:
                    (await c.get(paths[route].format(user_id=u), params=params[route], headers=rh)).raise_for_status()
            m_before = server_hist((await c.get("/metrics")).text)
            load_at_start = os.getloadavg()
            for i in range(args.requests):
                u = users[i % len(users)]
                for route in (paths if i % 2 == 0 else reversed(list(paths))):  # alternate which goes first
                    t0 = time.perf_counter()
                    r = await c.get(paths[route].format(user_id=u), params=params[route], headers=rh)
                    dt = time.perf_counter() - t0
                    if r.status_code == 200:
                        lat[route].append(dt)
                    else:
                        errors[route] += 1
                        if len(samples) < 10:
                            samples.append(f"{route}: HTTP {r.status_code} {r.text[:200]}")
            m_after = server_hist((await c.get("/metrics")).text)
            load_after = os.getloadavg()
    finally:
        stop_msg = stop_server(proc)
    machine = machine_record("fp32")
    per_route = {}
    for route, xs in lat.items():
        s1, c1 = m_after.get(paths[route], (0.0, 0.0))
        s0, c0 = m_before.get(paths[route], (0.0, 0.0))
        per_route[route] = {"requests": len(xs) + errors[route], "errors": errors[route], "p50_ms": pct(xs, 50), "p95_ms": pct(xs, 95),
                            "p99_ms": pct(xs, 99), "mean_ms": statistics.fmean(xs) * 1000 if xs else float("nan"),
                            "max_ms": max(xs) * 1000 if xs else float("nan"),
                            "server_side_mean_ms": (s1 - s0) / (c1 - c0) * 1000 if c1 > c0 else float("nan")}
    return {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "code": args.code or "working tree at " + subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                                                     text=True).stdout.strip(),
        "machine": f"{machine.line()}, Python {platform.python_version()}",
        "cpu": machine.as_json(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_after": [round(x, 2) for x in load_after],
        "waited_for_quiet": getattr(args, "_waited", None),
        "run": rel(run),
        "forecast_run": rel(forecast_run),
        "versions": versions(),
        "protocol": {
            "server": ("evorec serve --run RUN (EVOREC_SERVE_FORECAST_RUN=FORECAST_RUN), 1 uvicorn worker, 127.0.0.1, SQLite store, "
                       f"pseudonymisation on, torch threads {os.environ.get('EVOREC_SERVE_TORCH_THREADS', '1 (default)')}"),
            "client": "httpx.AsyncClient on the same machine, HTTP/1.1 keep-alive, one request at a time (closed loop)",
            "requests": (f"{args.requests} rounds over the preloaded users in turn; each round GET interests?top=10 and GET "
                         "recommendations?k=10 of the same user, alternating which goes first"),
            "latency": "send to end of response, status 200 only (anything else is an error)",
            "preload": f"{len(users)} users x up to {args.history} events ({hist_source}), POSTed in batches of 1000",
            "warmup": f"{min(args.warmup, len(users))} users x both routes, not measured",
        },
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "server_ready_s": ready_s,
        "per_route": per_route,
        "error_samples": samples,
        "server_stop": stop_msg,
    }


def report_interests(res: dict[str, Any]) -> str:
    lines = [
        f"/interests beside /recommendations, {res['when']}; code: {res['code']}",
        f"CPU: {res['cpu'].get('cpu_model')}; torch.backends.cpu.get_cpu_capability() = {res['cpu'].get('torch_cpu_capability')}",
        f"machine: {res['machine']}",
        f"load average before {res['load_average_before']} (at start {res['load_average_at_start']}, after {res['load_average_after']})",
        f"runs: recommender {res['run']}, forecaster {res['forecast_run']}; server ready in {res['server_ready_s']:.1f} s",
        "protocol: " + "; ".join(f"{k}: {v}" for k, v in res["protocol"].items()),
        "",
        "| route | requests | errors | p50 ms | p95 ms | p99 ms | mean ms | max ms | server-side mean ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in res["per_route"].items():
        lines.append(f"| {name} | {s['requests']:,} | {s['errors']} | {fmt(s['p50_ms'])} | {fmt(s['p95_ms'])} | {fmt(s['p99_ms'])} | "
                     f"{fmt(s['mean_ms'])} | {fmt(s['max_ms'])} | {fmt(s['server_side_mean_ms'])} |")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


def store_info(db_url: str) -> dict[str, Any]:
    """The store's kind and the database server's version (SQLite: the library the server links)."""
    if db_url.startswith("sqlite"):
        return {"kind": "sqlite", "version": f"SQLite {sqlite3.sqlite_version}", "mode": "WAL, synchronous=NORMAL",
                "url": "sqlite:///" + rel(Path(db_url.removeprefix("sqlite:///")))}
    import sqlalchemy as sa

    eng = sa.create_engine(db_url)
    try:
        with eng.connect() as con:
            version = con.execute(sa.text("select version()")).scalar_one()
            settings = {k: con.execute(sa.text(f"show {k}")).scalar_one()
                        for k in ("fsync", "synchronous_commit", "shared_buffers", "max_connections")}
    finally:
        eng.dispose()
    return {"kind": "postgres", "version": version, "settings": settings,
            "url": db_url, "note": "throwaway cluster on loopback (benchmarks/_pg.py), trust auth, started with -F (fsync off)"}


def count_events(db_url: str) -> tuple[int, int]:
    """(all rows of the events table, rows posted during the run) in the store."""
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as con:
            return (con.execute("select count(*) from events").fetchone()[0],
                    con.execute("select count(*) from events where event_id like 'load-%'").fetchone()[0])
    import sqlalchemy as sa

    eng = sa.create_engine(db_url)
    try:
        with eng.connect() as con:
            return (con.execute(sa.text("select count(*) from events")).scalar_one(),
                    con.execute(sa.text("select count(*) from events where event_id like 'load-%'")).scalar_one())
    finally:
        eng.dispose()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("evorec", "uvicorn", "fastapi", "starlette", "pydantic", "sqlalchemy", "psycopg", "torch", "httpx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def start_burners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def burners_cpu(procs: list[subprocess.Popen]) -> float:
    """CPU seconds the burners have used so far."""
    used = 0.0
    for p in procs:
        st = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        used += (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
    return used


def stop_burners(procs: list[subprocess.Popen]) -> None:
    for p in procs:  # each by its own pid
        if p.poll() is None:
            p.kill()
        p.wait()


def rel(p: Path) -> str:
    p = Path(p).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


async def bench(args: argparse.Namespace, secret: str, pg: Cluster | None = None) -> dict[str, Any]:
    from evorec.serving.eventlog import EventStore

    run = ensure_run(Path(args.run).resolve())
    SCRATCH.mkdir(parents=True, exist_ok=True)
    if pg is None:
        db_path = SCRATCH / "serve_load.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        db_url = f"sqlite:///{db_path}"
    else:
        db_url = pg.url  # a fresh, empty cluster
    store = EventStore(db_url)
    info = store_info(db_url)
    read_key, write_key = store.create_key("read", "serve-load"), store.create_key("write", "serve-load")
    store.engine.dispose()

    rng = random.Random(args.seed)
    items = item_ids(run)
    hist, hist_source = histories(args.users, args.history, items, rng)
    users = list(hist)

    load_before = os.getloadavg()
    proc = start_server(run, args.port, db_url, SCRATCH / "server.log", secret)
    base = f"http://127.0.0.1:{args.port}"
    out: dict[str, Any] = {}
    try:
        ready_s = await wait_ready(base, proc)
        limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=args.timeout, http2=False) as c:
            # preload through the API (the server pseudonymises the ids, as it would in production)
            t0 = time.perf_counter()
            now = int(time.time()) - 86_400
            batch, preload_accepted, preload_events = [], 0, 0
            wh = {"Authorization": f"Bearer {write_key}"}
            for u, seq in hist.items():
                for j, item in enumerate(seq):
                    batch.append({"event_id": f"pre-{u}-{j}", "user_id": u, "item_id": item, "behavior": "view", "ts": now - 60 * (len(seq) - j)})
                if len(batch) >= 1000 or u == users[-1]:
                    r = await c.post("/v1/events", json={"events": batch}, headers=wh, timeout=120)
                    r.raise_for_status()
                    preload_accepted += r.json()["accepted"]
                    preload_events += len(batch)
                    batch = []
            preload_s = time.perf_counter() - t0
            # warm-up: not measured
            rh = {"Authorization": f"Bearer {read_key}"}
            for u in users[: args.warmup]:
                (await c.get(f"/v1/users/{u}/recommendations", params={"k": 10}, headers=rh)).raise_for_status()
            m_before = server_hist((await c.get("/metrics")).text)

            burners = start_burners(args.burn)
            try:
                if burners:
                    await asyncio.sleep(2.0)  # the burners are on the cores before the first request
                load_at_start = os.getloadavg()
                cpu0, b0 = cpu_seconds(proc.pid), burners_cpu(burners)
                pg0 = tree_cpu_seconds(pg.pid) if pg else 0.0
                lg = Load(c, users, items, read_key, write_key, k=10)
                if args.gc_freeze:  # setup objects (torch, histories) out of the client's full collections
                    gc.collect()
                    gc.freeze()
                with ClientGC() as client_gc:
                    sched = await lg.run(args.rate, args.duration, 0.8, args.arrivals, args.seed, args.drain)
                cpu1, burner_cpu = cpu_seconds(proc.pid), burners_cpu(burners) - b0
                pg_cpu = tree_cpu_seconds(pg.pid) - pg0 if pg else 0.0
            finally:
                stop_burners(burners)
            load_after = os.getloadavg()
            m_after = server_hist((await c.get("/metrics")).text)
    finally:
        stop_msg = stop_server(proc)
    server_log = (SCRATCH / "server.log").read_text(errors="replace")[-2000:]

    stored_total, stored_run = count_events(db_url)
    accepted_total = preload_accepted + lg.accepted

    server_side = {}
    for path, name in (("/v1/users/{user_id}/recommendations", "recommendations"), ("/v1/events", "events")):
        s1, c1 = m_after.get(path, (0.0, 0.0))
        s0, c0 = m_before.get(path, (0.0, 0.0))
        server_side[name] = {"requests": int(c1 - c0), "mean_ms": (s1 - s0) / (c1 - c0) * 1000 if c1 > c0 else float("nan")}

    achieved = len(lg.records) / sched["send_window_s"] if sched["send_window_s"] > 0 else float("nan")
    from evorec.utils.hardware import machine_record

    machine = machine_record("fp32")  # the served forward runs fp32
    out = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{machine.line()}, Python {platform.python_version()}",
        "cpu": machine.as_json(),  # model, flags, torch capability, cores (the client's torch threads)
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_after": [round(x, 2) for x in load_after],
        "waited_for_quiet": getattr(args, "_waited", None),
        "load_condition": (f"{args.burn} CPU burner(s) (python -c 'while True: pass') running for the whole schedule"
                           if args.burn else "no deliberate load"),
        "run": rel(run),
        "n_items": len(items),
        "store": info,
        "versions": versions(),
        "protocol": {
            "server": (f"evorec serve, 1 uvicorn worker, 127.0.0.1, {info['kind']} store ({info['version'].split(' on ')[0].split(',')[0]}), "
                       f"pseudonymisation on, torch threads {os.environ.get('EVOREC_SERVE_TORCH_THREADS', '1 (default)')}"),
            "load_condition": (f"{args.burn} CPU burner process(es) busy for the whole schedule" if args.burn else "no deliberate load"),
            "client": f"httpx.AsyncClient in one asyncio loop on the same machine, HTTP/1.1 keep-alive, pool {args.connections}, timeout {args.timeout} s",
            "arrivals": f"open loop, {args.arrivals} at {args.rate:g} req/s for {args.duration:g} s; 80% GET recommendations (k=10) "
                        "for a random preloaded user, 20% POST /v1/events with 1 new event (unique event_id) for a random preloaded user",
            "latency": "from the planned send time to the end of the response (queueing counted); 'service' = from the actual send",
            "errors": "non-2xx, a recommendation with no items, a post not accepting its event, any exception/timeout, or unfinished after the drain",
            "preload": f"{len(users)} users x up to {args.history} events ({hist_source}), POSTed in batches of 1000 before the run",
            "warmup": f"{min(args.warmup, len(users))} sequential recommendation requests, not measured",
            "client_gc": ("gc.collect() + gc.freeze() in the client before the schedule (its setup objects are not rescanned by full collections)"
                          if args.gc_freeze else "client GC as is (no freeze)"),
            "drain_s": args.drain,
        },
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")} | {"run": rel(Path(args.run))},
        "server_ready_s": ready_s,
        "preload": {"users": len(users), "events": preload_events, "accepted": preload_accepted, "seconds": preload_s},
        "schedule": sched,
        "requests_sent": len(lg.records),
        "achieved_rate": achieved,
        "client_gc": client_gc.summary(),
        "client_scheduling_lag_ms": {"p50": pct([r["lag"] for r in lg.records], 50), "p99": pct([r["lag"] for r in lg.records], 99),
                                      "max": max(r["lag"] for r in lg.records) * 1000},
        "cpu_cores_used_during_run": {
            k: round((cpu1[i] - cpu0[i]) / sched["wall_s"], 2) for i, k in enumerate(("machine", "server", "client"))
        } | ({"postgres": round(pg_cpu / sched["wall_s"], 2)} if pg else {}) | {"burners": round(burner_cpu / sched["wall_s"], 2),
             "others": round(((cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1]) - (cpu1[2] - cpu0[2]) - burner_cpu - pg_cpu) / sched["wall_s"], 2)},
        "slow_requests": slow_analysis(lg.records),
        "overall": summarise(lg.records, None),
        "per_route": {r: summarise(lg.records, r) for r in ROUTES},
        "server_side_mean": server_side,
        "errors": sum(not r["ok"] for r in lg.records),
        "error_statuses": _count(str(r["status"]) for r in lg.records if not r["ok"]),
        "error_samples": lg.error_samples,
        "events": {"posted_in_run": lg.posted, "accepted_in_run": lg.accepted, "stored_in_run": stored_run,
                   "accepted_total": accepted_total, "stored_total": stored_total, "lost": max(accepted_total - stored_total, 0),
                   "match": accepted_total == stored_total},
        "server_stop": stop_msg,
        "server_log_tail": server_log,
    }
    o = out["overall"]
    out["target"] = {"p99_ms_max": 30.0, "p99_ok": o["p99_ms"] <= 30.0, "zero_errors": out["errors"] == 0,
                     "zero_lost": out["events"]["match"]}
    out["target"]["met"] = all(out["target"][k] for k in ("p99_ok", "zero_errors", "zero_lost"))
    if args.breakdown:  # the server is stopped: nothing else competes for the cores
        key = EventStore(db_url).create_key("read", "serve-load-breakdown")
        import torch

        default_threads = torch.get_num_threads()
        out["breakdown"] = {}
        for threads in dict.fromkeys((default_threads, 1)):
            torch.set_num_threads(threads)
            with ThreadPoolExecutor(1) as ex:  # a worker thread, as FastAPI runs a sync route
                job = ex.submit(breakdown, run, db_url, secret, users, key, 1000, args.seed)
                out["breakdown"][f"{threads} torch threads"] = job.result()
        torch.set_num_threads(default_threads)
    return out


def _count(xs) -> dict[str, int]:
    d: dict[str, int] = {}
    for x in xs:
        d[x] = d.get(x, 0) + 1
    return d


def fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def report(res: dict[str, Any]) -> str:
    p = res["protocol"]
    lines = [
        f"serve load benchmark, {res['when']}, {res['machine']}, load average before {res['load_average_before']} "
        f"(at start {res['load_average_at_start']}, after {res['load_average_after']})",
        (f"store {res['store']['kind']}: {res['store']['version']}; " + ", ".join(f"{k} {v}" for k, v in res["versions"].items())),
        f"load condition: {res['load_condition']}" + (
            f"; waited {res['waited_for_quiet']['waited_s']:.0f} s for load < {res['waited_for_quiet']['threshold']:g} "
            f"({'reached' if res['waited_for_quiet']['reached'] else 'NOT reached, ran anyway'})" if res.get("waited_for_quiet") else ""),
        f"run {res['run']} ({res['n_items']:,} items); server ready in {res['server_ready_s']:.1f} s; "
        f"preload {res['preload']['events']:,} events / {res['preload']['users']:,} users in {res['preload']['seconds']:.1f} s",
        "protocol: " + "; ".join(f"{k}: {v}" for k, v in p.items()),
        "",
        (f"rate {res['args']['rate']:g} req/s ({res['args']['arrivals']}), duration {res['args']['duration']:g} s: {res['requests_sent']:,} requests sent, "
        f"achieved {res['achieved_rate']:.1f} req/s; client scheduling lag p99 {res['client_scheduling_lag_ms']['p99']:.1f} ms"),
        "",
        "| route | requests | errors | p50 ms | p95 ms | p99 ms | max ms | > 30 ms | service p50 / p99 ms | server-side mean ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in [("all", res["overall"])] + list(res["per_route"].items()):
        ss = res["server_side_mean"].get(name, {}).get("mean_ms", float("nan"))
        lines.append(f"| {name} | {s['requests']:,} | {s['errors']} | {fmt(s['p50_ms'])} | {fmt(s['p95_ms'])} | {fmt(s['p99_ms'])} | "
                     f"{fmt(s['max_ms'])} | {s['over_30ms']} | {fmt(s['service_p50_ms'])} / {fmt(s['service_p99_ms'])} | {fmt(ss)} |")
    e = res["events"]
    lines += [
        "",
        (f"events: accepted {e['accepted_total']:,} (preload {res['preload']['accepted']:,} + run {e['accepted_in_run']:,} of {e['posted_in_run']:,} posted), "
        f"stored {e['stored_total']:,} -> lost {e['lost']} ({'match' if e['match'] else 'MISMATCH'})"),
        f"errors: {res['errors']} {res['error_statuses'] or ''}",
        (f"client GC during the run: {res['client_gc']['collections']} collections, {res['client_gc']['total_ms']:.0f} ms in all, "
         f"longest {res['client_gc']['max_ms']:.1f} ms; full: {res['client_gc']['full_collections']}"),
        f"CPU cores used during the run: {res['cpu_cores_used_during_run']} (of {os.cpu_count()})",
        (f"requests over 30 ms: {res['slow_requests']['slow']} in {res['slow_requests']['seconds_with_slow']} distinct seconds, "
         f"{res['slow_requests']['slow_in_worst_5_seconds']} of them in the worst 5 seconds "
         f"{[w['second'] for w in res['slow_requests']['worst_seconds'][:5]]}; "
         f"{res['slow_requests']['slow_that_were_first_at_a_history_length']} were the first request at a new history length"),
        (f"target (p99 <= 30 ms, zero errors, zero lost): {'MET' if res['target']['met'] else 'NOT MET'} "
        f"(p99 {fmt(res['overall']['p99_ms'])} ms, errors {res['errors']}, lost {e['lost']})"),
    ]
    if res.get("breakdown"):
        bd = res["breakdown"]
        cols = list(bd)
        n = bd[cols[0]]["_samples"]
        lines += ["", (f"where one recommendation's time goes (in-process in a worker thread, server stopped, {n} random users, "
                       "every sequence length warmed up), mean / p99 ms:"), "",
                  "| part | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for part in (k for k in bd[cols[0]] if not k.startswith("_")):
            lines.append(f"| {part} | " + " | ".join(f"{bd[c][part]['mean_ms']:.2f} / {bd[c][part]['p99_ms']:.2f}" for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=str(DEFAULT_RUN), help="a finished training run directory (evorec train --out)")
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second (open loop)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--users", type=int, default=2000, help="users preloaded (and requested)")
    ap.add_argument("--history", type=int, default=10, help="events preloaded per user (at most)")
    ap.add_argument("--connections", type=int, default=32, help="client connection pool size")
    ap.add_argument("--arrivals", choices=("uniform", "poisson"), default="uniform")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    ap.add_argument("--drain", type=float, default=30.0, help="seconds to wait for requests still open after the last send")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false", help="skip the in-process timing of a recommendation's parts")
    ap.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false",
                    help="do not gc.freeze() the client before the schedule (its one full collection then stalls it ~75 ms)")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                    help="event store: a fresh SQLite file, or a throwaway PostgreSQL cluster on loopback")
    ap.add_argument("--burn", type=int, default=0, help="CPU burner processes kept busy during the schedule (a noisy neighbour)")
    ap.add_argument("--wait-quiet", type=float, default=None, metavar="LOAD",
                    help="first wait until the 1-minute load average is below LOAD (poll every 20 s)")
    ap.add_argument("--wait-max", type=float, default=600.0, help="seconds to wait for --wait-quiet at most; then run anyway")
    ap.add_argument("--out", default=None, help="JSON result (default benchmarks/results/serve_load.json, serve_load_postgres.json "
                    "with --db postgres, serve_interests.json with --interests)")
    ap.add_argument("--interests", default=None, metavar="FORECAST_RUN",
                    help="instead of the load: serve this forecast run too and time /interests beside /recommendations of the "
                         "same users, one request at a time (--events: their histories)")
    ap.add_argument("--events", default=None, help="with --interests: the event file (Parquet: user_id, item_id, category_id, "
                    "behavior, ts) the users' histories are taken from, e.g. the simulator's output")
    ap.add_argument("--requests", type=int, default=400, help="with --interests: rounds (one request of each route per round)")
    ap.add_argument("--code", default=None, help="with --interests: what code the server runs, for the record (default: the "
                    "working tree at git HEAD; e.g. another checkout put first on PYTHONPATH)")
    args = ap.parse_args()
    if args.interests is not None and args.events is None:
        ap.error("--interests needs --events (the histories to preload)")
    default_out = ("serve_interests.json" if args.interests else "serve_load.json" if args.db == "sqlite" else "serve_load_postgres.json")
    out = Path(args.out) if args.out else RESULTS / default_out
    args.out = rel(out)  # recorded relative to the project root
    # a SIGTERM unwinds like Ctrl-C: the server, the burners and the PostgreSQL cluster are stopped
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.wait_quiet is not None:
        args._waited = wait_quiet(args.wait_quiet, args.wait_max)

    secret = "serve-load-benchmark-" + uuid.uuid4().hex
    if args.interests is not None:
        res = asyncio.run(bench_interests(args, secret))
        text = report_interests(res)
    elif args.db == "postgres":
        with throwaway_postgres() as cluster:
            res = asyncio.run(bench(args, secret, cluster))
    else:
        res = asyncio.run(bench(args, secret))
    if args.interests is None:
        text = report(res)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(res, indent=2, default=str) + "\n"
    body = body.replace(str(ROOT) + "/", "").replace(str(ROOT.parent) + "/", "../")  # relative paths only (a traceback may name files)
    out.write_text(body)
    print(f"\nwrote {args.out}")


def wait_quiet(threshold: float, max_s: float, every: float = 20.0) -> dict[str, Any]:
    t0 = time.monotonic()
    while True:
        load1 = os.getloadavg()[0]
        waited = time.monotonic() - t0
        if load1 < threshold or waited >= max_s:
            return {"threshold": threshold, "waited_s": round(waited, 1), "reached": load1 < threshold, "load1": round(load1, 2)}
        print(f"load average {load1:.2f} >= {threshold:g}: waiting ({waited:.0f} s of {max_s:.0f})", flush=True)
        time.sleep(min(every, max(max_s - waited, 0.1)))


if __name__ == "__main__":
    main()
