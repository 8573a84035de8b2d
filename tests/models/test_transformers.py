"""Focused tests of the attention models (SASRec, BERT4Rec, HSTU) on small synthetic batches."""

from __future__ import annotations

import pytest
import torch

from evorec.models.base import DataSizes
from evorec.models.layers.embeddings import next_gap_buckets, query_gap_bucket
from evorec.models.registry import build_model
from evorec.training.losses import FullSoftmaxCE
from evorec.types import SequenceBatch

N_ITEMS = 40
SIZES = DataSizes(n_items=N_ITEMS, n_categories=6, item_category=tuple(i % 6 for i in range(N_ITEMS)))
SMALL = {"hidden": 16, "layers": 2, "heads": 2, "max_len": 12}


def make_batch(lengths: list[int], T: int = 10, seed: int = 0, targets: bool = True) -> SequenceBatch:
    """Left-padded histories with increasing timestamps (gaps from seconds to months)."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    mask = torch.arange(T)[None, :] >= (T - torch.tensor(lengths))[:, None]  # (B, T)
    items = torch.randint(1, N_ITEMS, (B, T), generator=g) * mask
    gaps = torch.randint(1, 90 * 86400, (B, T), generator=g)
    ts = (1_500_000_000 + gaps.cumsum(1)) * mask
    nxt = torch.randint(1, N_ITEMS, (B,), generator=g)
    query_ts = torch.where(mask[:, -1], ts[:, -1], torch.full((B,), 1_500_000_000)) + 3600
    b = SequenceBatch(
        items=items,
        categories=(items % 6) * mask,
        behaviors=torch.randint(1, 5, (B, T), generator=g) * mask,
        timestamps=ts,
        mask=mask,
        query_ts=query_ts,
        users=torch.arange(B),
    )
    if targets:
        b.targets = torch.cat([items[:, 1:], nxt[:, None]], dim=1) * mask  # next item at every real position
        b.target_behaviors = (b.targets > 0).long()
    return b


def model(name: str, seed: int = 0, **cfg):
    torch.manual_seed(seed)
    return build_model(name, {**SMALL, **cfg}, SIZES)


# -- SASRec / BERT4Rec: fused attention == reference ------------------------------------------


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_fused_and_reference_attention_give_the_same_scores(name, norm):
    side = {"use_category": True, "time": "gap_buckets"}
    ref = model(name, fused_attention=False, norm=norm, side=side).eval()
    fast = model(name, seed=1, fused_attention=True, norm=norm, side=side)
    fast.load_state_dict(ref.state_dict())  # same weights; only the attention path differs
    fast.eval()
    batch = make_batch([10, 6, 1, 0], targets=False)
    with torch.no_grad():
        a, b = ref.score(batch), fast.score(batch)
    assert torch.isneginf(a[:, 0]).all()
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    # Gradients of the training loss agree too.
    tb = make_batch([10, 6, 3, 2])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ref.training_loss(tb, FullSoftmaxCE(), g1).backward()
    fast.training_loss(tb, FullSoftmaxCE(), g2).backward()
    for (n, p1), p2 in zip(ref.named_parameters(), fast.parameters()):
        if p1.grad is not None:
            torch.testing.assert_close(p2.grad, p1.grad, atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_sasrec_last_position_path_equals_the_full_forward(norm):
    """Scoring and prefix training query only the latest position in the last block; the plain
    reference is the full forward's last row (scores, and the loss with its gradients)."""
    side = {"use_category": True, "time": "gap_buckets"}
    m = model("sasrec", norm=norm, side=side).eval()
    batch = make_batch([10, 6, 1, 0], targets=False)
    with torch.no_grad():
        full = m.query_state(batch, m(batch))  # (B, D) reference
        torch.testing.assert_close(m.encode(batch), full, atol=1e-5, rtol=1e-5)
        ref_scores = full @ m.output_embeddings().T
        ref_scores[:, 0] = float("-inf")
        torch.testing.assert_close(m.score(batch), ref_scores, atol=1e-5, rtol=1e-5)
    # Prefix samples: one target per row, in the last column -> the last-position path is taken.
    tb = make_batch([10, 6, 3, 2])
    tb.targets = torch.cat([torch.zeros_like(tb.targets[:, :-1]), tb.targets[:, -1:]], dim=1)
    loss_fast = m.training_loss(tb, FullSoftmaxCE())
    g_fast = torch.autograd.grad(loss_fast, list(m.parameters()), allow_unused=True)
    hidden = m(tb) + m.query_time(next_gap_buckets(tb, m.config.side.time_buckets))  # (B, T, D) full reference
    sel = tb.targets > 0
    loss_ref = FullSoftmaxCE()(hidden[sel], tb.targets[sel], m.output_embeddings(), m.output_bias())
    g_ref = torch.autograd.grad(loss_ref, list(m.parameters()), allow_unused=True)
    torch.testing.assert_close(loss_fast, loss_ref, atol=1e-5, rtol=1e-5)
    for (n, _), a, b in zip(m.named_parameters(), g_fast, g_ref):
        if b is None or a is None:
            assert a is None or not a.abs().sum(), n  # unused by the reference -> unused here too
            continue
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=n)


