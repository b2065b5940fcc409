"""Multi-process training with torch.distributed, as launched by ``torchrun``.

Every rank draws the same global sample order (the trainer seeds each epoch identically); the
samplers here hand each rank its share of it, so the ranks' batches together are exactly the
single-process batches, and the reductions give every rank the single-process metrics.
Without ``torchrun`` (``WORLD_SIZE`` unset or 1) everything here is the identity.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from utils.errors import ConfigError


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and results; the other ranks only train."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> ProcessGroup:
    """Join torchrun's process group: NCCL when the ranks train on GPUs, Gloo on CPUs.

    ``device_name`` is TRAINER.DEVICE; under torchrun it must be ``auto``, ``cuda`` or ``cpu``
    (rank N then uses ``cuda:LOCAL_RANK``). Returns the single-process group when ``WORLD_SIZE``
    is unset or 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup()
    if device_name not in ("auto", "cuda", "cpu"):
        raise ConfigError(
            f"TRAINER.DEVICE {device_name!r} names one device, but torchrun started "
            f"{world_size} processes: use auto or cuda (rank N uses cuda:LOCAL_RANK) or cpu"
        )
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return current_process_group()


def current_process_group() -> ProcessGroup:
    """The process group joined by :func:`init_distributed`, or the single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return ProcessGroup()
    return ProcessGroup(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    )


def close_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, group: ProcessGroup) -> torch.device:
    """``device``, except that each rank of a multi-process CUDA run gets its own GPU."""
    if group.distributed and device.type == "cuda":
        return torch.device("cuda", group.local_rank)
    return device


def per_rank_batch_size(batch_size: int, group: ProcessGroup) -> int:
    """Each rank's share of the global batch SOLVER.DATA_LOADER_BATCH_SIZE."""
    if batch_size % group.world_size:
        raise ConfigError(
            f"SOLVER.DATA_LOADER_BATCH_SIZE {batch_size} is the global batch and must be "
            f"divisible by the {group.world_size} torchrun processes"
        )
    return batch_size // group.world_size


def wrap_for_training(network: torch.nn.Module, device: torch.device, group: ProcessGroup):
    """The network as the training step calls it: DistributedDataParallel across the ranks
    (gradients averaged, which for a mean loss is the gradient of the global batch), with
    BatchNorm statistics synchronised on GPUs; the network itself for one process."""
    if not group.distributed:
        return network
    if device.type == "cuda":
        # In place: the converted layers keep the same Parameters, so the optimizer still fits.
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=[device.index])
    return torch.nn.parallel.DistributedDataParallel(network)


class ShardedSampler(Sampler):
    """Rank ``rank``'s share of ``sampler``'s sequence: of each consecutive global batch of
    ``batch_size`` draws, the ``rank``-th slice of ``batch_size / world_size`` draws."""

    def __init__(self, sampler: Sampler, batch_size: int, rank: int, world_size: int) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} not divisible by {world_size} ranks")
        self.sampler = sampler
        self.batch_size = batch_size
        self.rank = rank
        self.per_rank = batch_size // world_size

    def __iter__(self) -> Iterator:
        first = self.rank * self.per_rank
        for position, item in enumerate(self.sampler):
            if first <= position % self.batch_size < first + self.per_rank:
                yield item

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full * self.per_rank + min(max(rest - self.rank * self.per_rank, 0), self.per_rank)


class BatchShardSampler(Sampler[list[int]]):
    """The single-process batches of ``0 .. size-1`` in order, batch k on rank k % world_size:
    validation batches stay whole, so per-batch losses match one process's."""

    def __init__(self, size: int, batch_size: int, rank: int, world_size: int) -> None:
        self.batches = [
            list(range(start, min(start + batch_size, size)))
            for start in range(0, size, batch_size)
        ][rank::world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def sum_over_ranks(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (float64); ``values`` for one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    totals = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return totals.tolist()


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of one number over the ranks (each rank's train loss of equal-sized shares)."""
    total, count = sum_over_ranks([value, 1.0], device)
    return total / count


def reduce_validation(
    batch_losses: Sequence[float], errors: Sequence[np.ndarray], device: torch.device
) -> tuple[float, float]:
    """Mean batch loss and mean radial error over every rank's validation batches: on one
    process, ``mean(batch_losses)`` and the mean of all ``errors`` concatenated (NaN errors,
    of missing landmarks, left out)."""
    flat = np.concatenate([np.ravel(e) for e in errors]) if errors else np.zeros(0)
    flat = flat[np.isfinite(flat)]
    loss_sum, batches, error_sum, count = sum_over_ranks(
        [float(np.sum(batch_losses)), len(batch_losses), float(np.sum(flat)), flat.size], device
    )
    return (
        loss_sum / batches if batches else math.nan,
        error_sum / count if count else math.nan,
    )
