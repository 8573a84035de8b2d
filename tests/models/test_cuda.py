"""CUDA checks (skipped without a CUDA device): every model trains and scores on the GPU, gives the
CPU's scores with the same weights, and a run trained on the GPU loads and evaluates on the CPU.
The attention module on the GPU vs the CPU, fp32 and bf16 autocast (the functional fused-vs-plain
comparison runs on CUDA too, in tests/ops/test_attention.py)."""

from __future__ import annotations

import conformance as C
import numpy as np
import pytest
import torch
from test_conformance import MODELS

from evorec.data.batches import TrainView, eval_batches, eval_set, training_batches
from evorec.ops.attention import MultiHeadSelfAttention
from evorec.training.losses import FullSoftmaxCE

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")
LENGTHS = [7, 4, 1, 0]
T = 7


def padded(lengths, T, device):
    pos = torch.arange(T, device=device)[None, :]
    return pos >= (T - torch.tensor(lengths, device=device))[:, None]


@pytest.mark.parametrize("causal", [True, False])
def test_module_on_cuda_matches_cpu_and_bf16_autocast(causal):
    torch.manual_seed(0)
    B, D = len(LENGTHS), 16
    x = torch.randn(B, T, D)
    mask = padded(LENGTHS, T, "cpu")
    cpu_ref = MultiHeadSelfAttention(D, 4, causal=causal, fused=False).eval()
    want = cpu_ref(x, mask)
    for fused in (False, True):
        m = MultiHeadSelfAttention(D, 4, causal=causal, fused=fused).eval().to(CUDA)
        m.load_state_dict(cpu_ref.state_dict())
        xc, mc = x.to(CUDA).requires_grad_(True), mask.to(CUDA)
        y = m(xc, mc)
        torch.testing.assert_close(y.cpu(), want, atol=1e-4, rtol=1e-4)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yb = m(xc, mc)
        yb.float().square().sum().backward()
        assert torch.isfinite(xc.grad).all()
        assert (yb[~mc] == 0).all(), "padded positions must stay exactly zero"
        torch.testing.assert_close(yb.float().cpu(), want, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_trains_on_cuda_and_scores_like_cpu(name, tiny):
    seq, split = tiny
    cfg = MODELS[name]
    view = TrainView.from_split(seq, split)
    model = C.make(name, cfg, seq).to(CUDA)
    if model.trainable:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        model.train()
        batches = training_batches(view, C.MAX_LEN, 64, np.random.default_rng(0), device=CUDA)
        for _, batch in zip(range(3), batches):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model.training_loss(batch, FullSoftmaxCE(), g)
            assert torch.isfinite(loss), f"{name}: loss {loss}"
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        model.fit(view)
    model.eval()
    es = eval_set(seq, split, "test")
    _, gpu_batch = next(iter(eval_batches(seq, es, C.MAX_LEN, 32, CUDA)))
    _, cpu_batch = next(iter(eval_batches(seq, es, C.MAX_LEN, 32)))
    cpu_model = C.make(name, cfg, seq, seed=5)
    if not model.trainable:
        cpu_model.fit(view)
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    cpu_model.eval()
    with torch.no_grad():
        s_gpu = model.score(gpu_batch)
        s_cpu = cpu_model.score(cpu_batch)
    assert s_gpu.device.type == "cuda" and torch.isneginf(s_gpu[:, 0]).all()
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, atol=2e-3, rtol=2e-3)