def test_sasrec_uses_the_query_gap_only_when_asked():
    batch = make_batch([10, 5])
    later = make_batch([10, 5])
    later.query_ts = later.query_ts + 200 * 86400  # the user comes back much later
    timed = model("sasrec", side={"time": "gap_buckets"}).eval()
    torch.nn.init.normal_(timed.query_time.weight)  # zero at init: give it something to say
    with torch.no_grad():
        assert torch.equal(timed(batch), timed(later))  # forward (per-event states) ignores query_ts
        assert not torch.allclose(timed.score(batch)[:, 1:], timed.score(later)[:, 1:])
    plain = model("sasrec").eval()
    with torch.no_grad():
        assert torch.equal(plain.score(batch), plain.score(later))


def test_next_gap_buckets_match_the_query_gap_at_the_last_position():
    batch = make_batch([10, 4, 1])
    nb = next_gap_buckets(batch, 32)
    assert torch.equal(nb[:, -1], query_gap_bucket(batch, 32))
    assert (nb[~batch.mask] == 0).all() and (nb[batch.mask] > 0).all()


# -- HSTU: time is used ----------------------------------------------------------------------


def test_hstu_output_changes_when_only_timestamps_change():
    batch = make_batch([10, 7, 3], targets=False)
    moved = make_batch([10, 7, 3], targets=False)
    # Same items, same order, same query gap; only the spacing of earlier events changes.
    moved.timestamps = torch.where(moved.mask, moved.timestamps - 30 * 86400, 0)
    moved.timestamps[:, -1] = batch.timestamps[:, -1]
    m = model("hstu").eval()
    with torch.no_grad():
        a, b = m(batch), m(moved)
    assert torch.isfinite(a).all()
    assert not torch.allclose(a[:, -1], b[:, -1], atol=1e-6), "HSTU ignored the timestamps"
    # Control: with the time bias off (and no time side info), timestamps do not matter.
    m0 = model("hstu", rab_time=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(m0(batch), m0(moved))


def test_hstu_pointwise_attention_is_causal_and_padding_free():
    m = model("hstu", attn_norm="max_len").eval()
    batch = make_batch([10, 6, 0], targets=False)
    with torch.no_grad():
        h = m(batch)
    assert (h[~batch.mask] == 0).all() and torch.isfinite(h).all()
    changed = make_batch([10, 6, 0], targets=False)
    changed.items[:, 7:] = (changed.items[:, 7:] % (N_ITEMS - 1)) + 1
    changed.timestamps[:, 7:] += 86400 * 400
    with torch.no_grad():
        torch.testing.assert_close(m(changed)[:, :7], h[:, :7])


# -- BERT4Rec: masking ------------------------------------------------------------------------


def test_bert4rec_masking_is_deterministic_and_near_mask_prob():
    m = model("bert4rec", mask_prob=0.2, last_mask_prob=0.0, max_len=50)
    batch = make_batch([50] * 200 + [30] * 200, T=50)
    seq = m.training_sequence(batch)
    a = m.mask_positions(seq, torch.Generator().manual_seed(5))
    b = m.mask_positions(seq, torch.Generator().manual_seed(5))
    c = m.mask_positions(seq, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not (a & ~seq.mask).any(), "padding was masked"
    share = a.sum().item() / seq.mask.sum().item()
    assert abs(share - 0.2) < 0.02, share


def test_bert4rec_last_position_masking_and_training_window():
    m = model("bert4rec", mask_prob=0.2, last_mask_prob=0.5)
    batch = make_batch([10] * 300 + [3] * 100)
    seq = m.training_sequence(batch)
    # The window ends with its own next event, at the query time.
    assert torch.equal(seq.items[:, -1], batch.targets[:, -1])
    assert torch.equal(seq.timestamps[:, -1], batch.query_ts)
    assert torch.equal(seq.items[:, :-1], batch.items[:, 1:])
    hidden = m.mask_positions(seq, torch.Generator().manual_seed(0))
    assert hidden.any(dim=1).all(), "every sequence hides at least one event"
    last_share = hidden[:, -1].float().mean().item()  # 0.2 + 0.8 * 0.5 = 0.6 (plus forced rows)
    assert 0.5 < last_share < 0.75, last_share
    masked = m.apply_mask(seq, hidden)
    assert (masked.items[hidden] == m.mask_id).all()
    assert (masked.categories[hidden] == 0).all() and (masked.behaviors[hidden] == 0).all()
    assert torch.equal(masked.timestamps, seq.timestamps)


def test_bert4rec_training_loss_is_deterministic_under_a_generator():
    batch = make_batch([10, 8, 5, 2])
    losses = []
    for _ in range(2):
        m = model("bert4rec", dropout=0.0, attn_dropout=0.0)
        losses.append(m.training_loss(batch, FullSoftmaxCE(), torch.Generator().manual_seed(11)))
    assert torch.isfinite(losses[0]) and torch.equal(losses[0], losses[1])


def test_bert4rec_scores_from_an_appended_mask_token():
    m = model("bert4rec", max_len=10).eval()
    batch = make_batch([10, 4, 0], T=10, targets=False)
    q = m.with_query_token(batch)
    assert q.length == 10  # window full: the oldest event was dropped
    assert torch.equal(q.items[:, :-1], batch.items[:, 1:])
    assert (q.items[:, -1] == m.mask_id).all() and q.mask[:, -1].all()
    assert torch.equal(q.timestamps[:, -1], batch.query_ts)
    short = make_batch([4], T=5, targets=False)
    assert m.with_query_token(short).length == 6  # room left: nothing dropped
    with torch.no_grad():
        s = m.score(batch)
    assert s.shape == (3, N_ITEMS) and torch.isneginf(s[:, 0]).all() and torch.isfinite(s[:, 1:]).all()
    # Bidirectional: a later event changes the state of an earlier position.
    changed = make_batch([10, 4, 0], T=10, targets=False)
    changed.items[:, -1] = (changed.items[:, -1] % (N_ITEMS - 1)) + 1
    with torch.no_grad():
        assert not torch.allclose(m(batch)[0, 2], m(changed)[0, 2])


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "hstu"])
def test_longer_history_than_max_len_still_scores(name):
    m = model(name, max_len=6).eval()
    batch = make_batch([10, 3], T=10, targets=False)
    with torch.no_grad():
        s = m.score(batch)
    assert torch.isfinite(s[:, 1:]).all()


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "hstu"])
def test_bad_head_count_fails_loudly(name):
    with pytest.raises(ValueError, match="divisible"):
        model(name, hidden=10, heads=3)


