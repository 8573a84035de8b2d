"""The data cache: a data source ingested into a store and prepared into sequences, each once,
keyed by content and config.

``DataCache(cache_dir).prepared(data, prepare)`` takes only the data source and the prepare
config. The store file ``CACHE/<dataset>-<content digest>.duckdb`` is keyed by the source's
content; the prepared directory ``CACHE/prepared/<dataset>-<key>`` by that content, the
reader's format and options, pseudonymisation and the prepare config. A cache written by an
older sequence format is prepared again. Simulated data (``simulate:`` of a forecast config) is
generated once into ``CACHE/simulated/sim-<key>.parquet`` and read like any file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from evorec.data.prepare import PrepareConfig, prepare
from evorec.data.sequences import SequenceData, is_current
from evorec.data.simulate import SimConfig
from evorec.data.splits import Split, load_split
from evorec.errors import MissingPathError
from evorec.experiments.config import DataSourceConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachePaths:
    """Where one data source and prepare config live in the cache."""

    source: Path  # the source file as found
    store: Path  # the ingested store file
    prepared: Path  # the prepared sequence directory


@dataclass
class PreparedData:
    """Prepared sequences with their split, and the store they came from."""

    seq: SequenceData
    split: Split
    store: Path


def source_path(data: DataSourceConfig) -> Path:
    """The data source file: as given (absolute, or relative to the working directory), else
    relative to the config file's directory or one of its parents, else where the format's reader
    finds it (e.g. an installed data package)."""
    p = Path(data.path)
    if p.is_absolute() or p.exists():
        return p
    bases = [Path(data.base_dir), *Path(data.base_dir).parents] if data.base_dir else []
    for base in bases:
        if (base / p).exists():
            return base / p
    from evorec.data.readers import get_reader

    located = get_reader(data.format)(p, data.options).path
    if located.exists():
        return located
    raise MissingPathError(f"data source not found: {data.path} (relative to {Path.cwd()})")


class DataCache:
    """Ingest + prepare of data sources under one cache directory."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)

    def paths(self, data: DataSourceConfig, prepare_cfg: PrepareConfig) -> CachePaths:
        """The cache entries of ``data`` prepared with ``prepare_cfg`` (hashes the source once)."""
        src, digest = self._source_digest(data)
        key = hashlib.sha256(
            json.dumps(
                {"src": digest, "format": data.format, "options": data.options, "pseudo": data.pseudonymize,
                 "prepare": prepare_cfg.model_dump(mode="json")},
                sort_keys=True,
            ).encode()
        ).hexdigest()[:16]
        return CachePaths(src, self._store_path(data, digest), self.dir / "prepared" / f"{data.dataset}-{key}")

    def prepared(self, data: DataSourceConfig, prepare_cfg: PrepareConfig, *, need_store: bool = False) -> PreparedData:
        """``data`` ingested and prepared with ``prepare_cfg``, or the cached result. ``need_store``:
        the caller reads the store too (item text, attributes), so a removed store is ingested again.
        Two processes asking for the same source at once (two trainings started together on a cold
        cache) take turns: the second waits for the first's store and finds it prepared."""
        paths = self.paths(data, prepare_cfg)
        with self._lock(paths.store):
            current = is_current(paths.prepared)  # a cache of an older sequence format (e.g. without baskets) is prepared again
            if not current or (need_store and not paths.store.exists()):
                self._ingest(data, paths.source, paths.store)  # re-ingesting a file already in the store is a no-op
            if not current:
                prepare(paths.store, data.dataset, prepare_cfg, paths.prepared, overwrite=True)
        return PreparedData(SequenceData(paths.prepared), load_split(paths.prepared / "split"), paths.store)

    def store(self, data: DataSourceConfig) -> Path:
        """The source's ingested store, ingested again if it was removed."""
        src, digest = self._source_digest(data)
        store = self._store_path(data, digest)
        with self._lock(store):
            if not store.exists():
                self._ingest(data, src, store)
        return store

    @staticmethod
    @contextmanager
    def _lock(store: Path) -> Iterator[None]:
        """The inter-process lock of one store and everything prepared from it (DuckDB lets one
        process write a file: a second ingest at the same time failed with "Could not set lock")."""
        store.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(store.with_name(store.name + ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another process preparing %s", store.name)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def simulated(self, sim: SimConfig) -> DataSourceConfig:
        """The simulator's log for ``sim`` as a data source (generated once into the cache)."""
        key = hashlib.sha256(json.dumps(sim.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
        path = self.dir / "simulated" / f"sim-{key}.parquet"
        if not path.exists():
            from evorec.data.simulate import write_simulation

            path.parent.mkdir(parents=True, exist_ok=True)
            log.info("simulating %d users x %d days -> %s", sim.users, sim.days, path)
            write_simulation(sim, path)
        return DataSourceConfig(path=str(path.resolve()), format="parquet", dataset=f"sim{key[:8]}", pseudonymize=False)

    @staticmethod
    def _source_digest(data: DataSourceConfig) -> tuple[Path, str]:
        """(the source file, the content hash of it and its side files)."""
        from evorec.data.ingest import content_hash
        from evorec.data.readers import get_reader

        src = source_path(data)
        reader = get_reader(data.format)(src, data.options)
        return src, content_hash([reader.path, *reader.side_files()])  # a reader may resolve a directory to its file

    def _store_path(self, data: DataSourceConfig, digest: str) -> Path:
        return self.dir / f"{data.dataset}-{digest[:16]}.duckdb"

    @staticmethod
    def _ingest(data: DataSourceConfig, source: Path, store: Path) -> None:
        from evorec.data.ingest import ingest_file

        ingest_file(store, source, data.format, data.dataset, options=data.options, pseudonymize=data.pseudonymize)
