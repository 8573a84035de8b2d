"""What the service holds in memory: one loaded model with its vocabularies, and how a user's
recent events in the store become a recommendation.

State is updated incrementally: a new event lands in the store and the next request re-encodes
the user's latest ``history_len`` events (one forward pass of one short sequence), so a new
purchase changes the next recommendation at once -- no full-history recomputation, no retraining.
A :class:`ModelState` is immutable once built; a reload builds a new one and swaps the reference,
so requests in flight finish on the model they started with.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evorec.errors import InputError, MissingPathError
from evorec.experiments.runs import ForecastRun, TrainingRun
from evorec.forecasting.payload import ForecasterPayload
from evorec.forecasting.predict import LiveForecaster, SignalAttribution, UserForecasts
from evorec.models.base import SequentialModel
from evorec.models.checkpoint import ModelCheckpoint
from evorec.serving.eventlog import EventStore, StoredEvent, tombstone
from evorec.serving.retrieval import ItemIndex
from evorec.types import BEHAVIOR_INDEX, SequenceBatch

logger = logging.getLogger(__name__)


class UnknownCategory(KeyError):
    pass


class UnknownItem(KeyError):
    pass


class NoHistory(ValueError):
    pass


@dataclass
class ModelState:
    model: Any
    version: str  # run directory + checkpoint mtime: what /metrics and responses report
    run: str
    items: list[str]  # index -> item id (index 0 = padding)
    item_index: dict[str, int]
    categories: list[str]  # index -> category id (0 = unknown)
    category_index: dict[str, int]
    item_category: np.ndarray  # (n_items,) category index of each item
    popularity: np.ndarray  # (n_items,) training counts (the fallback for users without history)
    history_len: int
    loaded_at: float = field(default_factory=time.time)
    # Top-k through FAISS (evorec.serving.retrieval) only above this many items: below it one
    # brute-force score row + torch.topk is as fast and trivially exact.
    faiss_min_items: int = 50_000
    index: ItemIndex | None = None  # built by from_run for dot-product models over large catalogues

    @classmethod
    def from_run(cls, run: str | Path, history_len: int | None = None, *, faiss_min_items: int = 50_000) -> ModelState:
        """Load the best checkpoint of training run ``run``. A sequence model whose scores are ``state @ E.T + b`` over more
        than ``faiss_min_items`` items also gets a FAISS :class:`ItemIndex` (exact inner product;
        approximate HNSW only from 1,000,000 items), which ``recommend`` then uses.

        ``run`` may also be a file written by ``evorec export`` (ONNX or TorchScript, with its JSON
        sidecar): the service then scores with it and needs neither the checkpoint nor PyTorch models."""
        run = Path(run)
        if run.is_file():
            return cls.from_export(run, history_len)
        training = TrainingRun(run)
        ck = training.checkpoint
        model = ck.build_model()
        items = [""] + list(ck.vocabs.items)  # ids[i] has index i + 1
        cats = ["(unknown)"] + list(ck.vocabs.categories)
        ic = np.asarray(ck.sizes.item_category or [0] * len(items), dtype=np.int64)
        pop = np.asarray(ck.item_popularity or _popularity(ck, len(items)), dtype=np.float64)
        max_len = ck.max_len
        index = None
        # Only models that score by the shared dot product (SequentialModel.score): MultVAE and DIEN
        # override score with a decoder / a re-ranker, which an inner-product index cannot reproduce.
        if isinstance(model, SequentialModel) and type(model).score is SequentialModel.score and len(items) > faiss_min_items:
            with torch.no_grad():
                bias = model.output_bias()
                index = ItemIndex.build(
                    model.output_embeddings().detach().float().cpu().numpy(),
                    None if bias is None else bias.detach().float().cpu().numpy(),
                )
        return cls(
            model=model, version=training.version, run=str(run), items=items,
            item_index={x: i for i, x in enumerate(items) if i}, categories=cats, category_index={c: i for i, c in enumerate(cats)},
            item_category=ic, popularity=pop, history_len=history_len or max_len, faiss_min_items=faiss_min_items, index=index,
        )

    @classmethod
    def from_export(cls, path: str | Path, history_len: int | None = None) -> ModelState:
        import json

        from evorec.serving.export import ExportedScorer

        path = Path(path)
        side = path.with_name(path.name + ".json")
        if not side.exists():
            raise MissingPathError(f"{path} has no sidecar {side.name}: export it with `evorec export`")
        doc = json.loads(side.read_text())
        if "vocab" not in doc:
            raise InputError(f"{side} has no vocabulary: export again with this version of `evorec export`")
        items = [""] + list(doc["vocab"]["items"])
        cats = ["(unknown)"] + list(doc["vocab"]["categories"])
        ic = np.asarray(doc.get("item_category") or [0] * len(items), dtype=np.int64)
        pop = np.asarray(doc.get("item_popularity") or np.ones(len(items)), dtype=np.float64)
        model = ExportedScorer(path, doc["format"], int(doc["max_len"]), int(doc["n_items"]))
        return cls(
            model=model, version=f"{path.name}@{int(path.stat().st_mtime)}", run=str(path), items=items,
            item_index={x: i for i, x in enumerate(items) if i}, categories=cats, category_index={c: i for i, c in enumerate(cats)},
            item_category=ic, popularity=pop, history_len=history_len or int(doc["max_len"]),
        )

    def batch(self, history: list[StoredEvent], now: int) -> tuple[SequenceBatch, int]:
        """(B=1 batch of the latest ``history_len`` known items of ``history``, number of events
        skipped because the model does not know their item -- not those left out as too old)."""
        usable = [e for e in history if e.item_id in self.item_index]
        known = usable[-self.history_len :]
        T = max(len(known), 1)
        items = torch.zeros(1, T, dtype=torch.long)
        cats = torch.zeros(1, T, dtype=torch.long)
        behs = torch.zeros(1, T, dtype=torch.long)
        ts = torch.zeros(1, T, dtype=torch.long)
        mask = torch.zeros(1, T, dtype=torch.bool)
        off = T - len(known)  # left padding: position T-1 is the latest event
        for t, e in enumerate(known):
            i = self.item_index[e.item_id]
            items[0, off + t] = i
            cats[0, off + t] = int(self.item_category[i]) if i < len(self.item_category) else 0
            behs[0, off + t] = BEHAVIOR_INDEX.get(e.behavior, 0)
            ts[0, off + t] = int(e.ts)
            mask[0, off + t] = True
        b = SequenceBatch(items, cats, behs, ts, mask, torch.tensor([now]), torch.tensor([0]))
        return b, len(history) - len(usable)

    def recommend(
        self, history: list[StoredEvent], k: int, *, exclude_seen: bool = True, category: str | None = None, now: int | None = None,
        mode: str | None = None,
    ) -> dict[str, Any]:
        """Top-k items for this history (model scores), or by popularity when the history holds no
        item the model knows (``fallback`` says which).

        ``mode`` (replaces ``exclude_seen`` when given; see ``RECOMMEND_MODES``): ``buy_again``
        ranks only items of the user's history, ``explore`` only items new to the user,
        ``mixed`` both together in the model's own order (a repeat-aware model such as ``trex``
        puts the due repeats first). Every listed item says whether it is a ``repeat``.

        With an item index (large catalogues, see ``from_run``) the model only encodes the history
        and FAISS finds the top k; otherwise (and for the popularity fallback) the brute-force
        reference below scores every item and takes ``torch.topk``. Both give the same items."""
        n = len(self.items)
        if category is not None and category not in self.category_index:
            raise UnknownCategory(f"unknown category {category!r}")
        if mode is not None and mode not in RECOMMEND_MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(RECOMMEND_MODES)}")
        if mode is not None:
            exclude_seen = mode == "explore"
        now = int(time.time()) if now is None else int(now)
        batch, unknown = self.batch(history, now)
        fallback = not bool(batch.mask.any())
        seen_set = {self.item_index[e.item_id] for e in history if e.item_id in self.item_index}
        if not fallback and self.index is not None and mode in (None, "explore"):
            with torch.no_grad():
                query = self.model.encode(batch)[0].float().cpu().numpy()  # (D,)
            seen = [self.item_index[e.item_id] for e in history if e.item_id in self.item_index] if exclude_seen else []
            allowed = self.item_category[:n] == self.category_index[category] if category is not None else None
            idx, vals = self.index.search(query, min(k, n - 1), exclude=np.asarray(seen, dtype=np.int64), allowed=allowed)
            out = [
                {"item_id": self.items[int(i)], "score": float(v), "category_id": self._cat(int(i)), "repeat": int(i) in seen_set}
                for v, i in zip(vals.tolist(), idx.tolist())
            ]
            return {"items": out, "fallback": None, "history_used": int(batch.mask.sum()),
                    "unknown_items_skipped": unknown, "model_version": self.version, "mode": mode}
        if fallback:
            scores = torch.from_numpy(np.log1p(self.popularity)).float().clone()
            scores[0] = float("-inf")
        else:
            with torch.no_grad():  # (not inference_mode: the scores are edited below)
                scores = self.model.score(batch)[0].float().clone()  # (n_items,)
        scores[0] = float("-inf")
        if exclude_seen:
            seen = [self.item_index[e.item_id] for e in history if e.item_id in self.item_index]
            if seen:
                scores[torch.tensor(seen)] = float("-inf")
        if mode == "buy_again":  # only the user's own items (none without a usable history)
            only = torch.ones(n, dtype=torch.bool)
            if seen_set:
                only[torch.tensor(sorted(seen_set))] = False
            scores[only] = float("-inf")
        if category is not None:
            c = self.category_index[category]
            scores[torch.from_numpy(self.item_category[:n] != c)] = float("-inf")
        k = min(k, n - 1)
        vals, idx = torch.topk(scores, k)
        keep = torch.isfinite(vals)
        out = [
            {"item_id": self.items[int(i)], "score": float(v), "category_id": self._cat(int(i)), "repeat": int(i) in seen_set}
            for v, i in zip(vals[keep].tolist(), idx[keep].tolist())
        ]
        return {"items": out, "fallback": "popularity" if fallback and mode != "buy_again" else None, "history_used": int(batch.mask.sum()),
                "unknown_items_skipped": unknown, "model_version": self.version, "mode": mode}

    def explain(self, history: list[StoredEvent], item_id: str, *, method: str = "auto", steps: int = 32, now: int | None = None) -> dict[str, Any]:
        """Which of the user's recent events drove ``item_id``'s score (see evorec.explain)."""
        from evorec.explain.attribution import explain, group

        if item_id not in self.item_index:
            raise UnknownItem(f"unknown item {item_id!r}")
        now = int(time.time()) if now is None else int(now)
        batch, unknown = self.batch(history, now)
        if not bool(batch.mask.any()):
            raise NoHistory("none of this user's events is an item the model knows: nothing to explain")
        known = [e for e in history if e.item_id in self.item_index][-self.history_len :]
        off = batch.items.shape[1] - len(known)
        att = explain(self.model, batch, self.item_index[item_id], method=method, steps=steps)
        events = [known[int(p) - off] for p in att.positions]
        rows = [
            {"item_id": e.item_id, "category_id": e.category_id or self._cat(self.item_index[e.item_id]), "behavior": e.behavior,
             "ts": int(e.ts), "weight": float(w)}
            for e, w in zip(events, att.weights)
        ]
        grouped = group(att, [r["category_id"] for r in rows], np.array([now - r["ts"] for r in rows]))
        return {
            "item_id": item_id, "score": att.score, "method": att.method, "baseline_score": att.baseline_score,
            "completeness_delta": att.delta, "events": rows, **grouped, "unknown_items_skipped": unknown,
            "model_version": self.version,
        }

    def category_of(self, item_id: str) -> str | None:
        """The item's category in the model's vocabulary (None for an item the model does not know)."""
        i = self.item_index.get(item_id)
        return self._cat(i) if i else None

    def _cat(self, i: int) -> str | None:
        c = int(self.item_category[i]) if i < len(self.item_category) else 0
        return self.categories[c] if c else None


def _popularity(ck: ModelCheckpoint, n: int) -> np.ndarray:
    """Training popularity when the checkpoint does not carry it: a popularity model's own counts,
    else uniform (every item 1)."""
    if "popularity" in ck.weights:
        return ck.weights["popularity"].numpy()
    return np.ones(n)


@dataclass
class ForecastState:
    """A trained interest forecaster, the sequences it was trained on, and what is built once, on
    load: the forecaster itself (``live``: model and population context, for every user request)
    and every training user's forecast at the end of those data, for audiences and segments. A
    reload builds a new one."""

    forecaster: ForecasterPayload
    seq: Any
    run: str
    live: LiveForecaster  # built once: no request rebuilds the model or its context
    population: Any = None  # UserForecasts of the training users at the data's end
    _segments: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # exported segments per (horizon, k)
    _interests: dict[int, dict[str, Any]] = field(default_factory=dict)  # population interests per top
    _tombstones: dict[str, str] | None = None  # tombstone -> user id of the population (built on first use)
    _forgotten_seen: int = 0  # the last entry of the store's forgotten table applied
    _sync: Any = field(default_factory=threading.Lock)

    def interests(self, top: int) -> dict[str, Any]:
        """The population's mean category shares now and per horizon (aggregates only; see
        evorec.forecasting.audience.population_interests), computed once per ``top``."""
        from evorec.forecasting.audience import population_interests

        if int(top) not in self._interests:
            self._interests[int(top)] = population_interests(self.population, int(top))
        return self._interests[int(top)]

    def segments(self, horizon: str, k: int) -> dict[str, Any]:
        """k-anonymous segments of the population (clustered once per (horizon, k), not per request)."""
        from evorec.forecasting.segments import SegmentConfig, segments

        key = (str(horizon), int(k))
        if key not in self._segments:
            self._segments[key] = segments(self.population, SegmentConfig(horizon=horizon, k=k)).export(users=False)
        return self._segments[key]

    def apply_forgotten(self, store: EventStore) -> int:
        """Drop the users forgotten in the shared ``store`` since the last call (by this or any
        other replica, before or after this process started); returns how many were dropped."""
        with self._sync:
            rows = store.forgotten_after(self._forgotten_seen)
            if not rows:
                return 0
            if self._tombstones is None and self.population is not None:
                self._tombstones = {tombstone(u): u for u in self.population.users}
            gone = [self._tombstones.pop(t) for _, t in rows if self._tombstones and t in self._tombstones]
            self._forgotten_seen = rows[-1][0]
            if gone and self.population is not None:
                self.population = self.population.without(gone)
                self._segments.clear()
                self._interests.clear()
            return len(gone)

    def forget(self, user_key: str) -> bool:
        """Drop a (pseudonymised) user from the population forecasts; True if they were there."""
        if self.population is None or user_key not in set(self.population.users):
            return False
        with self._sync:
            self.population = self.population.without([user_key])
            if self._tombstones is not None:
                self._tombstones.pop(tombstone(user_key), None)
        self._segments.clear()  # segments and aggregates were computed with the user in them
        self._interests.clear()
        return True

    @classmethod
    def from_run(cls, run: str | Path) -> ForecastState:
        from evorec.forecasting.predict import forecast_at

        forecast_run = ForecastRun.open(run)
        forecaster, seq = forecast_run.payload, forecast_run.trained_sequences()
        end = int(np.asarray(seq.ts).max()) + 1
        return cls(forecaster, seq, str(run), LiveForecaster.build(forecaster, seq), forecast_at(forecaster, seq, end))

    def user(self, events: list[StoredEvent], horizons: list[str] | None, now: int) -> UserForecasts:
        """The user's forecast at ``now`` from their stored events (``LiveForecaster.user``)."""
        return self.live.user([(e.item_id, e.category_id, e.behavior, int(e.ts)) for e in events], now, horizons)

    def explain(self, events: list[StoredEvent], now: int, pairs: list[tuple[str, int]]) -> dict[tuple[str, int], SignalAttribution]:
        """Signal attributions of the user's forecast for (horizon label, category index) pairs
        (``LiveForecaster.explain``); ValueError for a forecaster that is not a ranker."""
        return self.live.explain([(e.item_id, e.category_id, e.behavior, int(e.ts)) for e in events], now, pairs)


