"""Training, evaluation and comparison of recommenders as functions over :class:`TrainingRun`.

``evorec train --config FILE --out RUN`` works from the project root with nothing prepared: the
experiment's data source is ingested and prepared through the :class:`DataCache`, the model is
built from its config plus sizes from the data (and side information: item text, item
attributes), trained, and its checkpoints embed the merged config and the vocabularies.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from evorec.data.batches import TrainView, eval_set
from evorec.data.sequences import SequenceData
from evorec.data.splits import Split, make_split
from evorec.errors import InputError, NotFoundError
from evorec.evaluation.nextbasket import basket_targets
from evorec.evaluation.protocols import EvalConfig, TrainingPart, default_split_config, drop_repeat_targets, evaluate_model
from evorec.experiments.cache import DataCache, PreparedData
from evorec.experiments.config import ExperimentConfig
from evorec.experiments.runs import TrainingRun
from evorec.models.base import DataSizes
from evorec.models.checkpoint import ModelCheckpoint, ModelVocabularies
from evorec.models.registry import build_model, make_config
from evorec.training.distributed import process_group_from_env, rank_zero_first
from evorec.training.trainer import Trainer, TrainState
from evorec.types import BEHAVIORS
from evorec.utils.tracking import RunTracker, evaluation_metrics, log_result, numeric

log = logging.getLogger(__name__)


# -- data -----------------------------------------------------------------------------------------


def prepared_data(cfg: ExperimentConfig) -> tuple[SequenceData, Split]:
    """Ingest + prepare the experiment's data, or reuse the cached result."""
    data = experiment_data(cfg)
    return data.seq, data.split


