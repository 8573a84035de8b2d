"""Trainer: checkpoints rebuild the model, exact resume after a kill, time budget, DDP parity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml
from conftest import experiment

from evorec.data.batches import eval_batches, eval_set
from evorec.experiments.config import load_experiment
from evorec.experiments.training import evaluate_run, prepared_data, train
from evorec.models.checkpoint import CheckpointError, load_checkpoint, load_model


def run(tmp_path, name="run", **kw):
    cfg = load_experiment(None, base=experiment(tmp_path, **kw))
    state, out = train(cfg, tmp_path / name)
    return cfg, state, out


def test_train_checkpoint_rebuilds_model_and_evaluates(tmp_path):
    cfg, state, out = run(tmp_path, epochs=2)
    assert state.epoch == 2 and state.best_epoch >= 1
    assert (out / "best.pt").exists() and (out / "last.pt").exists() and (out / "history.json").exists()
    assert not list(out.glob(".*.tmp")), "temp files left behind"
    ck = load_checkpoint(out / "best.pt")
    assert ck.experiment["model"]["name"] == "sasrec" and ck.vocabs.items
    model = load_model(out / "best.pt")  # from the file alone
    seq, split = prepared_data(cfg)
    es = eval_set(seq, split, "test")
    _, batch = next(iter(eval_batches(seq, es, 20, 8)))
    s = model.score(batch)
    assert s.shape == (8, seq.items.size) and torch.isfinite(s[:, 1:]).all()
    res = evaluate_run(out)
    assert 0 < res["metrics"]["NDCG@10"] <= res["metrics"]["HR@10"] <= 1
    assert json.loads((out / "metrics.json").read_text())["metrics"] == res["metrics"]
    hist = json.loads((out / "history.json").read_text())["history"]
    assert all("valid/NDCG@10" in h for h in hist) and hist[0]["events_per_s"] > 0


def test_bad_checkpoint_and_config_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable evorec checkpoint"):
        load_checkpoint(bad)
    base = experiment(tmp_path)
    base["train"]["lrr"] = 0.1
    with pytest.raises(ValueError, match="lrr"):
        load_experiment(None, base=base)
    base = experiment(tmp_path, model="nope")
    with pytest.raises(KeyError, match="known models"):
        load_experiment(None, base=base)


KILL = textwrap.dedent(
    """
    import sys, yaml
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import train
    cfg = load_experiment(None, base=yaml.safe_load(open(sys.argv[1])))
    train(cfg, sys.argv[2], resume="--resume" in sys.argv)
    """
)


@pytest.mark.parametrize("ema_decay", [None, 0.99])
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, ema_decay):
    base = experiment(tmp_path, epochs=4, patience=10, ema_decay=ema_decay)
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(yaml.safe_dump(base))
    _, full, full_dir = run(tmp_path, "full", epochs=4, patience=10, ema_decay=ema_decay)

    script = tmp_path / "train_me.py"
    script.write_text(KILL)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(cfg_file), str(out)], env=dict(os.environ))
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if (out / "history.json").exists() and json.loads((out / "history.json").read_text())["epoch"] >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = json.loads((out / "history.json").read_text())["epoch"]
    assert 1 <= done_before < 4, "the kill should land mid-run"
    subprocess.run([sys.executable, str(script), str(cfg_file), str(out), "--resume"], check=True, env=dict(os.environ))
    resumed = load_checkpoint(out / "last.pt")
    uninterrupted = load_checkpoint(full_dir / "last.pt")
    assert resumed.train_state["epoch"] == 4
    for k, v in uninterrupted.weights.items():
        assert torch.allclose(v, resumed.weights[k], atol=1e-6), k
    if ema_decay:
        assert resumed.resume.weight_average["updates"] == uninterrupted.resume.weight_average["updates"]
        for k, v in uninterrupted.resume.weight_average["state"].items():
            assert torch.allclose(v, resumed.resume.weight_average["state"][k], atol=1e-6), k
    a = [h["valid/NDCG@10"] for h in uninterrupted.train_state["history"]]
    b = [h["valid/NDCG@10"] for h in resumed.train_state["history"]]
    assert a == pytest.approx(b, abs=1e-9)


def test_time_budget_stops_cleanly_and_keeps_best(tmp_path):
    _, state, out = run(tmp_path, epochs=50, time_budget_s=1.0)
    assert "time budget" in state.stopped and state.epoch < 50
    assert (out / "best.pt").exists()


def test_count_model_is_fitted_not_trained(tmp_path):
    _, state, out = run(tmp_path, model="pop", model_cfg={})
    assert state.stopped == "fitted" and (out / "best.pt").exists()
    assert evaluate_run(out)["metrics"]["HR@10"] > 0


DDP = textwrap.dedent(
    """
    import os, sys, yaml, torch, torch.distributed as dist
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import train
    rank, world, init = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    cfg = load_experiment(None, base=yaml.safe_load(open(sys.argv[4])))
    train(cfg, sys.argv[5])
    dist.barrier()  # both ranks done before either tears the group down
    dist.destroy_process_group()
    """
)


def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    # No dropout, so the only difference is how a step's batch is split across processes.
    mcfg = {"hidden": 32, "layers": 1, "heads": 1, "max_len": 20, "dropout": 0.0}
    single_cfg = experiment(tmp_path, model_cfg=mcfg, epochs=2, batch_size=128)
    _, single, single_dir = run(tmp_path, "single", model_cfg=mcfg, epochs=2, batch_size=128)
    ddp_cfg = dict(single_cfg)
    ddp_cfg["train"] = {**single_cfg["train"], "batch_size": 64}  # 2 x 64 per step = 128
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump(ddp_cfg))
    script = tmp_path / "ddp.py"
    script.write_text(DDP)
    init = f"file://{tmp_path / 'rendezvous'}"
    out = tmp_path / "ddp_run"
    procs = [
        subprocess.Popen([sys.executable, str(script), str(r), "2", init, str(cfg_file), str(out)], env=dict(os.environ, OMP_NUM_THREADS="1"))
        for r in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=600) == 0
    a = load_checkpoint(single_dir / "last.pt").train_state["history"]
    b = load_checkpoint(out / "last.pt").train_state["history"]
    for ha, hb in zip(a, b):
        assert hb["loss"] == pytest.approx(ha["loss"], rel=0.02)
        assert hb["valid/NDCG@10"] == pytest.approx(ha["valid/NDCG@10"], abs=0.02)


DDP_MODELS = textwrap.dedent(
    """
    import json, sys, yaml, torch.distributed as dist
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import train
    rank, init, cfg_file, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    base = yaml.safe_load(open(cfg_file))
    for name in ("gru4rec", "caser", "bert4rec", "hstu", "dien", "multvae"):
        cfg = load_experiment(None, base={**base, "model": {"name": name, "config": {}}})
        state, _ = train(cfg, f"{out}/{name}")
        if rank == 0:
            print(json.dumps({"model": name, "epochs": state.epoch, "ndcg": state.best_metric}), flush=True)
    dist.barrier()  # both ranks done before either tears the group down
    dist.destroy_process_group()
    """
)


def test_ddp_trains_every_neural_model(tmp_path):
    """Each neural model takes DDP steps (static graph: the same parameters every step) and both
    processes finish; rank 0 reports a finite validation metric for every model."""
    cfg_file = tmp_path / "base.yaml"
    cfg_file.write_text(yaml.safe_dump(experiment(tmp_path, epochs=1, batch_size=64, eval_users=200)))
    script = tmp_path / "ddp_models.py"
    script.write_text(DDP_MODELS)
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), init, str(cfg_file), str(tmp_path / "runs")],
            env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, text=True,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    rows = [json.loads(line) for line in outs[0].splitlines() if line.startswith("{")]
    assert [r["model"] for r in rows] == ["gru4rec", "caser", "bert4rec", "hstu", "dien", "multvae"]
    assert all(r["epochs"] == 1 and 0 <= r["ndcg"] <= 1 for r in rows)


def test_torchrun_cli_shards_validation_and_stops_together(tmp_path):
    """`torchrun --nproc_per_node 2 -m evorec train`: the CLI joins the process group itself; each
    process ranks half the validation users and the gathered metric equals a single-process
    evaluation of the saved model; a time budget stops both processes at the same step."""
    base = experiment(tmp_path, epochs=50, batch_size=32, eval_users=None)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(base))
    out = tmp_path / "tr"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*torchrun, "-m", "evorec", "train", "--config", str(cfg_file), "--out", str(out), "--time-budget", "4"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [line for line in proc.stdout.splitlines() if line.startswith("trained sasrec")]
    # one line per process, identical (same epochs, same best metric), both stopped by the budget
    assert len(done) == 2 and done[0] == done[1] and "time budget" in done[0], proc.stdout
    state = json.loads((out / "history.json").read_text())
    best = state["history"][state["best_epoch"] - 1]
    single = evaluate_run(out, fold="valid")["metrics"]
    assert single["NDCG@10"] == pytest.approx(best["valid/NDCG@10"], abs=1e-6)
    assert single["HR@10"] == pytest.approx(best["valid/HR@10"], abs=1e-6)


def test_compiled_training_matches_the_plain_path(tmp_path):
    """train.compile=true (torch.compile of the loss module) against the eager reference: same
    losses and the same scores after training, within float tolerance (dropout off: compiled
    and eager kernels draw different random masks)."""
    mc = {"hidden": 32, "layers": 1, "heads": 1, "max_len": 20, "dropout": 0.0, "attn_dropout": 0.0}
    # fp32 on both sides: precision=auto would pick bf16 on an AVX512-BF16 CPU, whose rounding
    # differs between fused and eager kernels by more than this float tolerance
    _, plain, out_p = run(tmp_path, "plain", epochs=1, model_cfg=mc, max_len=20, eval_users=100, precision="fp32")
    _, comp, out_c = run(tmp_path, "compiled", epochs=1, model_cfg=mc, max_len=20, eval_users=100, compile=True, precision="fp32")
    hp, hc = plain.history[0], comp.history[0]
    assert hc["loss"] == pytest.approx(hp["loss"], rel=1e-3)
    mp, mcmp = load_model(out_p / "best.pt"), load_model(out_c / "best.pt")
    cfg = load_experiment(None, base=experiment(tmp_path))
    seq, split = prepared_data(cfg)
    es = eval_set(seq, split, "test")
    _, batch = next(iter(eval_batches(seq, es, 20, 64)))
    torch.testing.assert_close(mcmp.score(batch), mp.score(batch), rtol=1e-3, atol=1e-3)


def test_weight_average_matches_a_plain_loop():
    from evorec.training.trainer import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    net.register_buffer("table", torch.arange(6).reshape(2, 3))  # an integer buffer: copied, not averaged
    ema = WeightAverage(net, 0.9)
    ref = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for n in range(30):
        opt.zero_grad()
        (net(torch.randn(8, 4)) - 1).pow(2).mean().backward()
        opt.step()
        ema.update()
        d = min(0.9, (1 + n) / (10 + n))
        ref = [d * r + (1 - d) * p.detach() for r, p in zip(ref, net.parameters())]
    net.table += 1
    avg = ema.averaged()
    for a, r, p in zip(avg.parameters(), ref, net.parameters()):
        assert torch.allclose(a, r, atol=1e-6) and not torch.allclose(a, p)
    assert torch.equal(avg.table, net.table) and not any(p.requires_grad for p in avg.parameters())


def test_weight_average_is_what_is_validated_saved_and_resumed(tmp_path):
    kw = dict(epochs=2, ema_decay=0.9, eval_users=None)
    cfg, state, out = run(tmp_path, **kw)
    last, best = load_checkpoint(out / "last.pt"), load_checkpoint(out / "best.pt")
    avg = last.resume.weight_average["state"]
    assert last.resume.weight_average["updates"] == state.step
    key = next(k for k in avg if k.endswith("weight") and avg[k].ndim == 2)
    assert not torch.allclose(avg[key], last.weights[key]), "the average should differ from the last weights"
    if state.best_epoch == 2:
        assert all(torch.equal(best.weights[k], avg[k]) for k in avg)
    # the saved best model is the validated one: ranking valid with it gives the recorded metric
    rec = json.loads((out / "history.json").read_text())["history"][state.best_epoch - 1]
    assert evaluate_run(out, fold="valid")["metrics"]["NDCG@10"] == pytest.approx(rec["valid/NDCG@10"], abs=1e-9)
    # a run resumed without its weight average is refused, not silently restarted
    last.resume.weight_average = None
    last.save(out / "last.pt")
    with pytest.raises(ValueError, match="no weight average"):
        train(cfg, out, resume=True)
