"""The trainer on a CUDA device (skipped without one): `device: auto` picks CUDA, checkpoints of a
GPU run load and evaluate on the CPU, train.compile / bf16 run on the GPU. (test_trainer.py runs
with `device: auto` too, so on a GPU machine it checks resume, budgets and DDP there.)"""

from __future__ import annotations

import pytest
import torch
from conftest import experiment

from evorec.data.batches import eval_batches, eval_set
from evorec.experiments.config import load_experiment
from evorec.experiments.training import evaluate_run, prepared_data, train
from evorec.models.checkpoint import load_checkpoint, load_model
from evorec.training.trainer import pick_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
MC = {"hidden": 32, "layers": 1, "heads": 1, "max_len": 20, "dropout": 0.0, "attn_dropout": 0.0}


def run(tmp_path, name, resume=False, **kw):
    cfg = load_experiment(None, base=experiment(tmp_path, **kw))
    state, out = train(cfg, tmp_path / name, resume=resume)
    return cfg, state, out


def test_auto_device_is_cuda_and_cpu_can_be_forced():
    assert pick_device("auto").type == "cuda"
    assert pick_device("cpu").type == "cpu"


@pytest.mark.parametrize("model", ["sasrec", "hstu"])
def test_gpu_run_loads_and_evaluates_on_cpu(tmp_path, model):
    cfg, state, out = run(tmp_path, model, model=model, model_cfg=MC, epochs=2, precision="bf16")
    assert state.epoch == 2 and all(h["events_per_s"] > 0 for h in state.history)
    ck = load_checkpoint(out / "best.pt")
    assert all(v.device.type == "cpu" for v in ck.weights.values())
    cpu_model = load_model(out / "best.pt")
    gpu_model = load_model(out / "best.pt").to("cuda")
    seq, split = prepared_data(cfg)
    es = eval_set(seq, split, "test")
    _, cb = next(iter(eval_batches(seq, es, 20, 64)))
    _, gb = next(iter(eval_batches(seq, es, 20, 64, "cuda")))
    with torch.no_grad():
        torch.testing.assert_close(gpu_model.score(gb).cpu(), cpu_model.score(cb), rtol=1e-4, atol=1e-4)
    res = evaluate_run(out)
    assert 0 < res["metrics"]["NDCG@10"] <= res["metrics"]["HR@10"] <= 1
    # The CPU evaluation of the file agrees with the GPU validation of the same checkpoint (same
    # users only when eval_users covers them all, so just the order of magnitude here).
    assert res["metrics"]["NDCG@10"] == pytest.approx(state.best_metric, abs=0.05)


def test_compiled_bf16_training_on_gpu_matches_plain(tmp_path):
    _, plain, out_p = run(tmp_path, "plain", model_cfg=MC, epochs=1, eval_users=100, precision="bf16")
    _, comp, out_c = run(tmp_path, "compiled", model_cfg=MC, epochs=1, eval_users=100, precision="bf16", compile=True)
    assert comp.history[0]["loss"] == pytest.approx(plain.history[0]["loss"], rel=2e-2)
    assert comp.best_metric == pytest.approx(plain.best_metric, abs=0.02)
