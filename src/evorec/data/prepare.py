"""From the event store to training-ready arrays: clean -> vocabularies -> sequences -> split.

``prepare(store, dataset, cfg, out_dir)`` writes one directory::

    out_dir/
      meta.json, offsets.npy, item.npy, category.npy, behavior.npy, ts.npy, basket.npy,
      users.parquet, items.parquet, categories.parquet      (see evorec.data.sequences)
      prepare.json                                          config, clean report, split summary
      split/                                                (see evorec.data.splits)
        split.json, train*.npy, <fold>/{users,hist_end,tgt_offsets,tgt_pos}.npy

Everything is written into a temporary sibling and renamed at the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
import yaml
from pydantic import BaseModel, ConfigDict, Field

from evorec.data.clean import (
    CleanConfig,
    CleanReport,
    cache_table,
    clean_events,
    open_store_events,
    release_table,
)
from evorec.data.sequences import (
    BASKET_TEXT,
    Progress,
    SequenceConfig,
    SequenceData,
    build_sequences_into,
)
from evorec.data.splits import (
    BacktestSplitConfig,
    LOOSplitConfig,
    SplitConfig,
    TimeSplitConfig,
    check_no_leakage,
    make_split,
)
from evorec.types import TimeKind
from evorec.utils.config import apply_overrides
from evorec.utils.io import atomic_directory
from evorec.utils.timeutil import SplitError, resolve_time

logger = logging.getLogger(__name__)

SPLIT_DIR = "split"


class PrepareConfig(BaseModel):
    """Everything ``prepare`` needs besides the store, dataset and output directory."""

    model_config = ConfigDict(extra="forbid")

    clean: CleanConfig = Field(default_factory=CleanConfig)
    sequences: SequenceConfig = Field(default_factory=SequenceConfig)
    split: SplitConfig = Field(default_factory=LOOSplitConfig)
    cache_cleaned: bool = Field(
        True,
        description="materialise the cleaned events once in the backend (temp table / cached "
        "frame) so vocabularies and sequences do not recompute the cleaning",
    )
    check_leakage: bool = True

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> PrepareConfig:
        """Load a saved config; ``overrides`` maps dotted paths to values (strings are read as
        YAML, so ``{"clean.kcore.user_min": "10", "split.target_behaviors": "[buy]"}`` works)."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise TypeError(f"{path}: a prepare config must be a mapping, got {type(data).__name__}")
        return cls.model_validate(apply_overrides(data, dict(overrides or {})))

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
        return path


class PrepareResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out_dir: str
    dataset: str
    time_kind: TimeKind
    n_events: int
    n_users: int
    n_items: int
    n_categories: int
    fingerprint: str
    baskets: str = Field("day", description="what a basket is: basket_id | day | event | mixed (see evorec.data.sequences)")
    clean_report: CleanReport
    split: dict[str, Any]
    seconds: dict[str, float]

    def open(self) -> SequenceData:
        return SequenceData(self.out_dir)

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-able summary (what the CLI prints)."""
        folds = ", ".join(f"{f['name']} {f['n_users']:,} users" for f in self.split.get("folds", []))
        return {
            "dataset": self.dataset,
            "out_dir": self.out_dir,
            "time_kind": self.time_kind.value,
            "events": self.n_events,
            "users": self.n_users,
            "items": self.n_items,
            "categories": self.n_categories,
            "fingerprint": self.fingerprint,
            "baskets": self.baskets,
            "split": f"{self.split.get('kind')} ({folds})",
            "split_summary": self.split,
            "clean_report": self.clean_report.model_dump(mode="json"),
            "seconds": self.seconds,
        }


def validate_for_time_kind(cfg: PrepareConfig, time_kind: TimeKind | str) -> None:
    """Fail early (before any work) on split settings that make no sense for ``time_kind``."""
    time_kind = TimeKind(time_kind)
    split = cfg.split
    if isinstance(split, TimeSplitConfig):
        for what in ("valid_start", "test_start", "test_end"):
            value = getattr(split, what)
            if value is not None:
                resolve_time(value, time_kind, what=what)
    elif isinstance(split, BacktestSplitConfig):
        for c in split.cutoffs:
            resolve_time(c, time_kind, what="backtest cutoff")
        if time_kind is TimeKind.ORDINAL and split.horizon_unit == "seconds":
            raise SplitError("backtest horizons on an ordinal dataset count events: set horizon_unit: events")


def prepare_events(
    events: ir.Table,
    *,
    dataset: str,
    time_kind: TimeKind | str,
    cfg: PrepareConfig,
    out_dir: str | Path,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> PrepareResult:
    """:func:`prepare` for an events table on any Ibis backend (columns of the store's
    ``events`` table, already filtered to one dataset)."""
    time_kind = TimeKind(time_kind)
    validate_for_time_kind(cfg, time_kind)
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        with clean_events(events, cfg.clean, time_kind=time_kind) as cleaned:
            report = cleaned.report()
            seconds["clean"] = time.perf_counter() - t0
            logger.info(
                "clean: %d -> %d events (%s)",
                report.input.events,
                report.output.events,
                ", ".join(f"{s.step} -{s.events_removed}" for s in report.steps[1:]),
            )
            final = cleaned.events
            cached = None
            if cfg.cache_cleaned and not cfg.clean.materialize:  # materialize already cached it
                cached = final = cache_table(final)
            try:
                t1 = time.perf_counter()
                meta = build_sequences_into(
                    final,
                    tmp,
                    dataset=dataset,
                    time_kind=time_kind,
                    config=cfg.sequences,
                    extra_meta={"prepare": cfg.model_dump(mode="json")},
                    progress=progress,
                )
                seconds["sequences"] = time.perf_counter() - t1
                logger.info("baskets: %s", BASKET_TEXT[meta["baskets"]])
            finally:
                if cached is not None:
                    release_table(cached)
        t2 = time.perf_counter()
        seq = SequenceData(tmp)
        split = make_split(seq, cfg.split)
        if cfg.check_leakage:
            check_no_leakage(split, seq)
        (tmp / SPLIT_DIR).mkdir()
        split.save_into(tmp / SPLIT_DIR)
        seconds["split"] = time.perf_counter() - t2
        summary = split.summary()
        doc = {
            "dataset": dataset,
            "time_kind": time_kind.value,
            "config": cfg.model_dump(mode="json"),
            "clean_report": report.model_dump(mode="json"),
            "split": summary,
            "fingerprint": meta["fingerprint"],
            "baskets": meta["baskets"],
            "seconds": seconds,
        }
        (tmp / "prepare.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
        del seq  # drop the memory maps before the directory is renamed
    seconds["total"] = time.perf_counter() - t0
    return PrepareResult(
        out_dir=str(out_dir),
        dataset=dataset,
        time_kind=time_kind,
        n_events=meta["n_events"],
        n_users=meta["n_users"],
        n_items=meta["n_items"],
        n_categories=meta["n_categories"],
        fingerprint=meta["fingerprint"],
        baskets=meta["baskets"],
        clean_report=report,
        split=summary,
        seconds=seconds,
    )


def prepare(
    store_path: str | Path,
    dataset: str,
    cfg: PrepareConfig | None,
    out_dir: str | Path,
    progress: Progress | None = None,
    *,
    overwrite: bool = False,
) -> PrepareResult:
    """Clean ``dataset`` from the store at ``store_path`` (read-only, DuckDB), build its
    vocabularies, sequences and split, and write them all into ``out_dir`` atomically.

    The dataset's ``time_kind`` (from the store's ``datasets`` table) decides how cuts and
    horizons are read: on ordinal datasets a date cut is an error and horizons count events.
    """
    cfg = cfg or PrepareConfig()
    backend, events, time_kind = open_store_events(store_path, dataset)
    try:
        return prepare_events(
            events,
            dataset=dataset,
            time_kind=time_kind,
            cfg=cfg,
            out_dir=out_dir,
            progress=progress,
            overwrite=overwrite,
        )
    finally:
        backend.disconnect()