def experiment_data(cfg: ExperimentConfig) -> PreparedData:
    """The experiment's prepared data and its store (ingested again if the model reads item side
    information and the store was removed)."""
    return DataCache(cfg.cache_dir).prepared(cfg.data, cfg.prepare, need_store=uses_item_text(cfg) or uses_item_attributes(cfg))


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

    store = store or DataCache(cfg.cache_dir).store(cfg.data)
    tokens = item_attribute_tokens(store, cfg.data.dataset, seq.items.ids.to_pylist())  # ids[i] has index i + 1
    m, vocab, cut = attribute_matrix(tokens)
    n_with = int((m[1:] > 0).any(1).sum())
    if not vocab:
        raise InputError(
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

    store = store or DataCache(cfg.cache_dir).store(cfg.data)
    m = item_text_matrix(store, cfg.data.dataset, seq.items.ids.to_pylist(), cache_dir=seq.path)
    n_text = int((np.abs(m).sum(1) > 0).sum())
    if n_text == 0:
        log.warning("side.text is on but no item of %s has a title, brand or category path: text adds nothing", cfg.data.dataset)
    else:
        log.info("item text: %d of %d items have text", n_text, m.shape[0] - 1)
    return m


def data_sizes(seq: SequenceData, text_dim: int = 0, attributes: np.ndarray | None = None) -> DataSizes:
    return DataSizes(
        n_items=seq.items.size, n_categories=seq.categories.size, item_category=tuple(int(c) for c in seq.item_category()), text_dim=text_dim,
        n_attributes=0 if attributes is None else int(attributes.max()) + 1,
        attribute_width=0 if attributes is None else attributes.shape[1],
    )


def vocabularies(seq: SequenceData) -> ModelVocabularies:
    """What a checkpoint carries of the sequences: item, category and behaviour ids, the fingerprint."""
    return ModelVocabularies(seq.items.ids.to_pylist(), seq.categories.ids.to_pylist(), list(BEHAVIORS), seq.fingerprint)


def train_key(split: Split) -> str:
    """The training set a model of this split learns from: ``train``, or on a backtest split the
    one of the earliest cutoff (so every fold of the backtest lies after the model's data)."""
    if "train" in split.train_ends:
        return "train"
    return min(split.train_ends, key=lambda k: (split.train_cuts.get(k) is None, split.train_cuts.get(k) or 0))


# -- training -------------------------------------------------------------------------------------


def train(cfg: ExperimentConfig, out_dir: str | Path, *, resume: bool = False, tracking_uri: str | None = None) -> tuple[TrainState, Path]:
    """Prepare the data, build the model, train with early stopping; returns (training state, run dir).

    Under ``torchrun`` each process joins the process group here (DDP, see
    ``evorec.training.distributed``); process 0 prepares the data cache before the others read it.
    With ``tracking_uri`` process 0 also logs the run to MLflow (``evorec.utils.tracking``): the
    merged config, each epoch's record, the best validation metrics, the sequences' fingerprint,
    the best checkpoint, the history and the config; a failing tracking server is warned about once."""
    from evorec.training.distributed import rank

    run = TrainingRun(out_dir)
    with process_group_from_env(cfg.train.device):
        tracker = None
        if tracking_uri and rank() == 0:
            tracker = RunTracker.start(tracking_uri, kind="train", run_name=cfg.name or run.name,
                                       resume_from=run.dir if resume else None, tags={"evorec.model": cfg.model.name})
        try:
            state = _train(cfg, run, resume=resume, tracker=tracker)
        except BaseException:
            if tracker is not None:
                tracker.finish("FAILED")
            raise
        if tracker is not None:
            best = state.history[state.best_epoch - 1] if 0 < state.best_epoch <= len(state.history) else {}
            final = {f"best/{k}": v for k, v in best.items() if k.startswith("valid/")}
            final.update(numeric({"best_epoch": state.best_epoch, "epochs": state.epoch, "train_seconds": state.train_seconds}))
            tracker.set_tags({"evorec.stopped": state.stopped, "evorec.precision": state.precision})
            log_result(tracker, config=cfg.model_dump(mode="json"), fingerprint=run.fingerprint, metrics=final,
                       files=[run.best_checkpoint, run.history_file, run.config_file], run_dir=run.dir)
            tracker.finish()
        return state, run.dir


def _train(cfg: ExperimentConfig, run: TrainingRun, *, resume: bool, tracker: RunTracker | None = None) -> TrainState:
    import torch

    merged = cfg.model_dump(mode="json")
    if resume:
        prev = run.saved_config()
        if prev is not None and prev != merged:
            raise InputError(f"--resume: {run.config_file} holds a different config than the one given; use a new --out")
    run.write_config(merged)
    with rank_zero_first():
        data = experiment_data(cfg)
        seq, split = data.seq, data.split
        text = item_text(cfg, seq, data.store) if uses_item_text(cfg) else None
        attrs = item_attributes(cfg, seq, data.store) if uses_item_attributes(cfg) else None
    torch.manual_seed(cfg.train.seed)
    sizes = data_sizes(seq, text_dim=0 if text is None else text.shape[1], attributes=attrs)
    model = build_model(cfg.model.name, cfg.model.config, sizes)
    if text is not None:
        model.set_item_text(text)  # a persistent buffer: checkpoints carry it (see Recommender.set_item_text)
    if attrs is not None:
        model.set_item_attributes(attrs)  # likewise
    view = TrainView.from_split(seq, split, train=train_key(split), target_behaviors=cfg.target_behaviors)
    valid = eval_set(seq, split, "valid") if "valid" in split.folds else None
    if valid is not None and cfg.eval.protocol != "next_item":  # early stopping on the protocol the run is evaluated with
        valid = basket_targets(seq, split, "valid", cfg.eval.protocol, period_days=cfg.eval.period_days, exclude_seen=cfg.eval.exclude_seen)
    elif valid is not None and cfg.eval.exclude_seen:  # early stopping and evaluation read one exclude_seen: eval's
        valid = drop_repeat_targets(seq, valid, "the validation fold (early stopping)")[0]
    if valid is None:
        log.warning("split %s has no 'valid' fold: no early stopping, the last epoch is kept", split.kind)
    vocabs = vocabularies(seq)

    from evorec.data.batches import history_items

    _, train_items = history_items(seq, view.start, view.end)
    popularity = np.bincount(train_items, minlength=seq.items.size)[: seq.items.size].astype(np.int64)
    popularity[0] = 0

    def checkpoint(m, train_state: dict) -> ModelCheckpoint:
        # training-part item counts travel with the model: serving's fallback for users without history
        return ModelCheckpoint.of_model(m, merged, vocabs, item_popularity=popularity.tolist(), train_state=train_state)

    return Trainer(model, view, valid, cfg.train, run, checkpoint, exclude_seen=cfg.eval.exclude_seen, tracker=tracker).fit(resume=resume)


# -- evaluation -----------------------------------------------------------------------------------


def run_config(run_dir: str | Path) -> ExperimentConfig:
    """The experiment config a finished run was trained with."""
    return ExperimentConfig.model_validate(TrainingRun.open(run_dir).checkpoint.experiment)


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
    """Evaluate a run's best checkpoint; writes its metrics and per-user metrics into the run.

    ``protocol`` (``loo`` | ``time`` | ``backtest``) defaults to the run's own split; another
    one builds that split over the same sequences (:func:`default_split_config`, adjusted by
    ``split_overrides`` such as ``test_start=2014-01-01``), and the leakage guard refuses it when
    the model's training data reaches into its folds. ``eval_overrides`` adjust the run's
    ``eval`` config (``bootstrap=2000``, ``candidates=all``, ...). With ``tracking_uri`` the metrics
    with their CIs (``test/NDCG_at_10``, ``..._ci_low``/``_high``), the eval config and
    ``metrics.json`` go to MLflow: into the training's MLflow run when ``RUN/mlflow.json`` names
    the same tracking URI, else a new run."""
    from evorec.utils.config import apply_overrides

    run = TrainingRun.open(run_dir)
    ck = run.checkpoint
    cfg = ExperimentConfig.model_validate(ck.experiment)
    seq, run_split = prepared_data(cfg)
    run.check_data(seq)
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
            raise NotFoundError(f"the {split.kind} split has no fold {f!r}; it has {sorted(split.folds)}")
    model = ck.build_model()
    ev = evaluate_model(model, seq, split, folds, ecfg, training, max_len=cfg.train.max_len)
    out = {
        "run": str(run_dir),
        "model": ck.model_name,
        "dataset": cfg.data.dataset,
        "sequence_fingerprint": seq.fingerprint,
        "fold": folds[0] if len(folds) == 1 else folds,
        **ev.summary,
        # precision: what training ran (train.precision=auto resolved on its machine) and why; cpu: that machine
        "train_state": {k: ck.train_state.get(k) for k in (
            "epoch", "best_epoch", "train_seconds", "stopped", "precision", "precision_reason", "cpu", "threads")},
    }
    run.write_evaluation(out, ev.table)
    if tracking_uri:
        prefix = "" if len(folds) > 1 else f"{folds[0]}/"
        with RunTracker.start(tracking_uri, kind="evaluate", run_name=run.name, resume_from=run.dir) as tracker:
            log_result(tracker, config={"folds": folds, "split": split.kind, **ecfg.model_dump(mode="json")},
                       fingerprint=seq.fingerprint, metrics=evaluation_metrics(out, prefix or "test/"),
                       files=[run.metrics_file], run_dir=run.dir, params_prefix="evaluate.",
                       config_name="evaluate.yaml", config_as_tags=True)  # an evaluation may be run again with other settings
    return out


def compare_runs(run_a: str | Path, run_b: str | Path, metrics: list[str] | None = None, *, n_boot: int = 10000) -> dict:
    """Paired test of two evaluated runs (each evaluated first if it has no per-user metrics)."""
    from evorec.evaluation.compare import DEFAULT_METRICS, compare

    loaded = []
    for run in (TrainingRun(run_a), TrainingRun(run_b)):
        if not run.evaluated:
            evaluate_run(run.dir)
        loaded.append((run.per_user(), run.metrics()))
    (ta, ma), (tb, mb) = loaded
    return compare(ta, ma, tb, mb, tuple(metrics or DEFAULT_METRICS), n_boot=n_boot)
