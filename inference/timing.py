"""Seconds and peak memory of one whole-image prediction (for the benchmark scripts)."""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence

import torch


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def time_whole_image_prediction(trainer, image_size: Sequence[int], repeats: int) -> dict:
    """Predict one random image ``repeats + 1`` times as ``trainer``'s inference does
    (``inference_forward`` + ``get_coords_from_heatmap``; the first run includes one-off
    set-up such as cuDNN's algorithm search and is not timed).

    Args:
        trainer: an initialised trainer (weights do not matter for speed and memory).
        image_size: (H, W) of the whole image after patch training; whole-image models use
            their ``image_size`` (SAMPLER.INPUT_SIZE) instead.
        repeats: timed predictions.
    Returns:
        ``size`` [H, W], ``seconds`` (median of the timed runs), ``peak_gib`` (CUDA:
        ``max_memory_allocated``; CPU: growth of the peak resident memory), ``finite``
        (all decoded coordinates finite).
    """
    size = list(trainer.sampling.image_size or image_size)
    image = torch.randn(1, trainer.sampling.input_channels, *size, device=trainer.device)
    original = torch.tensor([size])
    trainer.network.eval()
    cuda = trainer.device.type == "cuda"
    before = peak_rss_gib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            coords = trainer.get_coords_from_heatmap(trainer.inference_forward(image), original)[0]
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    timed = sorted(seconds[1:])
    return {
        "size": size,
        "seconds": timed[len(timed) // 2],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else peak_rss_gib() - before,
        "finite": bool(torch.isfinite(coords).all()),
    }
