"""Model export (ONNX, TorchScript) of the SASRec trained on real ML-100K: the exported scoring
function matches the model on real user histories, for batch sizes other than the traced one;
the sidecar describes the inputs; bad inputs fail with a clear message."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from evorec.cli.main import app
from evorec.data.batches import eval_set, gather, to_batch
from evorec.experiments.runs import TrainingRun
from evorec.experiments.training import prepared_data, run_config
from evorec.models.base import DataSizes, Recommender
from evorec.models.checkpoint import load_model
from evorec.models.registry import build_model
from evorec.serving.export import INPUT_NAMES, ExportError, export_model, export_run, run_onnx


@pytest.fixture(scope="module")
def real(trained_run):
    """(model, T, {name: (N, T) arrays of real test histories, left-padded to T}, eager scores)."""
    ck = TrainingRun(trained_run).checkpoint
    T = int(ck.experiment["train"]["max_len"])
    model = load_model(ck)
    seq, split = prepared_data(run_config(trained_run))
    es = eval_set(seq, split, "test")
    rows = np.arange(min(300, len(es.users)))
    arrays = gather(seq, es.hist_start[rows], es.hist_end[rows], T)  # (N, T), not trimmed: the export's fixed T
    arrays["query_ts"] = es.target_ts[rows]
    assert arrays["mask"].all(axis=1).any() and not arrays["mask"].all()  # full and padded histories both present
    with torch.no_grad():
        batch = to_batch({k: v for k, v in arrays.items() if k != "query_ts"}, arrays["query_ts"], es.users[rows])
        eager = model.score(batch).numpy()
    return model, T, arrays, eager


def _finite_diff(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    assert np.isneginf(got[:, 0]).all() and np.isfinite(got[:, 1:]).all()  # column 0 is padding: -inf
    return float(np.abs(got[:, 1:] - want[:, 1:]).max())


@pytest.fixture(scope="module")
def onnx_export(trained_run, tmp_path_factory):
    pytest.importorskip("onnxruntime")  # the `export` extra
    return export_run(trained_run, "onnx", tmp_path_factory.mktemp("export") / "sasrec.onnx")


def test_onnx_matches_the_model_on_real_histories(onnx_export, real, trained_run):
    model, T, arrays, eager = real
    res = onnx_export
    assert res.path.exists() and res.format == "onnx" and res.max_len == T and res.max_abs_diff <= 1e-4
    assert not list(res.path.parent.glob(".*")), "temp files left behind"
    side = json.loads(res.sidecar.read_text())
    ck = TrainingRun(trained_run).checkpoint
    assert side["model_name"] == "sasrec" and side["max_len"] == T and side["n_items"] == model.n_items
    assert [x["name"] for x in side["inputs"]] == list(INPUT_NAMES) and side["output"]["shape"] == ["batch", model.n_items]
    assert side["vocab_fingerprint"] == ck.vocabs.sequence_fingerprint

    import onnxruntime as ort

    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(INPUT_NAMES)
    assert sess.get_inputs()[0].shape[1] == T and not isinstance(sess.get_inputs()[0].shape[0], int)  # dynamic batch
    feed = {k: arrays[k] for k in INPUT_NAMES}
    got = sess.run(["scores"], feed)[0]  # all N real users in one batch (traced with 2)
    diff = _finite_diff(got, eager)
    assert diff <= 1e-4, diff
    for sl in (slice(0, 1), slice(5, 12)):  # batch sizes 1 and 7
        part = run_onnx(res.path, {k: v[sl] for k, v in feed.items()})
        assert _finite_diff(part, eager[sl]) <= 1e-4
    # Same top-10 for almost every user (ties at float32 resolution may swap neighbours).
    top = lambda s: np.argsort(-s[:, 1:], axis=1)[:, :10]  # noqa: E731 - a one-line helper beside its use
    assert (top(got) == top(eager)).all(axis=1).mean() > 0.95


def test_torchscript_matches_the_model_on_real_histories(trained_run, real, tmp_path):
    model, T, arrays, eager = real
    res = export_run(trained_run, "torchscript", tmp_path / "sasrec.pt")
    assert res.max_abs_diff <= 1e-4 and res.sidecar.name == "sasrec.pt.json"
    loaded = torch.jit.load(str(res.path))  # needs neither evorec nor the checkpoint
    feed = [torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in INPUT_NAMES]
    with torch.no_grad():
        got = loaded(*feed).numpy()
        assert _finite_diff(got, eager) <= 1e-4
        part = loaded(*[f[3:6] for f in feed]).numpy()  # batch size 3
    assert _finite_diff(part, eager[3:6]) <= 1e-4


@pytest.mark.parametrize(("fmt", "file"), [("torchscript", "model.pt"), ("onnx", "model.onnx")])
def test_cli_export_default_path_and_json(trained_run, fmt, file):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    r = CliRunner().invoke(app, ["export", str(trained_run), "--format", fmt, "--json"])
    try:
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["path"] == str(trained_run / "export" / file) and doc["model_name"] == "sasrec"
        assert sorted(p.name for p in (trained_run / "export").iterdir()) == [file, f"{file}.json"]  # no temp files
    finally:
        shutil.rmtree(trained_run / "export", ignore_errors=True)  # the run is shared by the session


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "tflite"], "unknown export format 'tflite'"),
    (["--format", "onnx", "--run-missing"], "No such option"),
])
def test_cli_bad_format_is_a_clear_error(trained_run, args, message):
    r = CliRunner().invoke(app, ["export", str(trained_run), *args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_missing_run_and_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        export_run(tmp_path / "nope", "onnx")
    with pytest.raises(FileNotFoundError, match="no best.pt"):
        export_run(tmp_path, "onnx")
    r = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "--format", "onnx"])
    assert r.exit_code == 2 and "run directory not found" in r.output


def _sizes(n_items=30, n_categories=4) -> DataSizes:
    return DataSizes(n_items=n_items, n_categories=n_categories, item_category=tuple(i % n_categories for i in range(n_items)))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_count_based_model_is_refused_by_name(tmp_path, fmt):
    pop = build_model("pop", {}, _sizes())
    with pytest.raises(ExportError, match="model 'pop' is count-based"):
        export_model(pop, fmt, tmp_path / f"pop.{fmt}", max_len=8)
    assert not list(tmp_path.iterdir())  # nothing written


class PythonScorer(Recommender):
    """A model whose score leaves tensors for Python values (``tolist`` + a Counter): a trace
    freezes them as constants, torch.export cannot follow them. (Plain numpy is not enough to
    break the ONNX path: the dynamo exporter translates e.g. ``np.bincount`` into ONNX ops.)"""

    name = "python_scorer"
    trainable = True

    def __init__(self, sizes: DataSizes):
        super().__init__(None, sizes)
        self.w = torch.nn.Parameter(torch.ones(1))

    def score(self, batch):
        counts = Counter(batch.items[batch.mask].tolist())  # data-dependent Python values
        s = torch.tensor([float(counts.get(i, 0)) for i in range(self.n_items)]).expand(batch.size, -1).clone() * self.w
        s[:, 0] = float("-inf")
        return s


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_untraceable_model_fails_with_its_name_and_leaves_no_file(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    with pytest.raises(ExportError, match="model 'python_scorer'"):
        export_model(PythonScorer(_sizes()), fmt, tmp_path / "m.bin", max_len=8)
    assert not list(tmp_path.iterdir())


def test_bad_arguments(real, tmp_path):
    model, T, _, _ = real
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(model, "pickle", tmp_path / "m", max_len=T)
    with pytest.raises(ExportError, match="max_len must be at least 1"):
        export_model(model, "onnx", tmp_path / "m", max_len=0)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_service_serves_an_exported_file(trained_run, tmp_path, monkeypatch, fmt):
    """EVOREC_SERVE_RUN may name an exported file: the same recommendations as the run itself."""
    from fastapi.testclient import TestClient

    from evorec.serving.app import create_app
    from evorec.serving.eventlog import EventStore
    from evorec.serving.settings import ServeSettings
    from evorec.serving.state import ServiceState

    monkeypatch.setenv("EVOREC_SECRET", "x")
    res = export_run(trained_run, fmt, tmp_path / f"m.{'onnx' if fmt == 'onnx' else 'pt'}")
    items = TrainingRun(trained_run).checkpoint.vocabs.items
    answers = []
    for run in (str(trained_run), str(res.path)):
        settings = ServeSettings(run=run, db_url=f"sqlite:///{tmp_path / (fmt + str(len(answers)) + '.db')}")
        state = ServiceState(EventStore(settings.db_url), settings.run)
        client = TestClient(create_app(settings, state))
        w = {"Authorization": f"Bearer {state.store.create_key('write')}"}
        got = []
        for u in range(5):
            ev = [{"user_id": f"u{u}", "item_id": items[(u * 37 + t * 11) % len(items)], "ts": 1_700_000_000 + t} for t in range(3 + 7 * u)]
            client.post("/v1/events", json={"events": ev}, headers=w)
            r = client.get(f"/v1/users/u{u}/recommendations?k=10", headers=w).json()
            got.append(r["items"])
        expl = client.get(f"/v1/users/u1/explanations?item_id={got[1][0]['item_id']}", headers=w)
        assert expl.status_code == 200, expl.text
        answers.append((got, expl.json()["method"]))
    (ref, ref_method), (exp, exp_method) = answers
    for a, b in zip(ref, exp):
        assert [x["item_id"] for x in a] == [x["item_id"] for x in b]
        assert np.allclose([x["score"] for x in a], [x["score"] for x in b], atol=1e-4)
    assert ref_method == "integrated_gradients" and exp_method == "occlusion"  # an exported file has no embeddings to integrate
