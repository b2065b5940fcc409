"""Coarse-to-fine inference: full-resolution windows evaluated only around coarse candidates.

A network trained on patches sees only a patch's worth of context: where two structures look
alike within a patch (left and right corners, similar vertebrae), a stitched heatmap has peaks at
both and the decoder may take the wrong one. A model trained on the whole, resized image knows
which is which but not exactly where. Here the coarse model's prediction of each landmark picks
the window that the patch model evaluates for that landmark: one window per landmark (K forward
passes instead of every window of the image), and the decoder can only find the maximum inside
it, so the result keeps the patch model's precision and the coarse model's global context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from transforms.stitching import (
    crop_to_image,
    image_sized_zeros,
    map_tensors,
    output_stride,
    pad_to_fit,
    run_windows,
    tensor_leaves,
    window_cells,
)


def candidate_window_corners(
    candidates: np.ndarray, image_size: Sequence[int], window: Sequence[int], multiple: int
) -> np.ndarray:
    """Top-left (y, x) of a ``window`` (h, w) centred on each candidate, inside the image.

    Args:
        candidates: (K, 2) x,y in pixels of the (padded) image.
        image_size: (H, W) of the padded image, at least ``window``.
        window: (h, w), multiples of ``multiple``.
        multiple: corners are rounded to multiples of it (the network's output grid).
    Returns:
        (K, 2) int64 y, x.
    """
    centre = np.asarray(candidates, dtype=np.float64)[:, ::-1]  # y, x
    half = np.asarray(window, dtype=np.float64) / 2
    corner = np.round((centre + 0.5 - half) / multiple) * multiple
    high = np.asarray(image_size) - np.asarray(window)
    return np.clip(corner, 0, high).astype(np.int64)


def refine_around_candidates(
    forward: Callable[[torch.Tensor], Any],
    image: torch.Tensor,
    candidates: np.ndarray,
    window_size: Sequence[int],
    batch_size: int,
    multiple: int = 1,
) -> Any:
    """Whole-image outputs in which landmark k is evaluated only in the window around its
    candidate; outside it every cell holds that window's minimum, so a maximum lies inside.

    Args:
        forward: maps (N, C, h, w) windows to outputs of (N, K, ..., h / f, w / f) tensors.
        image: (1, C, H, W).
        candidates: (K, 2) x,y in pixels of ``image``.
        window_size: (h, w), a multiple of ``multiple``.
        batch_size: windows per call of ``forward``.
    Returns:
        the output's structure, each tensor (1, K, ..., ceil(H / f), ceil(W / f)).
    """
    padded = pad_to_fit(image, multiple, window_size)
    height, width = padded.shape[-2:]
    corners = candidate_window_corners(candidates, (height, width), window_size, multiple)
    full: list[torch.Tensor] | None = None
    structure = None
    for first, chunk, output in run_windows(forward, padded, corners, window_size, batch_size):
        leaves = tensor_leaves(output)
        if full is None:
            structure = output
            full = [
                image_sized_zeros(leaf, output_stride(window_size[0], leaf), (height, width))
                for leaf in leaves
            ]
        for leaf, target in zip(leaves, full, strict=True):
            stride = height // target.shape[-2]
            for n, corner in enumerate(chunk):
                k = first + n
                values = leaf[n, k].float()
                target[0, k] = values.amin(dim=(-2, -1), keepdim=True)
                target[0, k][window_cells(corner, stride, leaf.shape[-2:])] = values
    results = iter(full)
    output = map_tensors(lambda _: next(results), structure)
    return crop_to_image(output, (height, width), image.shape[-2:])
