"""Data-parallel training under ``torchrun``: one process per device, rank 0 writes.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (plus the rendezvous address);
:func:`init_distributed` reads them, joins the process group (NCCL on CUDA, gloo on CPU)
and returns a :class:`DistributedContext`. Without those variables the same code runs as
a single process whose context makes every collective a no-op, so :func:`coordgate.training.fit`
has one code path for both.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, Subset

from coordgate.devices import resolve_device

__all__ = [
    "DistributedContext",
    "init_distributed",
    "launched_by_torchrun",
    "shard",
    "training_sampler",
    "wrap_model",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a (possibly one-process) data-parallel run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``values`` over all processes (a copy; input untouched)."""
        values = values.clone()
        if self.is_distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on at least one."""
        return bool(self.all_reduce_sum(torch.tensor([float(flag)], device=self.device)) > 0)

    def from_main(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every process (decisions that depend on rank 0's clock)."""
        return self.broadcast_float(float(flag)) > 0

    def broadcast_float(self, value: float) -> float:
        """Rank 0's ``value`` on every process (e.g. a duration that plans the run)."""
        if not self.is_distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-process run (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str | torch.device = "auto") -> DistributedContext:
    """The context of this process, joining the process group when run under ``torchrun``.

    Under ``torchrun`` each process takes ``cuda:LOCAL_RANK`` when CUDA is used. The group
    is created once per process (several ``fit`` calls share it) and destroyed at exit.
    """
    resolved = resolve_device(device)
    if not launched_by_torchrun():
        return DistributedContext(device=resolved)
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE > 1 but {', '.join(missing)} not set: "
            "launch distributed runs with torchrun"
        )
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return DistributedContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), device=resolved
    )


def training_sampler(
    dataset: Dataset, context: DistributedContext, seed: int
) -> DistributedSampler:
    """A shuffling sampler giving each process its share of ``dataset``.

    Used for one process too: its order depends only on ``seed`` and the epoch
    (``set_epoch``), which is what makes a resumed run repeat the uninterrupted one.
    """
    return DistributedSampler(
        dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed
    )


def shard(dataset: Dataset, context: DistributedContext) -> Dataset:
    """This process's items of ``dataset`` for evaluation: every ``world_size``-th one.

    Unlike ``DistributedSampler`` it pads nothing, so metrics summed over processes count
    each item exactly once.
    """
    if not context.is_distributed:
        return dataset
    return Subset(dataset, range(context.rank, len(dataset), context.world_size))


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """``model`` in DistributedDataParallel when distributed, else unchanged."""
    if not context.is_distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
