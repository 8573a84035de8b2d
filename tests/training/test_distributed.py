"""evorec.training.distributed outside a process group, and bad torchrun environments."""

from __future__ import annotations

import numpy as np
import pytest

from evorec.training import distributed as D


def test_single_process_helpers_are_identities(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert D.world_size() == 1 and D.rank() == 0 and D.launched_world() == 1
    with D.process_group_from_env("cpu") as joined:
        assert joined is False
    with D.rank_zero_first():
        pass
    assert D.any_rank(True) and not D.any_rank(False)
    np.testing.assert_array_equal(D.shard(5), np.arange(5))
    a = np.array([3, 1, 2])
    assert D.gather_concat(a) is a


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' in the environment is not an integer"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 in the environment: must be at least 1"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 but RANK is not set: launch with torchrun"),
    ],
)
def test_bad_torchrun_environment_is_named(monkeypatch, env, match):
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=match):
        with D.process_group_from_env("cpu"):
            pass
