"""Run directories and their typed payloads (evorec.experiments.runs): the layout named once, the
payloads round-trip through the on-disk dict layout, files written before the typed payloads
existed still load, and a run refuses data that is not its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evorec.errors import InputError, MissingPathError
from evorec.experiments.config import load_experiment
from evorec.experiments.runs import ForecastRun, TrainingRun
from evorec.experiments.tables import tables
from evorec.forecasting.payload import ForecastContext, ForecasterPayload
from evorec.models.base import DataSizes
from evorec.models.checkpoint import CheckpointError, ModelCheckpoint, ModelVocabularies, ResumeState, load_checkpoint
from evorec.models.registry import build_model

SIZES = DataSizes(n_items=6, n_categories=3, item_category=(0, 1, 1, 2, 2, 3))
EXPERIMENT = {"name": "t", "model": {"name": "pop", "config": {}}, "train": {"max_len": 7}}


def _pop():
    model = build_model("pop", {}, SIZES)
    model.load_state_dict({**model.state_dict(), "popularity": torch.tensor([0, 5, 1, 3, 0, 2], dtype=model.state_dict()["popularity"].dtype)})
    return model


def _old_checkpoint_dict(model) -> dict:
    """A checkpoint as evorec wrote it before ModelCheckpoint (models.checkpoint.model_payload + extras)."""
    return {
        "format_version": 1, "model_name": model.name, "model_config": model.config.model_dump(mode="json"),
        "sizes": model.sizes.to_dict(), "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "experiment": EXPERIMENT,
        "vocabs": {"items": list("abcde"), "categories": ["x", "y"], "behaviors": ["view"], "sequence_fingerprint": "f" * 32},
        "item_popularity": [0, 5, 1, 3, 0, 2], "train_state": {"epoch": 1, "best_epoch": 1, "precision": "fp32"},
    }


def test_a_training_run_names_its_files_once(tmp_path):
    run = TrainingRun(tmp_path / "r")
    names = {p.name for p in (run.best_checkpoint, run.last_checkpoint, run.config_file, run.history_file, run.metrics_file,
                              run.per_user_file)}
    assert names == {"best.pt", "last.pt", "config.yaml", "history.json", "metrics.json", "per_user.parquet"}
    assert not TrainingRun.holds_one(run.dir) and not run.finished
    with pytest.raises(MissingPathError, match="is not a finished run"):
        TrainingRun.open(run.dir)
    fc = ForecastRun(tmp_path / "f")
    assert {fc.forecaster_file.name, fc.backtest_file.name, fc.config_file.name} == {"forecaster.pt", "backtest.json", "config.yaml"}
    with pytest.raises(MissingPathError, match="is not a forecast run"):
        ForecastRun.open(fc.dir)


def test_a_checkpoint_written_before_the_typed_payload_loads(tmp_path):
    model = _pop()
    run = TrainingRun(tmp_path / "old")
    run.dir.mkdir()
    torch.save(_old_checkpoint_dict(model), run.best_checkpoint)
    ck = TrainingRun.open(run.dir).checkpoint
    assert ck.model_name == "pop" and ck.vocabs.items == list("abcde") and ck.vocabs.sequence_fingerprint == "f" * 32
    assert ck.item_popularity == [0, 5, 1, 3, 0, 2] and ck.train_state["precision"] == "fp32" and ck.max_len == 7
    assert ck.sizes == SIZES and ck.resume is None
    again = ck.build_model()
    assert torch.equal(again.state_dict()["popularity"], model.state_dict()["popularity"])
    assert run.fingerprint == "f" * 32 and run.version.startswith("old@")


def test_a_checkpoint_round_trips_through_the_old_layout(tmp_path):
    model = _pop()
    ck = ModelCheckpoint.of_model(model, EXPERIMENT, ModelVocabularies(list("abcde"), ["x", "y"], ["view"], "f" * 32),
                                  item_popularity=[0, 5, 1, 3, 0, 2], train_state={"epoch": 1, "best_epoch": 1, "precision": "fp32"})
    ck.resume = ResumeState({"state": {}, "param_groups": []}, {"last_epoch": 3}, None)
    path = ck.save(tmp_path / "last.pt")
    raw = torch.load(path, weights_only=False)
    assert isinstance(raw, dict)  # on disk: the plain dict evorec has always written
    old = _old_checkpoint_dict(model)
    assert set(raw) == set(old) | {"optimizer", "scheduler"}
    assert {k: raw[k] for k in old if k != "state"} == {k: v for k, v in old.items() if k != "state"}
    back = load_checkpoint(path)
    assert back.resume == ck.resume and back.vocabs == ck.vocabs and back.sizes == ck.sizes
    assert all(torch.equal(back.weights[k], v) for k, v in ck.weights.items())
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable evorec checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


class _Seq:
    """The one thing check_data reads of sequences."""

    def __init__(self, fingerprint: str, derived: tuple[str, ...] = ()) -> None:
        self.fingerprint = fingerprint
        self._derived = {fingerprint, *derived}

    def derived_from(self, fp: str | None) -> bool:
        return fp in self._derived


def test_a_run_checks_its_data_once_against_its_fingerprint(tmp_path):
    run = TrainingRun(tmp_path / "r")
    run.dir.mkdir()
    torch.save(_old_checkpoint_dict(_pop()), run.best_checkpoint)
    run.check_data(_Seq("f" * 32))
    run.check_data(_Seq("e" * 32, derived=("f" * 32,)))  # the same minus forgotten users
    with pytest.raises(InputError, match="vocabulary differs from the split"):
        run.check_data(_Seq("0" * 32))


def _old_forecaster_dict() -> dict:
    """forecaster.pt as evorec wrote it before ForecasterPayload (the former forecast_pipeline module)."""
    return {
        "kind": "evorec-forecaster",
        "forecaster": {"kind": "baseline", "name": "persistence"},
        "experiment": {"data": {"dataset": "sim"}, "forecast": {}},
        "sequence_fingerprint": "a" * 32,
        "sequences_dir": "/nowhere/prepared",
        "categories": ["x", "y"],
        "context": {"train_limit": 100, "unit": "seconds", "transitions": torch.eye(3, dtype=torch.float64), "steps": {86400: 2}},
    }


def test_a_forecaster_written_before_the_typed_payload_loads_and_round_trips(tmp_path):
    run = ForecastRun(tmp_path / "fc")
    run.dir.mkdir()
    torch.save(_old_forecaster_dict(), run.forecaster_file)
    p = ForecastRun.open(run.dir).payload
    assert p.model_kind == "baseline" and p.dataset == "sim" and p.categories == ["x", "y"] and p.sequence_fingerprint == "a" * 32
    assert p.context.train_limit == 100 and p.context.steps == {86400: 2} and np.array_equal(p.context.transitions, np.eye(3))
    with pytest.raises(MissingPathError, match="are gone"):
        run.trained_sequences()
    with pytest.raises(InputError, match="other sequences"):
        run.check_data(_Seq("b" * 32))
    out = ForecastRun(tmp_path / "again")
    out.save(p, {"dataset": "sim"}, {"forecast": {}})
    raw = torch.load(out.forecaster_file, weights_only=False)
    old = _old_forecaster_dict()
    assert set(raw) == set(old) and raw["context"]["steps"] == old["context"]["steps"]
    back = ForecastRun(out.dir).payload
    assert back.model_state == p.model_state and back.context.unit == "seconds" and out.backtest() == {"dataset": "sim"}
    assert out.saved_config() == {"forecast": {}} and out.files() == [out.forecaster_file, out.backtest_file, out.config_file]
    torch.save({"kind": "something else"}, out.forecaster_file)
    with pytest.raises(InputError, match="not an evorec forecaster"):
        ForecastRun(out.dir).payload  # noqa: B018 - reading it is the test


def test_forecast_context_round_trip():
    ctx = ForecastContext(5, "events", None, {3: 1})
    assert ForecastContext.from_dict(ctx.to_dict()) == ctx
    payload = ForecasterPayload({"kind": "ranker"}, {}, "f", "d", [], ctx)
    assert ForecasterPayload.from_dict(payload.to_dict()).model_kind == "ranker"


def test_the_config_directory_is_a_field_never_saved(tmp_path):
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("data: {path: events.csv, format: generic, dataset: d}\nmodel: {name: pop}\n")
    cfg = load_experiment(cfg_file)
    assert cfg.data.base_dir == str(tmp_path.resolve())
    assert "base_dir" not in cfg.model_dump(mode="json")["data"]
    assert load_experiment(None, base=cfg.model_dump(mode="json")).data.base_dir is None


def test_paper_tables_are_package_data():
    t = tables()["s3rec-beauty"]
    assert [r.model for r in t.rows] == ["pop", "gru4rec", "caser", "sasrec", "bert4rec"]
    sasrec = next(r for r in t.rows if r.model == "sasrec")
    assert sasrec.train["weight_decay"] == 0.0 and sasrec.train["lr"] == 0.002 and sasrec.published["HR@10"] == 0.0605
    assert "weight_decay" not in next(r for r in t.rows if r.model == "gru4rec").train
