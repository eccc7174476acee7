"""Distributed data parallel training: process group set-up and deterministic sharding.

A run started by ``torchrun`` (environment ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) initialises a process group (``gloo`` on CPU,
``nccl`` on CUDA); a plain ``python`` run is a world of one and touches nothing.

Data order is a pure function of ``(seed, epoch)``: every rank draws the same
permutation of the training set, cuts the same global batch out of it, and keeps
every ``world_size``-th sample of that batch. The union of the ranks' shards is
exactly the batch a single process would see, so with equal shard sizes the averaged
DDP gradient is the single-process gradient (up to floating-point summation order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: decorrelates consecutive epochs


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly trivial) process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, plots and writes checkpoints."""
        return self.rank == 0

    def all_reduce_sum(self, values: Tensor) -> Tensor:
        """Sum ``values`` over ranks (in place on a copy); identity for one process."""
        if not self.enabled:
            return values
        out = values.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled inside the process group)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from e


def setup_distributed(device: str) -> tuple[DistContext, torch.device]:
    """Initialise the process group if started under ``torchrun``; pick this rank's device.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (already validated). With CUDA each rank uses
            ``cuda:LOCAL_RANK``.

    Returns:
        The context and the ``torch.device`` this process trains on.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if device == "cuda":
        torch_device = torch.device("cuda", local_rank if world_size > 1 else
                                    torch.cuda.current_device())
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device(device)
    if world_size <= 1:
        return DistContext(), torch_device
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://",
                                  "rank": rank, "world_size": world_size}
        if backend == "nccl":
            kwargs["device_id"] = torch_device
        dist.init_process_group(**kwargs)
        owns = True
    ctx = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                      local_rank=local_rank, backend=dist.get_backend(), owns_group=owns)
    return ctx, torch_device


def teardown_distributed(ctx: DistContext) -> None:
    """Destroy the process group if ``setup_distributed`` created it.

    Every rank first waits at a barrier: destroying a gloo group while a peer is still
    communicating aborts the process ("terminate called without an active exception").
    """
    if ctx.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``."""
    g = torch.Generator()
    g.manual_seed((seed * _SEED_MIX + epoch) % (2**63 - 1))
    return torch.randperm(n, generator=g)


class BatchPlan:
    """Which training samples iteration ``i`` uses, on this rank; a pure function of
    ``(seed, i)``.

    Each epoch is a fresh permutation cut into ``n // batch_size`` global batches (the
    remainder is dropped, as with ``drop_last=True``); rank ``r`` keeps positions
    ``r, r + W, r + 2W, ...`` of the global batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, ctx: DistContext) -> None:
        if n < 1:
            raise ValueError(f"the training set is empty (n={n})")
        self.n = n
        self.batch_size = min(batch_size, n)
        if self.batch_size % ctx.world_size:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by the number of "
                             f"processes ({ctx.world_size}) so that every rank gets an equal "
                             f"share of each batch")
        self.seed = seed
        self.ctx = ctx
        self.batches_per_epoch = n // self.batch_size
        self._epoch: int | None = None
        self._perm: Tensor | None = None

    def epoch_of(self, iteration: int) -> int:
        """The epoch (0-based) iteration ``iteration`` (0-based) belongs to."""
        return iteration // self.batches_per_epoch

    def indices(self, iteration: int) -> Tensor:
        """This rank's sample indices for 0-based iteration ``iteration``."""
        epoch, b = divmod(iteration, self.batches_per_epoch)
        if epoch != self._epoch:
            self._perm = epoch_permutation(self.n, self.seed, epoch)
            self._epoch = epoch
        assert self._perm is not None
        batch = self._perm[b * self.batch_size:(b + 1) * self.batch_size]
        return batch[self.ctx.rank::self.ctx.world_size]


def shard_range(n: int, ctx: DistContext) -> Tensor:
    """This rank's share of ``range(n)`` for evaluation: every ``world_size``-th index."""
    return torch.arange(ctx.rank, n, ctx.world_size)
