"""Every registered model passes the shared conformance suite (tests/models/conformance.py)."""

from __future__ import annotations

import pytest

from evorec.models.registry import known_models

import conformance as C

# name -> small config for the tests (sizes come from the data)
MODELS: dict[str, dict] = {
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