def test_sasrec_init_std_and_ffn_dropout_options():
    torch.manual_seed(0)
    big = DataSizes(n_items=4000, n_categories=6, item_category=tuple(i % 6 for i in range(4000)))
    m = build_model("sasrec", {**SMALL, "hidden": 64, "init_std": 0.02, "ffn_dropout": 0.0, "dropout": 0.5}, big)
    w = m.embed.item.weight.detach()
    assert torch.count_nonzero(w[0]) == 0  # padding row stays zero
    assert abs(w[1:].std().item() - 0.02) < 0.002
    for mod in m.blocks.modules():
        if isinstance(mod, torch.nn.Linear):
            assert abs(mod.weight.std().item() - 0.02) < 0.004 and torch.count_nonzero(mod.bias) == 0
    inner = [mod.p for blk in m.blocks for mod in blk.ffn.modules() if isinstance(mod, torch.nn.Dropout)]
    assert inner == [0.0, 0.0] and all(blk.drop.p == 0.5 for blk in m.blocks)
    default = build_model("sasrec", {**SMALL, "hidden": 64, "dropout": 0.5}, big)
    assert abs(default.embed.item.weight[1:].std().item() - 64**-0.5) < 0.01  # PyTorch / D^-0.5 defaults kept
    assert [mod.p for blk in default.blocks for mod in blk.ffn.modules() if isinstance(mod, torch.nn.Dropout)] == [0.5, 0.5]
