"""The shared conformance suite: every model passes it. Adding a model = adding its name (and a
small config) to MODELS in test_conformance.py.

Checks: config round-trip; checkpoint save/load gives identical scores; empty and one-event
histories; unknown item; no future leakage for causal models; loss falls on a tiny log (or
``fit`` learns something, for count-based models); deterministic under a seed.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import yaml

from evorec.data.batches import TrainView, eval_batches, eval_set, training_batches
from evorec.models.base import DataSizes
from evorec.models.registry import build_model, get_model
from evorec.training.losses import FullSoftmaxCE

MAX_LEN = 20


def sizes_of(seq) -> DataSizes:
    cat = np.zeros(seq.items.size, dtype=np.int64)
    cat[np.asarray(seq.item)] = np.asarray(seq.category)
    return DataSizes(n_items=seq.items.size, n_categories=seq.categories.size, item_category=tuple(int(c) for c in cat))


def make(name: str, cfg: dict, seq, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, cfg, sizes_of(seq))


def first_eval_batch(seq, split, n: int = 16):
    es = eval_set(seq, split, "test")
    return next(iter(eval_batches(seq, es, MAX_LEN, n)))[1]


def fitted(name: str, cfg: dict, seq, split, seed: int = 0, steps: int = 0):
    model = make(name, cfg, seq, seed)
    view = TrainView.from_split(seq, split)
    if not model.trainable:
        model.fit(view)
    else:
        model.prepare(view)  # as the trainer does before the first step (count-based members)
        if steps:
            train_steps(model, view, steps, seed)
    return model


def train_steps(model, view, steps: int, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = FullSoftmaxCE()
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    batches = training_batches(view, MAX_LEN, 64, rng)
    for _ in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = training_batches(view, MAX_LEN, 64, rng)
            batch = next(batches)
        loss = model.training_loss(batch, loss_fn, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    model.eval()
    return losses


def check_config_roundtrip(name: str, cfg: dict) -> None:
    _, cfg_cls = get_model(name)
    c = cfg_cls(**cfg)
    again = cfg_cls(**yaml.safe_load(yaml.safe_dump(c.model_dump(mode="json"))))
    assert again == c
    try:
        cfg_cls(**cfg, definitely_not_a_field=1)
    except Exception as exc:  # noqa: BLE001 - any validation error type, as long as it names the field
        assert "definitely_not_a_field" in str(exc)
    else:
        raise AssertionError("unknown config key was accepted")


def check_checkpoint(name: str, cfg: dict, seq, split) -> None:
    model = fitted(name, cfg, seq, split, steps=3)
    model.eval()
    batch = first_eval_batch(seq, split)
    with torch.no_grad():
        before = model.score(batch)
    buf = io.BytesIO()
    torch.save({"state": model.state_dict(), "config": model.config.model_dump(mode="json")}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    again = make(name, ck["config"], seq, seed=123)  # different init: the weights must come from the file
    again.load_state_dict(ck["state"])
    again.eval()
    with torch.no_grad():
        after = again.score(batch)
    assert torch.equal(before, after)


def check_short_histories(name: str, cfg: dict, seq, split) -> None:
    model = fitted(name, cfg, seq, split, steps=1)
    model.eval()
    batch = first_eval_batch(seq, split, n=4)
    # Row 0: empty history; row 1: one event; row 2: unknown item (index 0) inside the history.
    batch.mask[0] = False
    for t in (batch.items, batch.categories, batch.behaviors, batch.timestamps):
        t[0] = 0
    batch.mask[1, :-1] = False
    for t in (batch.items, batch.categories, batch.behaviors, batch.timestamps):
        t[1, :-1] = 0
    batch.items[2, -3] = 0
    with torch.no_grad():
        s = model.score(batch)
    assert s.shape == (4, seq.items.size)
    assert torch.isneginf(s[:, 0]).all(), "padding item must never be recommended"
    assert torch.isfinite(s[:, 1:]).all(), "empty / one-event / unknown-item histories must score"


def check_no_future_leakage(name: str, cfg: dict, seq, split) -> None:
    cls, _ = get_model(name)
    if not cls.causal or not hasattr(cls, "forward") or not cls.trainable:
        return
    model = fitted(name, cfg, seq, split, steps=2)
    model.eval()
    batch = first_eval_batch(seq, split, n=8)
    t = batch.length - 4
    changed = batch.to("cpu")
    changed.items = batch.items.clone()
    changed.items[:, t + 1 :] = (changed.items[:, t + 1 :] % (seq.items.size - 1)) + 1
    changed.timestamps = batch.timestamps.clone()
    changed.timestamps[:, t + 1 :] += 86400 * 30
    with torch.no_grad():
        a = model(batch)[:, : t + 1]
        b = model(changed)[:, : t + 1]
    assert torch.allclose(a, b, atol=1e-5), "output at t changed when events after t changed"


def check_learns(name: str, cfg: dict, seq, split) -> None:
    cls, _ = get_model(name)
    if not cls.trainable:
        model = fitted(name, cfg, seq, split)
        batch = first_eval_batch(seq, split, n=64)
        with torch.no_grad():
            s = model.score(batch)[:, 1:]
        assert (s.max(1).values > s.min(1).values).any(), "fit() left every item with the same score"
        return
    model = make(name, cfg, seq)
    losses = train_steps(model, TrainView.from_split(seq, split), 40)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first * 0.97, f"loss did not fall: {first:.4f} -> {last:.4f}"


def check_deterministic(name: str, cfg: dict, seq, split) -> None:
    a = fitted(name, cfg, seq, split, seed=7, steps=3)
    b = fitted(name, cfg, seq, split, seed=7, steps=3)
    batch = first_eval_batch(seq, split)
    with torch.no_grad():
        assert torch.equal(a.eval().score(batch), b.eval().score(batch))


CHECKS = (
    check_checkpoint,
    check_short_histories,
    check_no_future_leakage,
    check_learns,
    check_deterministic,
)
