"""Item attributes (category path nodes and brand) as side information: tokens, the matrix, the
models' buffer, checkpoints, and the pipeline on real files (ML-100K genres, S3-Rec Beauty)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conformance import MAX_LEN, first_eval_batch, sizes_of, train_steps

from evorec.data.attributes import attribute_matrix, tokens_of
from evorec.data.batches import TrainView
from evorec.models.base import DataSizes
from evorec.models.checkpoint import ModelCheckpoint, load_model
from evorec.models.registry import build_model

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ML100K = SHARED / "movielens_100k_recbole" / "ml-100k.inter"
BEAUTY = SHARED / "amazon_s3rec_seq" / "Beauty.txt"
SMALL = {"hidden": 32, "layers": 1, "heads": 1, "max_len": MAX_LEN}
ATTR = {**SMALL, "side": {"attributes": True}}


def test_tokens_are_path_prefixes_alternatives_and_brand():
    assert tokens_of("Beauty > Skin Care > Face|Beauty > Makeup", " Nivea ") == [
        "Beauty", "Beauty > Skin Care", "Beauty > Skin Care > Face", "Beauty > Makeup", "brand=Nivea",
    ]
    assert tokens_of("17|4|64|4", None) == ["17", "4", "64"]  # S3-Rec attribute ids; duplicates once
    assert tokens_of("Drama|Comedy", "") == ["Drama", "Comedy"]
    assert tokens_of(None, None) == [] and tokens_of(" | > ", "  ") == []
    assert tokens_of(None, None, " 7 ") == ["7"]  # a flat category id when there is no path
    assert tokens_of("Snacks", None, "7") == ["Snacks"]  # the path wins over the id


def test_attribute_matrix_numbers_tokens_by_first_appearance_and_cuts_wide_items():
    m, vocab, cut = attribute_matrix([["a", "b"], [], ["b", "c", "d"]])
    assert vocab == ["a", "b", "c", "d"] and cut == 0
    np.testing.assert_array_equal(m, [[0, 0, 0], [1, 2, 0], [0, 0, 0], [2, 3, 4]])  # row 0: padding
    m, vocab, cut = attribute_matrix([["a", "b", "c"], ["d"]], max_per_item=2)
    assert m.shape == (3, 2) and cut == 1 and vocab == ["a", "b", "d"]
    with pytest.raises(ValueError, match="max_per_item"):
        attribute_matrix([["a"]], max_per_item=0)


def test_attributes_need_sizes_and_a_matrix_of_the_right_shape():
    with pytest.raises(ValueError, match="n_attributes"):
        build_model("sasrec", ATTR, DataSizes(n_items=10, n_categories=2))
    plain = build_model("sasrec", SMALL, DataSizes(n_items=10, n_categories=2))
    with pytest.raises(ValueError, match="side.attributes"):
        plain.set_item_attributes(np.zeros((10, 3), np.int64))
    sizes = DataSizes(n_items=10, n_categories=2, n_attributes=5, attribute_width=3)
    m = build_model("sasrec", ATTR, sizes)
    with pytest.raises(ValueError, match=r"\(<= 10, 3\)"):
        m.set_item_attributes(np.zeros((10, 2), np.int64))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        m.set_item_attributes(np.full((10, 3), 5, np.int64))
    assert DataSizes.from_dict(sizes.to_dict()) == sizes
    assert DataSizes.from_dict({"n_items": 10, "n_categories": 2}).n_attributes == 0  # older checkpoints


def _random_attributes(n_items: int, n_tokens: int = 30, width: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, n_tokens, size=(n_items, width))
    a[rng.random((n_items, width)) < 0.3] = 0
    a[0] = 0
    return a


def test_sasrec_attributes_shape_inputs_and_outputs_and_survive_a_checkpoint(tiny):
    seq, split = tiny
    base = sizes_of(seq)
    attrs = _random_attributes(base.n_items)
    sizes = DataSizes(base.n_items, base.n_categories, base.n_behaviors, base.item_category, n_attributes=30, attribute_width=4)
    torch.manual_seed(0)
    model = build_model("sasrec", ATTR, sizes)
    model.set_item_attributes(attrs)
    train_steps(model, TrainView.from_split(seq, split), 3)
    assert "embed.item_attributes" in model.state_dict(), "the attribute matrix must be part of the checkpoint"
    assert all(p is not model.embed.item_attributes for p in model.parameters())
    # The output table is the item embedding plus the mean of the item's token vectors.
    with torch.no_grad():
        w = model.output_embeddings()
        i = int(np.flatnonzero((attrs > 0).any(1))[0])
        toks = attrs[i][attrs[i] > 0]
        expect = model.embed.item.weight[i] + model.embed.attributes.weight[torch.from_numpy(toks)].mean(0)
        torch.testing.assert_close(w[i], expect)
        assert torch.equal(w[0], torch.zeros_like(w[0])), "padding has no vector"
    batch = first_eval_batch(seq, split)
    with torch.no_grad():
        before = model.score(batch)
    buf = io.BytesIO()
    torch.save(ModelCheckpoint.of_model(model, {}).to_dict(), buf)
    buf.seek(0)
    again = load_model(torch.load(buf, weights_only=False))  # built from the file alone
    assert again.sizes.n_attributes == 30 and torch.equal(again.embed.item_attributes, torch.from_numpy(attrs))
    with torch.no_grad():
        assert torch.equal(before, again.score(batch))
        again.set_item_attributes(np.zeros_like(attrs))  # other attributes, other scores
        assert not torch.equal(before, again.score(batch))


@pytest.mark.parametrize("name", ["gru4rec", "caser", "bert4rec", "hstu", "dien"])
def test_every_event_embedding_model_takes_attributes(tiny, name):
    seq, split = tiny
    base = sizes_of(seq)
    sizes = DataSizes(base.n_items, base.n_categories, base.n_behaviors, base.item_category, n_attributes=30, attribute_width=4)
    torch.manual_seed(0)
    model = build_model(name, {"side": {"attributes": True}}, sizes)
    model.set_item_attributes(_random_attributes(base.n_items))
    losses = train_steps(model, TrainView.from_split(seq, split), 2)
    assert all(np.isfinite(losses))
    assert any(n.endswith("attributes.weight") and p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters())


def _experiment(path: Path, fmt: str, dataset: str, tmp_path: Path) -> dict:
    return {
        "data": {"path": str(path), "format": fmt, "dataset": dataset, "pseudonymize": False},
        "model": {"name": "sasrec", "config": ATTR},
        "train": {"epochs": 1, "batch_size": 256, "max_len": MAX_LEN, "progress": False, "tensorboard": False, "eval_users": 200},
        "cache_dir": str(tmp_path / "cache"),
    }


def test_pipeline_reads_ml100k_genres_as_attributes(tmp_path):
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import evaluate_run, train

    if not ML100K.exists():
        pytest.skip(f"real data not found: {ML100K}")
    cfg = load_experiment(None, base=_experiment(ML100K, "recbole", "ml100k", tmp_path))
    _, out = train(cfg, tmp_path / "run")
    model = load_model(out / "best.pt")
    a = model.embed.item_attributes
    assert model.sizes.n_attributes == 18 + 1  # the 18 genres of ML-100K's rated movies + "none"
    assert not a[0].any(), "padding has no attributes"
    assert int((~(a[1:] > 0).any(1)).sum()) == 2, "every item has a genre but items 267 and 1373 ('unknown')"
    assert 0 < evaluate_run(out)["metrics"]["HR@10"] <= 1


def test_beauty_attributes_are_the_s3rec_attribute_ids(tmp_path):
    """On S3-Rec Beauty the tokens of an item are exactly its ids in Beauty_item2attributes.json."""
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import experiment_data, item_attributes

    if not BEAUTY.exists():
        pytest.skip(f"real data not found: {BEAUTY}")
    cfg = load_experiment(None, base={**_experiment(BEAUTY, "s3rec", "beauty", tmp_path), "prepare": {"clean": {"dedup": False}, "split": {"kind": "loo"}}})
    data = experiment_data(cfg)
    seq, store = data.seq, data.store
    m = item_attributes(cfg, seq, store)
    ids = seq.items.ids.to_pylist()  # ids[i] has index i + 1
    raw = json.loads((BEAUTY.parent / "Beauty_item2attributes.json").read_text())
    assert m.shape[0] == seq.items.size and not m[0].any()
    from evorec.data.attributes import item_attribute_tokens

    tokens = item_attribute_tokens(store, "beauty", ids)
    for i in (0, 1, 100, len(ids) - 1):
        want = list(dict.fromkeys(str(a) for a in raw[str(ids[i])]))
        assert tokens[i] == want
        assert (m[i + 1] > 0).sum() == len(want)
    assert int(m.max()) == len({a for v in raw.values() for a in v})  # one token per distinct attribute id


def test_pipeline_refuses_attributes_when_no_item_has_any(tmp_path, monkeypatch):
    from evorec.data import attributes as attr_mod
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import experiment_data, item_attributes

    if not ML100K.exists():
        pytest.skip(f"real data not found: {ML100K}")
    cfg = load_experiment(None, base=_experiment(ML100K, "recbole", "ml100k", tmp_path))
    data = experiment_data(cfg)
    seq, store = data.seq, data.store
    monkeypatch.setattr(attr_mod, "item_attribute_tokens", lambda store, dataset, ids: [[] for _ in ids])
    with pytest.raises(ValueError, match=r"no item of ml100k has a category path or brand \(or a category\)"):
        item_attributes(cfg, seq, store)
