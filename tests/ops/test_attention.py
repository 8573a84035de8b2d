"""The fused attention path (scaled_dot_product_attention) matches the plain reference."""

from __future__ import annotations

import pytest
import torch

from evorec.ops.attention import (
    MultiHeadSelfAttention,
    TransformerBlock,
    attention_mask,
    fused_attention,
    reference_attention,
)


def left_padded_mask(lengths: list[int], T: int) -> torch.Tensor:
    """(B, T) bool with each row's events at the end (left padding), as SequenceBatch has them."""
    pos = torch.arange(T)[None, :]
    return pos >= (T - torch.tensor(lengths))[:, None]


# Rows: full, partly padded, one event, empty history.
LENGTHS = [7, 4, 1, 0]
T = 7


@pytest.mark.parametrize("causal", [True, False])
def test_mask_allows_only_real_earlier_keys_and_self(causal):
    mask = left_padded_mask(LENGTHS, T)
    allowed = attention_mask(mask, causal)[:, 0]  # (B, T, T)
    for b in range(len(LENGTHS)):
        for i in range(T):
            for j in range(T):
                want = (i == j) or (bool(mask[b, j]) and (j <= i or not causal))
                assert bool(allowed[b, i, j]) == want


# The functional paths are compared on every device there is (CUDA's kernels round differently).
DEVICES = [
    pytest.param("cpu", 1e-5, id="cpu"),
    pytest.param("cuda", 1e-4, id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]


@pytest.mark.parametrize("device,tol", DEVICES)
@pytest.mark.parametrize("causal", [True, False])
def test_functional_paths_agree_with_gradients(causal, device, tol):
    g = torch.Generator().manual_seed(0)
    B, H, d = len(LENGTHS), 2, 8
    mask = left_padded_mask(LENGTHS, T).to(device)
    allowed = attention_mask(mask, causal)
    base = [torch.randn(B, H, T, d, generator=g).to(device) for _ in range(3)]
    grad_out = torch.randn(B, H, T, d, generator=g).to(device)
    outs, grads = [], []
    for fn in (reference_attention, fused_attention):
        q, k, v = (t.clone().requires_grad_(True) for t in base)
        y = fn(q, k, v, allowed)
        (y * grad_out).sum().backward()
        outs.append(y)
        grads.append([q.grad, k.grad, v.grad])
    assert torch.isfinite(outs[0]).all() and torch.isfinite(outs[1]).all()
    torch.testing.assert_close(outs[1], outs[0], atol=tol, rtol=tol)
    for gf, gr in zip(grads[1], grads[0]):
        assert torch.isfinite(gr).all() and torch.isfinite(gf).all()
        torch.testing.assert_close(gf, gr, atol=tol, rtol=tol)


@pytest.mark.parametrize("causal", [True, False])
def test_module_fused_equals_reference(causal):
    torch.manual_seed(0)
    B, D = len(LENGTHS), 16
    mask = left_padded_mask(LENGTHS, T)
    ref = MultiHeadSelfAttention(D, 4, causal=causal, fused=False).eval()
    fast = MultiHeadSelfAttention(D, 4, causal=causal, fused=True).eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, D)
    xr, xf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yr, yf = ref(xr, mask), fast(xf, mask)
    torch.testing.assert_close(yf, yr, atol=1e-5, rtol=1e-5)
    yr.square().sum().backward()
    yf.square().sum().backward()
    torch.testing.assert_close(xf.grad, xr.grad, atol=1e-5, rtol=1e-5)
    for (n, pr), pf in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(pf.grad, pr.grad, atol=1e-5, rtol=1e-5, msg=n)
    # Padded positions come out as exact zeros and carry no NaN.
    assert (yr[~mask] == 0).all() and torch.isfinite(xr.grad).all()


def test_causal_output_ignores_later_events():
    torch.manual_seed(0)
    mask = left_padded_mask([T, 5], T)
    att = MultiHeadSelfAttention(16, 2, causal=True, fused=True).eval()
    x = torch.randn(2, T, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(2, T - 4, 16)
    torch.testing.assert_close(att(x, mask)[:, :4], att(y, mask)[:, :4])


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block_paths_agree(norm):
    torch.manual_seed(0)
    mask = left_padded_mask(LENGTHS, T)
    ref = TransformerBlock(16, 2, 32, causal=True, fused=False, norm=norm).eval()
    fast = TransformerBlock(16, 2, 32, causal=True, fused=True, norm=norm).eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(len(LENGTHS), T, 16) * mask[..., None]
    torch.testing.assert_close(fast(x, mask), ref(x, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("fused", [True, False])
def test_block_last_only_is_the_last_row_of_the_full_block(norm, fused):
    """The fast path for callers that read only the latest state: one query row, same numbers
    (with gradients), padding rows (the empty history) still exactly zero."""
    torch.manual_seed(0)
    mask = left_padded_mask(LENGTHS, T)
    block = TransformerBlock(16, 2, 32, causal=True, fused=fused, norm=norm).eval()
    x = (torch.randn(len(LENGTHS), T, 16) * mask[..., None]).requires_grad_()
    full = block(x, mask)  # (B, T, D) reference
    last = block(x, mask, last_only=True)  # (B, 1, D)
    assert last.shape == (len(LENGTHS), 1, 16)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-5, rtol=1e-5)
    assert (last[torch.tensor(LENGTHS) == 0] == 0).all()
    g_full, = torch.autograd.grad(full[:, -1].pow(2).sum(), x)
    g_last, = torch.autograd.grad(last[:, 0].pow(2).sum(), x)
    torch.testing.assert_close(g_last, g_full, atol=1e-5, rtol=1e-4)


def test_attention_dropout_is_applied_in_training_only():
    torch.manual_seed(0)
    mask = left_padded_mask([T, T], T)
    x = torch.randn(2, T, 16)
    for fused in (False, True):
        att = MultiHeadSelfAttention(16, 2, dropout=0.5, causal=False, fused=fused)
        att.eval()
        a, b = att(x, mask), att(x, mask)
        torch.testing.assert_close(a, b)
        att.train()
        assert not torch.allclose(att(x, mask), a)
