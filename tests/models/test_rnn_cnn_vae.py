"""Focused tests of GRU4Rec, Caser, DIEN and Mult-VAE beyond the shared conformance suite.

Synthetic batches (no data files): each test builds the exact histories it needs.
"""

from __future__ import annotations

import conformance as C
import pytest
import torch

from evorec.models.base import DataSizes
from evorec.models.caser import caser_reference
from evorec.models.gru4rec import left_padded_gru, masked_gru_reference, masked_lstm_reference
from evorec.models.registry import build_model
from evorec.training.losses import FullSoftmaxCE
from evorec.types import SequenceBatch

N_ITEMS, N_CATS = 40, 6
SIZES = DataSizes(n_items=N_ITEMS, n_categories=N_CATS, item_category=tuple([0] + [1 + i % (N_CATS - 1) for i in range(N_ITEMS - 1)]))


def batch_of(histories: list[list[int]], T: int, with_targets: bool = False) -> SequenceBatch:
    """Left-padded batch of the given item histories (categories from SIZES, one day apart)."""
    B = len(histories)
    items = torch.zeros(B, T, dtype=torch.long)
    for b, h in enumerate(histories):
        if h:
            items[b, T - len(h) :] = torch.tensor(h)
    mask = items > 0
    cat = torch.tensor(SIZES.item_category)[items] * mask
    pos = torch.arange(T)[None].expand(B, T)
    ts = torch.where(mask, 1_600_000_000 + 86400 * pos, 0)
    targets = None
    if with_targets:  # next item at every position whose next event is in the window, plus a last target
        targets = torch.where(mask[:, :-1] & mask[:, 1:], items[:, 1:], 0)
        targets = torch.cat([targets, torch.randint(1, N_ITEMS, (B, 1))], dim=1) * mask
    return SequenceBatch(
        items=items,
        categories=cat,
        behaviors=mask.long(),  # all "view"
        timestamps=ts,
        mask=mask,
        query_ts=ts[:, -1] + 3600,
        users=torch.full((B,), -1),
        targets=targets,
        target_behaviors=(targets > 0).long() if targets is not None else None,
    )


HISTORIES = [[3, 7, 7, 12], [5], [], [9, 2, 30, 31, 4, 18, 22, 6], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]


def model(name: str, cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, cfg, SIZES).eval()


# -- GRU4Rec ------------------------------------------------------------------------------------


def test_gru4rec_left_padding_does_not_change_the_state():
    m = model("gru4rec", {"embed_dim": 16, "hidden_size": 12, "num_layers": 2, "side": {"use_category": True, "time": "gap_buckets"}})
    with torch.no_grad():
        short = m.score(batch_of(HISTORIES, 10))
        long = m.score(batch_of(HISTORIES, 25))
        # and the same as running the GRU on the history alone, with no padding at all
        alone = m.score(batch_of([HISTORIES[0]], len(HISTORIES[0])))
    assert torch.allclose(short[:, 1:], long[:, 1:], atol=1e-5)
    assert torch.allclose(short[:1, 1:], alone[:, 1:], atol=1e-5)


@pytest.mark.parametrize("cell, reference", [("GRU", masked_gru_reference), ("LSTM", masked_lstm_reference)])
def test_packed_rnn_matches_the_masked_reference(cell, reference):
    torch.manual_seed(0)
    rnn = getattr(torch.nn, cell)(8, 6, num_layers=2, batch_first=True).eval()
    lengths = torch.tensor([0, 1, 4, 9])
    mask = torch.arange(9)[None] >= 9 - lengths[:, None]  # (4, 9) left padding
    x = torch.randn(4, 9, 8) * mask[..., None]
    with torch.no_grad():
        fast = left_padded_gru(rnn, x, mask)
        ref = reference(rnn, x, mask)
    assert torch.allclose(fast, ref, atol=1e-5)
    assert fast[0].abs().max() == 0  # empty history: zero state


