"""Running a network on an image of any size: whole (fully convolutional) or window by window.

Outputs are nested lists, tuples or dicts of (B, C, h, w) tensors, each at its own stride
``f = input side / output side`` (1 for a U-Net's finest heatmap, 2^N for PHD-Net's patch grid).
``patchify_and_stitch`` slides a window over the image, runs the windows in batches and blends
their outputs with a Gaussian weight centred on each window (nnU-Net's choice: a window's borders
see the least context, so they count least); memory holds the image, the stitched outputs and one
batch of windows, whatever the image's area.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from utils.nested import map_tensors, tensor_leaves


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """First pixels of windows of ``window`` pixels, ``stride`` apart, covering ``length`` >=
    ``window`` pixels; the last window ends at the last pixel."""
    if length < window:
        raise ValueError(f"length {length} is smaller than the window {window}")
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


def gaussian_importance(size: Sequence[int], device=None) -> torch.Tensor:
    """(h, w) weights, 1 at the centre, sigma = side / 8, at least 1e-3 (every pixel counts)."""
    axes = []
    for side in size:
        position = torch.arange(int(side), device=device, dtype=torch.float32)
        sigma = max(int(side) / 8, 0.5)
        axes.append(torch.exp(-(((position - (int(side) - 1) / 2) / sigma) ** 2) / 2))
    return (axes[0][:, None] * axes[1][None, :]).clamp_min(1e-3)


def pad_to_fit(images: torch.Tensor, multiple: int, min_size: Sequence[int] = (0, 0)):
    """Pad (B, C, H, W) images with zeros at the bottom and right to sides divisible by
    ``multiple`` and at least ``min_size``; returns the padded images."""
    height, width = images.shape[-2:]
    padded_h = max(math.ceil(height / multiple) * multiple, int(min_size[0]))
    padded_w = max(math.ceil(width / multiple) * multiple, int(min_size[1]))
    return F.pad(images, (0, padded_w - width, 0, padded_h - height))


def crop_to_image(output: Any, padded: Sequence[int], image: Sequence[int]) -> Any:
    """Drop the output cells of a ``padded`` (H, W) input that lie wholly outside the ``image``
    (H, W) (each tensor at its own stride)."""

    def crop(tensor: torch.Tensor) -> torch.Tensor:
        stride = padded[0] // tensor.shape[-2]
        return tensor[..., : math.ceil(image[0] / stride), : math.ceil(image[1] / stride)]

    return map_tensors(crop, output)


def fully_convolutional(
    forward: Callable[[torch.Tensor], Any], images: torch.Tensor, multiple: int
) -> Any:
    """``forward`` of the whole (B, C, H, W) batch, padded to sides divisible by ``multiple``
    (the network's total down-sampling), outputs cropped back to the image."""
    padded = pad_to_fit(images, multiple)
    return crop_to_image(forward(padded), padded.shape[-2:], images.shape[-2:])


def output_stride(window_height: int, leaf: torch.Tensor) -> int:
    """Input pixels per output cell of a window output ``leaf`` (N, ..., h, w)."""
    return window_height // leaf.shape[-2]


def image_sized_zeros(leaf: torch.Tensor, stride: int, image_size: Sequence[int]) -> torch.Tensor:
    """(1, ..., H / stride, W / stride) float32 zeros: room for a window output ``leaf``
    (N, ..., h, w) over a whole (H, W) image."""
    height, width = image_size
    shape = (1, *leaf.shape[1:-2], height // stride, width // stride)
    return torch.zeros(shape, device=leaf.device, dtype=torch.float32)


def window_cells(corner: Sequence[int], stride: int, size: Sequence[int]) -> tuple:
    """Index of the (h, w) ``size`` output cells of the window at input pixel ``corner`` (y, x)
    in an image-sized output of that ``stride``."""
    y, x = corner[0] // stride, corner[1] // stride
    return (..., slice(y, y + size[0]), slice(x, x + size[1]))


def run_windows(
    forward: Callable[[torch.Tensor], Any],
    padded: torch.Tensor,
    corners: Sequence[tuple[int, int]],
    window_size: Sequence[int],
    batch_size: int,
) -> Iterator[tuple[int, Sequence[tuple[int, int]], Any]]:
    """(index of the first corner, the batch's (y, x) corners, ``forward``'s output) for the
    windows of ``padded`` (1, C, H, W) at ``corners``, ``batch_size`` windows at a time."""
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        windows = torch.cat(
            [padded[..., y : y + window_size[0], x : x + window_size[1]] for y, x in chunk]
        )
        yield first, chunk, forward(windows)


def patchify_and_stitch(
    forward: Callable[[torch.Tensor], Any],
    image: torch.Tensor,
    window_size: Sequence[int],
    stride: Sequence[int],
    batch_size: int,
    multiple: int = 1,
) -> Any:
    """``forward``'s output for one (1, C, H, W) image, stitched from overlapping windows.

    Args:
        forward: maps (N, C, h, w) windows to outputs of (N, ..., h / f, w / f) tensors.
        window_size: (h, w) of a window, divisible by ``multiple`` (and by every output stride).
        stride: (y, x) step between windows, divisible by every output stride.
        batch_size: windows per call of ``forward``.
        multiple: the image is padded to sides divisible by this.
    Returns:
        the output's structure with each tensor (1, ..., ceil(H / f), ceil(W / f)): the
        Gaussian-weighted mean of the windows that cover each cell.
    """
    if image.shape[0] != 1:
        raise ValueError(f"patchify_and_stitch takes one image at a time, got {image.shape[0]}")
    padded = pad_to_fit(image, multiple, window_size)
    height, width = padded.shape[-2:]
    corners = [
        (y, x)
        for y in window_starts(height, window_size[0], stride[0])
        for x in window_starts(width, window_size[1], stride[1])
    ]
    sums: list[torch.Tensor] | None = None
    weights: dict[int, torch.Tensor] = {}  # per output stride: summed weights and one window's
    window_weights: dict[int, torch.Tensor] = {}
    structure = None
    for _, chunk, output in run_windows(forward, padded, corners, window_size, batch_size):
        leaves = tensor_leaves(output)
        if sums is None:
            structure = output
            sums = []
            for leaf in leaves:
                stride_f = output_stride(window_size[0], leaf)
                if any(s % stride_f for s in (*stride, *window_size)):
                    raise ValueError(
                        f"window {list(window_size)} and stride {list(stride)} must be "
                        f"divisible by the output stride {stride_f}"
                    )
                sums.append(image_sized_zeros(leaf, stride_f, (height, width)))
                if stride_f not in weights:
                    weights[stride_f] = torch.zeros(sums[-1].shape[-2:], device=leaf.device)
                    window_weights[stride_f] = gaussian_importance(leaf.shape[-2:], leaf.device)
        for leaf, total in zip(leaves, sums, strict=True):
            stride_f = height // total.shape[-2]
            for n, corner in enumerate(chunk):
                cells = window_cells(corner, stride_f, leaf.shape[-2:])
                total[cells] += leaf[n].float() * window_weights[stride_f]
        for stride_f, total_weight in weights.items():
            for corner in chunk:
                cells = window_cells(corner, stride_f, window_weights[stride_f].shape)
                total_weight[cells] += window_weights[stride_f]
    stitched = iter(total / weights[height // total.shape[-2]] for total in sums)
    output = map_tensors(lambda _: next(stitched), structure)
    return crop_to_image(output, (height, width), image.shape[-2:])
