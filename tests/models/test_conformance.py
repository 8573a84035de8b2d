"""Every registered model passes the shared conformance suite (tests/models/conformance.py)."""

from __future__ import annotations

import conformance as C
import pytest

from evorec.models.registry import known_models

# name -> small config for the tests (sizes come from the data)
MODELS: dict[str, dict] = {
    "gru4rec": {"embed_dim": 32, "hidden_size": 32, "dropout": 0.1},
    "caser": {"embed_dim": 32, "L": 3, "n_h": 4, "n_v": 2, "dropout": 0.2},
    "dien": {"embed_dim": 32, "head_hidden": 16, "rerank_k": 20},
    "multvae": {"hidden_dims": [64], "latent_dim": 16, "dropout": 0.2, "total_anneal_steps": 100},
    "pop": {"half_life_days": 90.0, "behavior_weights": {"buy": 2.0}},
    "itemknn": {"window": 3, "top_k": 20, "history": 10},
    "markov": {"top_k": 20, "order": 2},
    "sasrec": {"hidden": 32, "layers": 1, "heads": 2, "max_len": 20, "side": {"use_category": True, "time": "gap_buckets"}},
    "bert4rec": {"hidden": 32, "layers": 1, "heads": 2, "max_len": 20, "side": {"time": "gap_buckets"}},
    "hstu": {"hidden": 32, "layers": 1, "heads": 2, "max_len": 20, "side": {"use_behavior": True}},
    "ptopfreq": {},
    "tifuknn": {"k": 20, "alpha": 0.5},
    "repeat": {"cuts": 2},
    "trex": {"explore": {"name": "gru4rec", "config": {"embed_dim": 32, "hidden_size": 32, "dropout": 0.1}}, "threshold": 0.1},
    "ensemble": {
        "members": [
            {"name": "sasrec", "config": {"hidden": 32, "layers": 1, "heads": 2, "max_len": 20}},
            {"name": "gru4rec", "config": {"embed_dim": 32, "hidden_size": 32, "dropout": 0.1}},
        ],
        "weights": [1.0, 0.5],
    },
}


def test_every_registered_model_is_covered():
    missing = sorted(set(known_models()) - set(MODELS))
    assert not missing, f"models without conformance tests: {missing}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_roundtrip(name):
    C.check_config_roundtrip(name, MODELS[name])


@pytest.mark.parametrize("check", C.CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_conformance(name, check, tiny):
    seq, split = tiny
    check(name, MODELS[name], seq, split)
