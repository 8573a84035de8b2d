"""The fast CPU dropout mask and the fused full-softmax cross-entropy match their plain references."""

from __future__ import annotations

import pytest
import torch

from evorec.ops.cross_entropy import reference_softmax_cross_entropy, softmax_cross_entropy
from evorec.ops.dropout import Dropout, dropout, keep_scale, reference_dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_fast_dropout_drops_p_and_scales_like_the_reference(p):
    torch.manual_seed(0)
    x = torch.ones(200, 37, 11)  # not a multiple of 4 elements per draw
    fast, ref = dropout(x, p), reference_dropout(x, p)
    n = x.numel()
    for y in (fast, ref):
        kept = y != 0
        # 79,200 elements: the drop rate is within 4 standard deviations of p.
        assert abs(1 - kept.float().mean().item() - p) < 4 * (p * (1 - p) / n) ** 0.5
        # Kept values are scaled by 1/(1-p) (the fast path: 1 over the keep probability it used).
        torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)), rtol=1e-4, atol=0)
    # Unbiased: the mean stays ~1.
    assert abs(fast.mean().item() - 1.0) < 4 * (p / (1 - p) / n) ** 0.5


def test_fast_dropout_masks_are_independent_across_elements_and_calls():
    torch.manual_seed(0)
    x = torch.ones(100_000)
    a, b = dropout(x, 0.5) != 0, dropout(x, 0.5) != 0
    assert not torch.equal(a, b)
    # Neighbours (the four int16 lanes of one draw) are independent: P(both kept) ~ 1/4.
    both = (a[:-1] & a[1:]).float().mean().item()
    assert abs(both - 0.25) < 0.01
    # Every lane position of the int64 draw keeps ~half (no lane reads a fixed sign bit).
    for lane in range(4):
        assert abs(a[lane::4].float().mean().item() - 0.5) < 0.01


def test_fast_dropout_gradient_uses_the_forward_mask():
    torch.manual_seed(0)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.3)
    (g,) = torch.autograd.grad(y.sum(), x)
    # d(sum y)/dx = the scale where kept, 0 where dropped: the same mask as the forward.
    torch.testing.assert_close(g, (y.detach() / x.detach()).where(x.detach() != 0, g))
    assert torch.equal(g == 0, y.detach() == 0)


def test_fast_dropout_is_seeded_and_off_in_eval():
    x = torch.randn(32, 50)
    torch.manual_seed(3)
    a = dropout(x, 0.5)
    torch.manual_seed(3)
    b = dropout(x, 0.5)
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(1)
    torch.testing.assert_close(keep_scale(x, 0.5, g), keep_scale(x, 0.5, torch.Generator().manual_seed(1)))
    m = Dropout(0.5)
    m.eval()
    assert torch.equal(m(x), x)
    m.train()
    assert not torch.equal(m(x), x)
    assert torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 0.5, training=False), x)


def test_fast_dropout_edge_probabilities_fall_back_to_the_reference():
    x = torch.randn(10, 10)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))  # all dropped, no division by zero
    y = dropout(x, 1e-7)  # rounds to 0 levels: the reference path (keeps ~everything)
    assert torch.isfinite(y).all()
    assert dropout(torch.empty(0, 4), 0.5).shape == (0, 4)


def test_fast_dropout_keeps_the_dtype_under_bfloat16():
    x = torch.randn(16, 16, dtype=torch.bfloat16)
    assert dropout(x, 0.5).dtype == torch.bfloat16


@pytest.mark.parametrize("rows", [37, 150])  # 150: row sums in blocks of 64, the last one partial
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_cross_entropy_matches_the_reference(dtype, rows):
    torch.manual_seed(0)
    logits = (torch.randn(rows, 501) * 4).to(dtype)
    targets = torch.randint(1, 501, (rows,))
    targets[0] = 500  # the last column
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    la = softmax_cross_entropy(a, targets)
    lb = reference_softmax_cross_entropy(b, targets)
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-5)
    (ga,) = torch.autograd.grad(la * 3.0, a)  # a non-unit upstream gradient
    (gb,) = torch.autograd.grad(lb * 3.0, b)
    assert ga.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-4}
    torch.testing.assert_close(ga, gb, **tol)
    assert torch.count_nonzero(ga[:, 0]) == 0  # padding column: no probability, no gradient
    assert logits.equal(a.detach())  # the input is not modified


def test_fused_cross_entropy_huge_logits_stay_finite():
    logits = torch.tensor([[0.0, 1e4, -1e4, 3.0], [0.0, -50.0, 80.0, 80.0]], requires_grad=True)
    targets = torch.tensor([1, 3])
    loss = softmax_cross_entropy(logits, targets)
    ref = reference_softmax_cross_entropy(logits.detach(), targets)
    torch.testing.assert_close(loss.detach(), ref)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_fused_cross_entropy_refuses_a_second_backward():
    logits = torch.randn(4, 10, requires_grad=True)
    loss = softmax_cross_entropy(logits, torch.tensor([1, 2, 3, 4]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()


def test_fused_cross_entropy_of_no_rows_is_nan_like_the_reference():
    logits = torch.zeros(0, 10, requires_grad=True)
    t = torch.zeros(0, dtype=torch.long)
    assert torch.isnan(softmax_cross_entropy(logits, t)) == torch.isnan(reference_softmax_cross_entropy(logits, t))
