"""Measuring the batch size that fits a CUDA device (SOLVER.DATA_LOADER_BATCH_SIZE "auto").

A throw-away trainer, built from the resolved config, runs its own ``train_step`` (forward,
loss, backward and optimizer step, with AMP when SOLVER.AUTO_MIXED_PRECISION is on) on random
batches, so the measurement is the real training step; its weights are discarded afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch
from yacs.config import CfgNode


def synthetic_batch(
    batch_size: int, input_size: tuple[int, int], num_landmarks: int, channels: int = 1
) -> dict[str, torch.Tensor]:
    """A random training batch: ``image`` (B, channels, H, W), ``coords`` (B, K, 2) x,y inside the
    input, ``visible`` (B, K) ones, ``patch_corner`` (B, 2) zeros."""
    height, width = input_size
    coords = torch.rand(batch_size, num_landmarks, 2) * torch.tensor([width - 1, height - 1])
    return {
        "image": torch.randn(batch_size, channels, height, width),
        "coords": coords,
        "visible": torch.ones(batch_size, num_landmarks),
        "patch_corner": torch.zeros(batch_size, 2),
    }


def train_step_probe(trainer, device: torch.device) -> Callable[[int], int]:
    """probe(batch size) -> peak CUDA memory in bytes of one ``trainer.train_step``; raises
    torch.cuda.OutOfMemoryError when it does not fit (after freeing what the step held)."""

    def probe(batch_size: int) -> int:
        sampling = trainer.sampling
        batch = synthetic_batch(
            batch_size, sampling.network_input_size, trainer.num_landmarks, sampling.input_channels
        )
        trainer.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            trainer.train_step(batch)
            torch.cuda.synchronize(device)
        except torch.cuda.OutOfMemoryError:
            trainer.optimizer.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.empty_cache()
            raise
        return int(torch.cuda.max_memory_allocated(device))

    return probe


def probe_config(cfg: CfgNode, device: torch.device) -> CfgNode:
    """A frozen copy of ``cfg`` (every other value resolved) that trains on ``device``."""
    probe_cfg = cfg.clone()
    probe_cfg.defrost()  # a clone of a frozen config is frozen too
    probe_cfg.TRAINER.DEVICE = str(device)
    probe_cfg.freeze()
    return probe_cfg


def cuda_batch_probe(
    trainer, num_landmarks: int, device: torch.device
) -> tuple[Callable[[int], int], int]:
    """(probe, memory limit): ``trainer`` (built from :func:`probe_config`) initialised on
    ``device``, and the memory free on the device now plus what this process already holds."""
    trainer.initialize(num_landmarks)
    trainer.network.train()
    torch.cuda.synchronize(device)
    free, _total = torch.cuda.mem_get_info(device)
    limit = free + torch.cuda.memory_reserved(device)
    return train_step_probe(trainer, device), int(limit)