@pytest.mark.parametrize("check", C.CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_lstm_cell_passes_the_conformance_suite(check, tiny):
    seq, split = tiny
    check("gru4rec", {"cell": "lstm", "embed_dim": 32, "hidden_size": 32, "dropout": 0.1}, seq, split)


def test_lstm_cell_is_an_lstm_and_a_typo_is_refused():
    m = model("gru4rec", {"embed_dim": 16, "hidden_size": 12, "cell": "lstm"})
    assert isinstance(m.gru, torch.nn.LSTM)
    with pytest.raises(ValueError, match="cell"):
        model("gru4rec", {"embed_dim": 16, "hidden_size": 12, "cell": "rnn"})


# -- Caser --------------------------------------------------------------------------------------


def test_caser_is_causal_and_sees_only_the_last_L_events():
    L = 3
    m = model("caser", {"embed_dim": 16, "L": L, "n_h": 2, "n_v": 2})
    b = batch_of(HISTORIES, 12)
    t = 8
    later = batch_of(HISTORIES, 12)
    later.items[:, t + 1 :] = (later.items[:, t + 1 :] % (N_ITEMS - 1)) + 1
    earlier = batch_of(HISTORIES, 12)
    earlier.items[:, : t - L + 1] = (earlier.items[:, : t - L + 1] % (N_ITEMS - 1)) + 1  # outside the window at t
    with torch.no_grad():
        h, h_later, h_earlier = m(b), m(later), m(earlier)
    assert torch.allclose(h[:, : t + 1], h_later[:, : t + 1])  # no future leakage
    assert torch.allclose(h[:, t], h_earlier[:, t])  # only events t-L+1..t matter at t
    assert not torch.allclose(h[:, t + 1 :], h_later[:, t + 1 :])  # the later events are used


def test_caser_fast_path_matches_the_per_window_reference():
    for L in (1, 4):
        m = model("caser", {"embed_dim": 16, "L": L, "n_h": 3, "n_v": 2, "side": {"use_behavior": True}})
        b = batch_of(HISTORIES, 12)
        with torch.no_grad():
            assert torch.allclose(m(b), caser_reference(m, b), atol=1e-5)


# -- DIEN ---------------------------------------------------------------------------------------


def test_dien_reranking_changes_only_the_top_k():
    k = 8
    m = model("dien", {"embed_dim": 16, "head_hidden": 8, "rerank_k": k})
    b = batch_of(HISTORIES, 12)
    with torch.no_grad():
        stage1 = m.encode(b) @ m.output_embeddings().T  # (B, n_items)
        stage1[:, 0] = float("-inf")
        s = m.score(b)
        top1 = stage1.topk(k, dim=1).indices
        cand = m.score_candidates(b, top1)
    assert torch.isfinite(s[:, 1:]).all() and torch.isneginf(s[:, 0]).all()
    for row in range(b.size):
        top = set(top1[row].tolist())
        # the same k items stay on top ...
        assert set(s[row].topk(k).indices.tolist()) == top
        # ... with exactly the candidate-aware scores ...
        assert torch.allclose(s[row, top1[row]], cand[row], atol=1e-5)
        # ... and every other item keeps its stage-1 order below them.
        rest = torch.tensor([i for i in range(1, N_ITEMS) if i not in top])
        assert torch.equal(s[row, rest].argsort(), stage1[row, rest].argsort())
        assert s[row, rest].max() < s[row, top1[row]].min()
    # rerank_k = 0: stage 1 alone
    m.config.rerank_k = 0
    with torch.no_grad():
        assert torch.allclose(m.score(b), stage1)


def test_dien_candidates_are_attended_and_training_runs():
    m = model("dien", {"embed_dim": 16, "head_hidden": 8})
    b = batch_of(HISTORIES, 12)
    items = torch.tensor([[1, 2, 0]] * b.size)
    with torch.no_grad():
        s = m.score_candidates(b, items)
    assert s.shape == (b.size, 3) and torch.isneginf(s[:, 2]).all() and torch.isfinite(s[:, :2]).all()
    m.train()
    tb = batch_of([h for h in HISTORIES if h], 12, with_targets=True)
    loss = m.training_loss(tb, FullSoftmaxCE(), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    # the AUGRU, its attention and the head all get gradient through the candidate-aware term
    for p in (m.augru.weight_hh, m.att, m.head[0].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_dien_ctr_negatives_come_from_the_stage1_top():
    m = model("dien", {"embed_dim": 16, "head_hidden": 8, "rerank_k": 5, "ctr_negatives": 3})
    b = batch_of(HISTORIES, 12)
    with torch.no_grad():
        q = m(b)[:, -1]  # (B, D)
        s1 = q @ m.output_embeddings().T
    s1[:, 0] = float("-inf")
    target = s1.argmax(1)  # the best item: in the pool
    target[0] = s1[0, 1:].argmin() + 1  # ... except for row 0, whose target is outside the stage-1 top 5
    neg, keep = m.ctr_negative_items(q, target, torch.Generator().manual_seed(0))
    assert neg.shape == (b.size, 3)
    assert keep.tolist() == [False] + [True] * (b.size - 1)  # the head learns only where it will rerank
    for row in range(b.size):
        assert set(neg[row].tolist()) <= set(s1[row].topk(5).indices.tolist())


# -- Mult-VAE -----------------------------------------------------------------------------------


def test_multvae_eval_is_deterministic_and_order_free():
    m = model("multvae", {"hidden_dims": [32], "latent_dim": 8, "decay_half_life_days": 3.0})
    b = batch_of(HISTORIES, 12)
    with torch.no_grad():
        torch.manual_seed(1)
        a = m.score(b)
        torch.manual_seed(2)
        again = m.score(b)
        mu, _ = m.encode_bag(m.history_bag(b))
        via_states = m(b)[:, -1] @ m.output_embeddings().T + m.output_bias()
    assert torch.equal(a, again)  # no sampling (and no dropout) at eval
    assert torch.equal(m.encode(b), mu)
    assert torch.allclose(a[:, 1:], via_states[:, 1:], atol=1e-5)
    # multi-hot (no decay): a set model ignores the order of the history
    m2 = model("multvae", {"hidden_dims": [32], "latent_dim": 8})
    rev = batch_of([list(reversed(h)) for h in HISTORIES], 12)
    with torch.no_grad():
        assert torch.allclose(m2.score(b), m2.score(rev))


def test_multvae_training_samples_and_anneals():
    m = model("multvae", {"hidden_dims": [32], "latent_dim": 8, "total_anneal_steps": 4, "anneal_cap": 0.5})
    m.train()
    tb = batch_of([h for h in HISTORIES if h], 12, with_targets=True)
    betas = []
    for _ in range(6):
        betas.append(m.beta())
        m.training_loss(tb, None)
    assert betas == [0.0, 0.25, 0.5, 0.5, 0.5, 0.5]
    torch.manual_seed(0)
    l1 = m.training_loss(tb, None, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    l2 = m.training_loss(tb, None, torch.Generator().manual_seed(2))
    assert not torch.equal(l1, l2)  # z is sampled while training
