"""Data-parallel training under ``torchrun``: joining the process group, and the few collectives
the trainer needs (sharded validation, agreeing on when to stop).

``torchrun --nproc_per_node 2 -m evorec train --config ... --set train.batch_size=128`` runs two
processes; each takes every second batch, gradients are averaged by DistributedDataParallel, so
two processes with batches of 128 take the steps of one process with batches of 256. On a CPU each
process runs one thread (torchrun's default ``OMP_NUM_THREADS=1``): the small kernels of a
sequential recommender use two cores better as two processes than as one process with two threads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from evorec.errors import InputError

log = logging.getLogger(__name__)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched_world() -> int:
    """Processes torchrun launched (``WORLD_SIZE``), 1 outside torchrun."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        n = int(raw)
    except ValueError:
        raise InputError(f"WORLD_SIZE={raw!r} in the environment is not an integer") from None
    if n < 1:
        raise InputError(f"WORLD_SIZE={n} in the environment: must be at least 1")
    return n


@contextmanager
def process_group_from_env(device: str = "auto", timeout_s: float = 1800.0) -> Iterator[bool]:
    """Joins the process group torchrun describes in the environment (``WORLD_SIZE`` > 1, with
    ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) for the duration, and leaves it afterwards; yields
    whether it did. Does nothing outside torchrun or when a group is already initialised (a caller
    that set one up itself, as the tests do). Backend: NCCL when the processes train on CUDA, gloo
    on a CPU."""
    if launched_world() <= 1 or not dist.is_available() or dist.is_initialized():
        yield False
        return
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise InputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {key} is not set: launch with torchrun")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    log.info("joined a process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), dist.get_backend())
    try:
        yield True
        dist.barrier()  # every rank done before any tears the group down (a gloo peer torn down mid-exit aborts)
    finally:
        dist.destroy_process_group()


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Process 0 runs the block first (e.g. ingesting and preparing a data cache that the others
    then only read); the others wait for it, then run it. No-op outside a process group."""
    if world_size() > 1 and rank() != 0:
        dist.barrier()
    yield
    if world_size() > 1 and rank() == 0:
        dist.barrier()


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every process when ``flag`` is true on any (one small all-reduce)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shard(n: int) -> np.ndarray:
    """Row indices of ``n`` rows this process takes: contiguous, near-equal blocks by rank."""
    bounds = np.linspace(0, n, world_size() + 1).round().astype(np.int64)
    return np.arange(bounds[rank()], bounds[rank() + 1])


def gather_concat(a: np.ndarray) -> np.ndarray:
    """Every process's 1-d array, concatenated in rank order, on every process."""
    if world_size() == 1:
        return a
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, np.ascontiguousarray(a))
    return np.concatenate(parts)
