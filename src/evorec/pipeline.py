"""The only wiring place: builds every object of an experiment from one ``ExperimentConfig``.

An experiment config names its data source, so ``evorec train --config FILE --out RUN`` works from
the project root with nothing prepared: the source is ingested into a cache store and prepared
(both cached by content and config), then the model is built from its config plus sizes from
the data, trained, and its checkpoints embed the merged config and the vocabularies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from evorec.data.batches import TrainView, eval_set
from evorec.data.prepare import PrepareConfig, prepare
from evorec.data.sequences import SequenceData, is_current
from evorec.data.splits import Split, load_split, make_split
from evorec.evaluation.protocols import EvalConfig, TrainingPart, default_split_config, drop_repeat_targets, evaluate_model
from evorec.models.base import DataSizes
from evorec.models.registry import build_model, make_config
from evorec.models.checkpoint import load_checkpoint, load_model, model_payload
from evorec.training.distributed import process_group_from_env, rank_zero_first
from evorec.training.trainer import TrainConfig, Trainer
from evorec.types import BEHAVIORS
from evorec.utils.config import load_config
from evorec.utils.io import atomic_write_parquet, atomic_write_text, json_default
from evorec.utils.tracking import RunTracker, evaluation_metrics, log_result, numeric

log = logging.getLogger(__name__)


class DataSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., description="source file; relative paths are tried from the working directory, then from the config file's directory")
    format: str
    dataset: str
    options: dict[str, str] = Field(default_factory=dict)
    pseudonymize: bool = True


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    data: DataSourceConfig
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    model: ModelSpec
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    cache_dir: str = Field(default_factory=lambda: os.environ.get("EVOREC_CACHE", ".evorec-cache"))


def load_experiment(path: str | Path | None, overrides=None, base: dict | None = None) -> ExperimentConfig:
    cfg = load_config(ExperimentConfig, path, overrides, base)
    make_config(cfg.model.name, cfg.model.config)  # unknown model or bad model field: fail now
    if path is not None:
        cfg.__dict__["_config_dir"] = str(Path(path).resolve().parent)
    return cfg


def _source_path(cfg: ExperimentConfig) -> Path:
    p = Path(cfg.data.path)
    if p.is_absolute() or p.exists():
        return p
    cdir = cfg.__dict__.get("_config_dir")
    for base in ([Path(cdir)] + list(Path(cdir).parents)) if cdir else []:
        if (base / p).exists():
            return base / p
    from evorec.data.readers import get_reader

    located = get_reader(cfg.data.format)(p, cfg.data.options).path  # e.g. an installed data package
    if located.exists():
        return located
    raise FileNotFoundError(f"data source not found: {cfg.data.path} (relative to {Path.cwd()})")


def _cache_paths(cfg: ExperimentConfig) -> tuple[Path, Path, Path]:
    """(source file, store file, prepared directory) of an experiment's data, keyed by content and config."""
    from evorec.data.ingest import content_hash
    from evorec.data.readers import get_reader

    src = _source_path(cfg)
    reader = get_reader(cfg.data.format)(src, cfg.data.options)
    digest = content_hash([reader.path, *reader.side_files()])  # a reader may resolve a directory to its file
    key = hashlib.sha256(
        json.dumps(
            {"src": digest, "format": cfg.data.format, "options": cfg.data.options, "pseudo": cfg.data.pseudonymize,
             "prepare": cfg.prepare.model_dump(mode="json")},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    cache = Path(cfg.cache_dir)
    return src, cache / f"{cfg.data.dataset}-{digest[:16]}.duckdb", cache / "prepared" / f"{cfg.data.dataset}-{key}"


def _ingest(cfg: ExperimentConfig, src: Path, store: Path) -> None:
    from evorec.data.ingest import ingest_file

    ingest_file(store, src, cfg.data.format, cfg.data.dataset, options=cfg.data.options, pseudonymize=cfg.data.pseudonymize)


def prepared_data(cfg: ExperimentConfig) -> tuple[SequenceData, Split]:
    """Ingest + prepare the experiment's data, or reuse the cached result."""
    seq, split, _ = _prepared(cfg)
    return seq, split


def _prepared(cfg: ExperimentConfig) -> tuple[SequenceData, Split, Path]:
    """``prepared_data`` plus the store file it came from (hashing the source only once)."""
    src, store, out = _cache_paths(cfg)
    current = is_current(out)  # a cache of an older sequence format (e.g. without baskets) is prepared again
    if not current or ((uses_item_text(cfg) or uses_item_attributes(cfg)) and not store.exists()):
        _ingest(cfg, src, store)  # item text is read from the store; re-ingesting is a no-op when present
    if not current:
        prepare(store, cfg.data.dataset, cfg.prepare, out, overwrite=True)
    return SequenceData(out), load_split(out / "split"), store


def _ingested_store(cfg: ExperimentConfig) -> Path:
    """The experiment's cached store, ingested again if it was removed."""
    src, store, _ = _cache_paths(cfg)
    if not store.exists():
        _ingest(cfg, src, store)
    return store


def _side_configs(cfg: ExperimentConfig) -> list:
    """The side-information configs of the experiment's model (of each member, for an ensemble)."""
    c = make_config(cfg.model.name, cfg.model.config)
    models = [make_config(m.name, m.config) for m in c.members] if hasattr(c, "members") else [c]
    return [getattr(m, "side", None) for m in models]


def uses_item_text(cfg: ExperimentConfig) -> bool:
    """Whether the experiment's model asks for item text (``model.config.side.text``)."""
    return any(getattr(side, "text", False) for side in _side_configs(cfg))


def uses_item_attributes(cfg: ExperimentConfig) -> bool:
    """Whether the experiment's model asks for item attributes (``model.config.side.attributes``)."""
    return any(getattr(side, "attributes", False) for side in _side_configs(cfg))


def item_attributes(cfg: ExperimentConfig, seq: SequenceData, store: Path | None = None) -> np.ndarray:
    """(n_items, width) attribute-token matrix of the prepared vocabulary (category path nodes
    and brand from the store's items table; see ``evorec.data.attributes``)."""
    from evorec.data.attributes import MAX_PER_ITEM, attribute_matrix, item_attribute_tokens

    store = store or _ingested_store(cfg)
    tokens = item_attribute_tokens(store, cfg.data.dataset, seq.items.ids.to_pylist())  # ids[i] has index i + 1
    m, vocab, cut = attribute_matrix(tokens)
    n_with = int((m[1:] > 0).any(1).sum())
    if not vocab:
        raise ValueError(
            f"side.attributes is on but no item of {cfg.data.dataset} has a category path or brand (or a category): "
            "turn side.attributes off or ingest item metadata"
        )
    if cut:
        log.warning("%d items have more than %d attribute tokens: the first %d are kept", cut, MAX_PER_ITEM, MAX_PER_ITEM)
    log.info("item attributes: %d tokens, %d of %d items have some (up to %d each)", len(vocab), n_with, m.shape[0] - 1, m.shape[1])
    return m


def item_text(cfg: ExperimentConfig, seq: SequenceData, store: Path | None = None) -> np.ndarray:
    """(n_items, 384) frozen text vectors of the prepared vocabulary, from the store's items table.

    Embedded once and cached beside the prepared sequences (see ``evorec.data.text``).
    ``store`` defaults to the experiment's cached store (ingested again if it was removed).
    """
    from evorec.data.text import item_text_matrix

    store = store or _ingested_store(cfg)
    m = item_text_matrix(store, cfg.data.dataset, seq.items.ids.to_pylist(), cache_dir=seq.path)
    n_text = int((np.abs(m).sum(1) > 0).sum())
    if n_text == 0:
        log.warning("side.text is on but no item of %s has a title, brand or category path: text adds nothing", cfg.data.dataset)
    else:
        log.info("item text: %d of %d items have text", n_text, m.shape[0] - 1)
    return m


def data_sizes(seq: SequenceData, text_dim: int = 0, attributes: np.ndarray | None = None) -> DataSizes:
    cat = np.zeros(seq.items.size, dtype=np.int64)
    if seq.n_events:
        cat[np.asarray(seq.item)] = np.asarray(seq.category)
    return DataSizes(
        n_items=seq.items.size, n_categories=seq.categories.size, item_category=tuple(int(c) for c in cat), text_dim=text_dim,
        n_attributes=0 if attributes is None else int(attributes.max()) + 1,
        attribute_width=0 if attributes is None else attributes.shape[1],
    )


def vocab_payload(seq: SequenceData) -> dict[str, list]:
    return {
        "items": seq.items.ids.to_pylist(),
        "categories": seq.categories.ids.to_pylist(),
        "behaviors": list(BEHAVIORS),
        "sequence_fingerprint": seq.fingerprint,
    }


def train(cfg: ExperimentConfig, out_dir: str | Path, *, resume: bool = False, tracking_uri: str | None = None):
    """Prepare the data, build the model, train with early stopping; returns (state, run_dir).

    Under ``torchrun`` each process joins the process group here (DDP, see
    ``evorec.training.distributed``); process 0 prepares the data cache before the others read it.
    With ``tracking_uri`` process 0 also logs the run to MLflow (``evorec.utils.tracking``): the
    merged config, each epoch's record, the best validation metrics, the sequences' fingerprint,
    ``best.pt``, ``history.json`` and ``config.yaml``; a failing tracking server is warned about once."""
    from evorec.training.distributed import rank

    with process_group_from_env(cfg.train.device):
        tracker = None
        if tracking_uri and rank() == 0:
            tracker = RunTracker.start(tracking_uri, kind="train", run_name=cfg.name or Path(out_dir).name,
                                       resume_from=out_dir if resume else None, tags={"evorec.model": cfg.model.name})
        try:
            state, out = _train(cfg, out_dir, resume=resume, tracker=tracker)
        except BaseException:
            if tracker is not None:
                tracker.finish("FAILED")
            raise
        if tracker is not None:
            best = state.history[state.best_epoch - 1] if 0 < state.best_epoch <= len(state.history) else {}
            final = {f"best/{k}": v for k, v in best.items() if k.startswith("valid/")}
            final.update(numeric({"best_epoch": state.best_epoch, "epochs": state.epoch, "train_seconds": state.train_seconds}))
            tracker.set_tags({"evorec.stopped": state.stopped, "evorec.precision": state.precision})
            log_result(tracker, config=cfg.model_dump(mode="json"), fingerprint=_run_fingerprint(out), metrics=final,
                       files=[out / "best.pt", out / "history.json", out / "config.yaml"], run_dir=out)
            tracker.finish()
        return state, out


def _run_fingerprint(run_dir: Path) -> str | None:
    """The sequences' fingerprint recorded in a run's ``best.pt`` (None without one)."""
    if not (run_dir / "best.pt").exists():
        return None
    return load_checkpoint(run_dir / "best.pt")["vocabs"].get("sequence_fingerprint")


def _train(cfg: ExperimentConfig, out_dir: str | Path, *, resume: bool, tracker: RunTracker | None = None):
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.yaml"
    merged = cfg.model_dump(mode="json")
    if resume and saved.exists():
        prev = yaml.safe_load(saved.read_text())
        if prev != merged:
            raise ValueError(f"--resume: {saved} holds a different config than the one given; use a new --out")
    atomic_write_text(saved, yaml.safe_dump(merged, sort_keys=False))
    with rank_zero_first():
        seq, split, store = _prepared(cfg)
        text = item_text(cfg, seq, store) if uses_item_text(cfg) else None
        attrs = item_attributes(cfg, seq, store) if uses_item_attributes(cfg) else None
    torch.manual_seed(cfg.train.seed)
    sizes = data_sizes(seq, text_dim=0 if text is None else text.shape[1], attributes=attrs)
    model = build_model(cfg.model.name, cfg.model.config, sizes)
    if text is not None:
        model.set_item_text(text)  # a persistent buffer: checkpoints carry it (see Recommender.set_item_text)
    if attrs is not None:
        model.set_item_attributes(attrs)  # likewise
    view = TrainView.from_split(seq, split, train=train_key(split), target_behaviors=_target_behaviors(cfg))
    valid = eval_set(seq, split, "valid") if "valid" in split.folds else None
    if valid is not None and cfg.eval.exclude_seen:  # early stopping and evaluation read one exclude_seen: eval's
        valid = drop_repeat_targets(seq, valid, "the validation fold (early stopping)")[0]
    if valid is None:
        log.warning("split %s has no 'valid' fold: no early stopping, the last epoch is kept", split.kind)
    vocabs = vocab_payload(seq)

    from evorec.data.batches import history_items

    _, train_items = history_items(seq, view.start, view.end)
    popularity = np.bincount(train_items, minlength=seq.items.size)[: seq.items.size].astype(np.int64)
    popularity[0] = 0

    def payload(m, extra):
        # training-part item counts travel with the model: serving's fallback for users without history
        return model_payload(m, merged, vocabs, {"item_popularity": popularity.tolist(), **(extra or {})})

    state = Trainer(model, view, valid, cfg.train, out, payload, exclude_seen=cfg.eval.exclude_seen, tracker=tracker).fit(resume=resume)
    return state, out


def train_key(split: Split) -> str:
    """The training set a model of this split learns from: ``train``, or on a backtest split the
    one of the earliest cutoff (so every fold of the backtest lies after the model's data)."""
    if "train" in split.train_ends:
        return "train"
    return min(split.train_ends, key=lambda k: (split.train_cuts.get(k) is None, split.train_cuts.get(k) or 0))


def _target_behaviors(cfg: ExperimentConfig):
    return getattr(cfg.prepare.split, "target_behaviors", None)


def run_config(run_dir: str | Path) -> ExperimentConfig:
    run_dir = Path(run_dir)
    ck_path = run_dir / "best.pt"
    if not ck_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a finished run (no best.pt)")
    ck = load_checkpoint(ck_path)
    return ExperimentConfig.model_validate(ck["experiment"])


def evaluate_run(
    run_dir: str | Path,
    fold: str | None = None,
    exclude_seen: bool | None = None,
    *,
    protocol: str | None = None,
    split_overrides: list[str] | None = None,
    eval_overrides: list[str] | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """Evaluate a run's best checkpoint; writes ``metrics.json`` and ``per_user.parquet``.

    ``protocol`` (``loo`` | ``time`` | ``backtest``) defaults to the run's own split; another
    one builds that split over the same sequences (:func:`default_split_config`, adjusted by
    ``split_overrides`` such as ``test_start=2014-01-01``), and the leakage guard refuses it when
    the model's training data reaches into its folds. ``eval_overrides`` adjust the run's
    ``eval`` config (``bootstrap=2000``, ``candidates=all``, ...). With ``tracking_uri`` the metrics
    with their CIs (``test/NDCG_at_10``, ``..._ci_low``/``_high``), the eval config and
    ``metrics.json`` go to MLflow: into the training's MLflow run when ``RUN/mlflow.json`` names
    the same tracking URI, else a new run."""
    from evorec.utils.config import apply_overrides

    run_dir = Path(run_dir)
    if not (run_dir / "best.pt").exists():
        raise FileNotFoundError(f"{run_dir} is not a finished run (no best.pt)")
    ck = load_checkpoint(run_dir / "best.pt")
    cfg = ExperimentConfig.model_validate(ck["experiment"])
    seq, run_split = prepared_data(cfg)
    if not seq.derived_from(ck["vocabs"].get("sequence_fingerprint")):  # same, or the same minus forgotten users
        raise ValueError(
            f"{run_dir} was trained on sequences {ck['vocabs'].get('sequence_fingerprint', '?')[:12]} "
            f"but its data now prepares to {seq.fingerprint[:12]}: the model's vocabulary differs from the split"
        )
    ecfg = cfg.eval.model_copy(update={} if exclude_seen is None else {"exclude_seen": exclude_seen})
    if eval_overrides:
        ecfg = EvalConfig.model_validate(apply_overrides(ecfg.model_dump(mode="json"), eval_overrides))
    key = train_key(run_split)
    training = TrainingPart(end=np.asarray(run_split.train_ends[key]), key=key, cut=run_split.train_cuts.get(key))
    split = run_split
    if (protocol and protocol != run_split.kind) or split_overrides:
        from evorec.data.prepare import PrepareConfig

        doc = apply_overrides(default_split_config(seq, run_split, protocol or run_split.kind), split_overrides or [])
        split = make_split(seq, PrepareConfig.model_validate({"split": doc}).split)
    if split.kind == "backtest":
        folds = [fold] if fold else sorted(split.folds)
    else:
        folds = [fold or ecfg.fold]
    for f in folds:
        if f not in split.folds:
            raise KeyError(f"the {split.kind} split has no fold {f!r}; it has {sorted(split.folds)}")
    model = load_model(ck)
    ev = evaluate_model(model, seq, split, folds, ecfg, training, max_len=cfg.train.max_len)
    out = {
        "run": str(run_dir),
        "model": ck["model_name"],
        "dataset": cfg.data.dataset,
        "sequence_fingerprint": seq.fingerprint,
        "fold": folds[0] if len(folds) == 1 else folds,
        **ev.summary,
        # precision: what training ran (train.precision=auto resolved on its machine) and why; cpu: that machine
        "train_state": {k: ck["train_state"].get(k) for k in (
            "epoch", "best_epoch", "train_seconds", "stopped", "precision", "precision_reason", "cpu", "threads")},
    }
    atomic_write_parquet(run_dir / "per_user.parquet", ev.table)
    atomic_write_text(run_dir / "metrics.json", json.dumps(out, indent=2, default=json_default))
    if tracking_uri:
        prefix = "" if len(folds) > 1 else f"{folds[0]}/"
        with RunTracker.start(tracking_uri, kind="evaluate", run_name=run_dir.name, resume_from=run_dir) as tracker:
            log_result(tracker, config={"folds": folds, "split": split.kind, **ecfg.model_dump(mode="json")},
                       fingerprint=seq.fingerprint, metrics=evaluation_metrics(out, prefix or "test/"),
                       files=[run_dir / "metrics.json"], run_dir=run_dir, params_prefix="evaluate.",
                       config_name="evaluate.yaml", config_as_tags=True)  # an evaluation may be run again with other settings
    return out




def compare_runs(run_a: str | Path, run_b: str | Path, metrics: list[str] | None = None, *, n_boot: int = 10000) -> dict:
    """Paired test of two evaluated runs (each evaluated first if it has no per_user.parquet)."""
    import pyarrow.parquet as pq

    from evorec.evaluation.compare import DEFAULT_METRICS, compare

    loaded = []
    for run in (Path(run_a), Path(run_b)):
        if not (run / "per_user.parquet").exists() or not (run / "metrics.json").exists():
            evaluate_run(run)
        loaded.append((pq.read_table(run / "per_user.parquet"), json.loads((run / "metrics.json").read_text())))
    (ta, ma), (tb, mb) = loaded
    return compare(ta, ma, tb, mb, tuple(metrics or DEFAULT_METRICS), n_boot=n_boot)