RECOMMEND_MODES = ("buy_again", "explore", "mixed")
"""``/recommendations?mode=``: the user's own items again, items new to the user, or both."""


class ServiceState:
    """The store and the current model, swapped atomically on reload."""

    def __init__(self, store: EventStore, run: str | None, history_len: int | None = None, forecast_run: str | None = None):
        self.store = store
        self.history_len = history_len
        self._lock = threading.Lock()
        self._model: ModelState | None = ModelState.from_run(run, history_len) if run else None
        self.forecast: ForecastState | None = ForecastState.from_run(forecast_run) if forecast_run else None

    @property
    def model(self) -> ModelState | None:
        return self._model

    def forecast_synced(self) -> ForecastState | None:
        """The forecaster, first brought up to date with the users forgotten in the shared store
        (one indexed query when nothing changed)."""
        fc = self.forecast
        if fc is not None:
            fc.apply_forgotten(self.store)
        return fc

    def user_events(self, user_key: str, limit: int) -> list[dict[str, Any]]:
        """The (pseudonymised) user's latest ``limit`` events, oldest first; an event stored
        without a category gets the one the served model knows for its item (else None)."""
        m = self._model
        return [
            {"item_id": e.item_id, "category_id": e.category_id or (m.category_of(e.item_id) if m is not None else None),
             "behavior": e.behavior, "ts": int(e.ts)}
            for e in self.store.recent(user_key, limit)
        ]

    def watch(self, every_s: float, on_swap=None) -> threading.Event:
        """Poll the served run's best checkpoint every ``every_s`` seconds and hot-swap it when a new
        file lands (a finished training run, a copied checkpoint). Returns the stop event."""
        stop = threading.Event()

        def loop() -> None:
            seen = self._stamp()
            while not stop.wait(every_s):
                now = self._stamp()
                if now is not None and now != seen:
                    try:
                        self.reload()
                        seen = now
                        if on_swap is not None:
                            on_swap()
                    except Exception as exc:  # noqa: BLE001 - a half-written or bad file: keep serving the old model
                        logger.warning("hot swap of %s failed, the current model stays: %s", now, exc)

        threading.Thread(target=loop, name="evorec-model-watch", daemon=True).start()
        return stop

    def _stamp(self) -> tuple[int, int] | None:
        m = self._model
        if m is None:
            return None
        if not Path(m.run).is_file():
            return TrainingRun(m.run).stamp()
        try:
            st = Path(m.run).stat()  # an exported model file
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self, run: str | None = None) -> ModelState:
        """Load ``run`` (default: the current one) and swap it in; requests in flight keep theirs."""
        target = run or (self._model.run if self._model else None)
        if target is None:
            raise MissingPathError("no run directory to load (set EVOREC_SERVE_RUN or pass one)")
        fresh = ModelState.from_run(target, self.history_len)  # fails before the swap: the old model stays
        with self._lock:
            self._model = fresh
        logger.info("serving model %s", fresh.version)
        return fresh
