"""Heatmaps → coordinates (``decode``), batched in torch on the heatmaps' device.

Coordinates follow utils/coordinates.py: x = column, y = row, integer values are pixel centres.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from utils.coordinates import resize_coords, resize_heatmaps

EVALUATION_MODES = ("scale_heatmap_first", "scale_pred_coords", "use_input_size")


def heatmap_argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel of the maximum of each heatmap.

    Args:
        heatmaps: (B, K, H, W).
    Returns:
        coords (B, K, 2) x,y in pixels of the heatmap (whole numbers, float), and the maximum
        values (B, K). A flat heatmap decodes to its first pixel, never NaN.
    """
    batch, landmarks, _, width = heatmaps.shape
    values, flat_index = heatmaps.reshape(batch, landmarks, -1).max(dim=-1)
    coords = torch.stack([flat_index % width, flat_index // width], dim=-1).to(heatmaps.dtype)
    return coords, values


def heatmap_to_coords(
    heatmap: torch.Tensor, original_size: Sequence[int], evaluation_mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one sample's (K, h, w) heatmaps at model-input resolution.

    Args:
        heatmap: (K, h, w), the finest model output.
        original_size: (H, W) of the image file.
        evaluation_mode: ``scale_heatmap_first`` (bicubic upsampling to (H, W), then argmax),
            ``scale_pred_coords`` (argmax at (h, w), then map the point to (H, W)) or
            ``use_input_size`` (argmax at (h, w), coordinates stay in input pixels).
    Returns:
        coords (K, 2) x,y in pixels of the original image (of the input for use_input_size), and
        the maximum heatmap activation (K,) of the input-resolution heatmap (S-MHA).
    """
    input_size = tuple(heatmap.shape[-2:])
    input_coords, peak = heatmap_argmax(heatmap[None].float())
    if evaluation_mode == "use_input_size":
        return input_coords[0], peak[0]
    if evaluation_mode == "scale_pred_coords":
        return resize_coords(input_coords[0], input_size, original_size), peak[0]
    if evaluation_mode == "scale_heatmap_first":
        upsampled = resize_heatmaps(heatmap[None].float(), original_size)
        return heatmap_argmax(upsampled)[0][0], peak[0]
    raise ValueError(f"evaluation_mode must be one of {EVALUATION_MODES}, got {evaluation_mode!r}")
