"""The ensemble model: its config refuses what cannot work, it scores the weighted log-softmax
blend of its members, trains them on the mean of their losses, and runs through the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conformance import MAX_LEN, first_eval_batch, sizes_of

from evorec.data.batches import TrainView, training_batches
from evorec.models.registry import build_model, make_config
from evorec.training.losses import FullSoftmaxCE

ML100K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "movielens_100k_recbole" / "ml-100k.inter"
SAS = {"name": "sasrec", "config": {"hidden": 32, "layers": 1, "heads": 2, "max_len": MAX_LEN}}
GRU = {"name": "gru4rec", "config": {"embed_dim": 32, "hidden_size": 32}}


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"members": []}, "at least 1 item"),
        ({"members": [{"name": "pop"}, {"name": "itemknn"}]}, "at least one neural member"),
        ({"members": [SAS, {"name": "ensemble", "config": {"members": [SAS]}}]}, r"members\[1\]: an ensemble cannot contain an ensemble"),
        ({"members": [{"name": "sasrec", "config": {"hiden": 32}}]}, "(?s)bad config for model 'sasrec'.*hiden"),
        ({"members": [{"name": "nope"}]}, "unknown model 'nope'"),
        ({"members": [SAS, GRU], "weights": [1.0]}, "weights has 1 values for 2 members"),
        ({"members": [SAS, GRU], "weights": [1.0, -1.0]}, "weights must be >= 0"),
        ({"members": [SAS, GRU], "weights": [0.0, 0.0]}, "not all 0"),
    ],
)
def test_bad_ensemble_configs_name_the_problem(config, match):
    with pytest.raises((ValueError, KeyError), match=match):
        make_config("ensemble", config)


def test_ensemble_scores_the_weighted_log_softmax_blend_of_its_members(tiny):
    seq, split = tiny
    torch.manual_seed(0)
    model = build_model("ensemble", {"members": [SAS, SAS, GRU], "weights": [1.0, 1.0, 2.0]}, sizes_of(seq)).eval()
    a, b, c = model.members
    assert not torch.equal(a.embed.item.weight, b.embed.item.weight), "members start from different weights"
    batch = first_eval_batch(seq, split)
    with torch.no_grad():
        got = model.score(batch)
        expect = sum(w * torch.log_softmax(m.score(batch)[:, 1:], -1) for w, m in zip((0.25, 0.25, 0.5), (a, b, c)))
    assert got.shape == (len(batch.items), seq.items.size) and torch.isinf(got[:, 0]).all()
    torch.testing.assert_close(got[:, 1:], expect, rtol=1e-5, atol=1e-5)
    assert model.encode(batch).shape == (len(batch.items), 32 + 32 + 32)


def test_ensemble_loss_is_the_mean_of_its_members_losses_and_trains_each(tiny):
    seq, split = tiny
    torch.manual_seed(0)
    model = build_model("ensemble", {"members": [SAS, GRU]}, sizes_of(seq)).eval()  # eval: no dropout
    batch = next(training_batches(TrainView.from_split(seq, split), MAX_LEN, 32, __import__("numpy").random.default_rng(0)))
    loss_fn = FullSoftmaxCE()
    loss = model.training_loss(batch, loss_fn)
    parts = [m.training_loss(batch, loss_fn) for m in model.members]
    torch.testing.assert_close(loss, (parts[0] + parts[1]) / 2)
    loss.backward()
    for m in model.members:
        assert all(p.grad is not None for p in m.parameters() if p.requires_grad), "every member gets gradients"


def test_count_members_are_fitted_before_training_blended_and_left_out_of_the_loss(tiny):
    seq, split = tiny
    torch.manual_seed(0)
    knn = {"name": "itemknn", "config": {"top_k": 20}}
    model = build_model("ensemble", {"members": [SAS, knn], "weights": [1.0, 3.0]}, sizes_of(seq))
    view = TrainView.from_split(seq, split)
    model.prepare(view)  # what the trainer calls before the first step
    alone = build_model("itemknn", knn["config"], sizes_of(seq))
    alone.fit(view)
    assert all(torch.equal(x, y) for x, y in zip(model.members[1].buffers(), alone.buffers()))
    batch = next(training_batches(view, MAX_LEN, 32, __import__("numpy").random.default_rng(0)))
    model.eval()
    loss_fn = FullSoftmaxCE()
    torch.testing.assert_close(model.training_loss(batch, loss_fn), model.members[0].training_loss(batch, loss_fn))
    eb = first_eval_batch(seq, split)
    with torch.no_grad():
        got = model.score(eb)
        expect = 0.25 * torch.log_softmax(model.members[0].score(eb)[:, 1:], -1) + 0.75 * torch.log_softmax(alone.score(eb)[:, 1:], -1)
    torch.testing.assert_close(got[:, 1:], expect, rtol=1e-5, atol=1e-5)
    # the log-softmax of a count member only shifts each row: it ranks as 0.75 x its raw scores
    diff = got[:, 1:] - 0.25 * torch.log_softmax(model.members[0].score(eb)[:, 1:], -1) - 0.75 * alone.score(eb)[:, 1:]
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff), rtol=1e-4, atol=1e-4)


def test_pipeline_trains_an_ensemble_with_attribute_members(tmp_path):
    """side.attributes inside a member is seen by the pipeline (the matrix is built and handed to
    the member that asks), a count-based member is fitted by the trainer, and the checkpoint
    evaluates."""
    from evorec.experiments.config import load_experiment
    from evorec.experiments.training import evaluate_run, train
    from evorec.models.checkpoint import load_model

    if not ML100K.exists():
        pytest.skip(f"real data not found: {ML100K}")
    attr = {"name": "sasrec", "config": {**SAS["config"], "side": {"attributes": True}}}
    cfg = load_experiment(
        None,
        base={
            "data": {"path": str(ML100K), "format": "recbole", "dataset": "ml100k", "pseudonymize": False},
            "model": {"name": "ensemble", "config": {"members": [attr, SAS, {"name": "markov"}]}},
            "train": {"epochs": 1, "batch_size": 256, "max_len": MAX_LEN, "progress": False, "tensorboard": False, "eval_users": 200},
            "cache_dir": str(tmp_path / "cache"),
        },
    )
    _, out = train(cfg, tmp_path / "run")
    model = load_model(out / "best.pt")
    assert (model.members[0].embed.item_attributes > 0).any(), "the attribute member got its matrix"
    assert model.members[1].embed.item_attributes is None
    assert bool(model.members[2].fitted), "the count member was fitted before training and saved so"
    assert 0 < evaluate_run(out)["metrics"]["HR@10"] <= 1
