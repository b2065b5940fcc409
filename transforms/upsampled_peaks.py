"""The maximum of a bicubically upsampled heatmap, and the window around it, without upsampling
the whole map.

``scale_heatmap_first`` decodes each heatmap after a bicubic resize to the original image (a
cephalogram: 19 maps of 1340 x 1671 pixels, ~0.6 s on 2 CPU cores). Bicubic interpolation is
local: an output pixel is a weighted sum of the 4 x 4 input pixels around its source point, with
weights whose positive and negative parts are bounded. So an output pixel can only be the
maximum if the 4 x 4 block it reads is large enough; the exact values are computed only there,
and then in a window around the maximum, which is all that the sub-pixel decoders read. The
result equals decoding the fully upsampled map (to float rounding: tests/test_decoding.py).

The weights are PyTorch's ``F.interpolate(mode="bicubic", align_corners=False)``: source point
``(dst + 0.5) * in / out - 0.5``, cubic convolution with A = -0.75, indices clamped to the map.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from utils.coordinates import resize_heatmaps

_A = -0.75  # PyTorch's cubic convolution constant
# Above this share of an input map's cells as candidates for the maximum, the whole map is
# upsampled instead: evaluating cells one by one is then slower than F.interpolate.
MAX_CANDIDATE_SHARE = 0.02


def cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """(..., 4) weights of the input pixels floor(s) - 1 ... floor(s) + 2 for fractions
    ``t = s - floor(s)``."""

    def near(x):  # |x| <= 1
        return ((_A + 2) * x - (_A + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)


@lru_cache(maxsize=1)
def weight_bounds() -> tuple[float, float]:
    """The largest sums of the positive and of the negative (absolute) 2D weight products over
    all fractions, with a margin for rounding."""
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    w = cubic_weights(t)
    positive, negative = w.clamp_min(0).sum(-1), (-w).clamp_min(0).sum(-1)
    pos2 = positive[:, None] * positive[None] + negative[:, None] * negative[None]
    neg2 = positive[:, None] * negative[None] + negative[:, None] * positive[None]
    return float(pos2.max()) * (1 + 1e-6), float(neg2.max()) * (1 + 1e-6)


def source_points(out_size: int, in_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """For every output index: the floor of its source point (int64) and the (4,) weights."""
    scale = in_size / out_size
    source = (torch.arange(out_size, device=device, dtype=torch.float64) + 0.5) * scale - 0.5
    floor = torch.floor(source)
    return floor.long(), cubic_weights(source - floor)


def sample(
    heatmap: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    row_points: tuple[torch.Tensor, torch.Tensor],
    col_points: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Upsampled values of the (h, w) ``heatmap`` on the grid ``rows`` x ``cols`` (output
    indices), (len(rows), len(cols)), in float64."""
    height, width = heatmap.shape
    taps = torch.arange(-1, 3, device=heatmap.device)
    row_index = (row_points[0][rows, None] + taps).clamp(0, height - 1)  # (R, 4)
    col_index = (col_points[0][cols, None] + taps).clamp(0, width - 1)  # (C, 4)
    low_r, high_r = int(row_index.min()), int(row_index.max()) + 1
    low_c, high_c = int(col_index.min()), int(col_index.max()) + 1
    block = heatmap[low_r:high_r, low_c:high_c].double()
    wy = torch.zeros(len(rows), high_r - low_r, dtype=torch.float64, device=heatmap.device)
    wx = torch.zeros(len(cols), high_c - low_c, dtype=torch.float64, device=heatmap.device)
    wy.scatter_add_(1, row_index - low_r, row_points[1][rows])
    wx.scatter_add_(1, col_index - low_c, col_points[1][cols])
    return wy @ block @ wx.T


def upsampled_peak_windows(
    heatmaps: torch.Tensor, out_size: tuple[int, int], radius: int
) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """The window of each bicubically upsampled heatmap around its maximum.

    Args:
        heatmaps: (K, h, w).
        out_size: (H, W) of the upsampled maps.
        radius: half side of the windows, output pixels.
    Returns:
        per heatmap, the window (at most 2 radius + 1 square; cut by the map's border, so that
        border pixels of the window are border pixels of the map), float32, and the (y, x) of
        its top-left pixel in the upsampled map. Its maximum is the upsampled map's (the first
        in raster order where several are equal).
    """
    _, height, width = heatmaps.shape
    out_h, out_w = int(out_size[0]), int(out_size[1])
    device = heatmaps.device
    row_points, col_points = (
        source_points(out_h, height, device),
        source_points(out_w, width, device),
    )
    positive, negative = weight_bounds()
    # Per input cell (i, j), i.e. the output pixels whose source floor is (i, j): the extremes
    # of the 4 x 4 block rows i-1..i+2, cols j-1..j+2 they read (indices clamped: replicate).
    padded = F.pad(heatmaps.float()[:, None], (2, 2, 2, 2), mode="replicate")
    block_max = F.max_pool2d(padded, 4, stride=1)[:, 0]  # cell i at row i + 1 (i from -1)
    block_min = -F.max_pool2d(-padded, 4, stride=1)[:, 0]
    bounds = positive * block_max + negative * (-block_min).clamp_min(0)
    peaks = heatmaps.reshape(len(heatmaps), -1).argmax(-1).tolist()
    windows = []
    for heatmap, bound, flat in zip(heatmaps, bounds, peaks, strict=True):
        # A lower bound of the maximum: the exact values in the cell of the input maximum.
        cell = torch.tensor([[flat // width, flat % width]], device=device)
        best, _ = cell_maximum(heatmap, cell, row_points, col_points)
        margin = 1e-5 * max(abs(best), 1e-30)  # the bounds are float32
        candidates = torch.nonzero(bound >= best - margin) - 1  # cells (i, j), from -1
        if len(candidates) > MAX_CANDIDATE_SHARE * bound.numel():
            # A flat or noisy map (an untrained network): upsampling all of it is cheaper.
            full = resize_heatmaps(heatmap[None, None].float(), (out_h, out_w))[0, 0]
            top_index = int(full.reshape(-1).argmax())
        else:
            _, top_index = cell_maximum(heatmap, candidates, row_points, col_points)
        y, x = divmod(top_index, out_w)
        y0, x0 = max(0, y - radius), max(0, x - radius)
        rows = torch.arange(y0, min(out_h, y + radius + 1), device=device)
        cols = torch.arange(x0, min(out_w, x + radius + 1), device=device)
        window = sample(heatmap, rows, cols, row_points, col_points)
        windows.append((window.float(), (y0, x0)))
    return windows


def cell_maximum(
    heatmap: torch.Tensor,
    cells: torch.Tensor,
    row_points: tuple[torch.Tensor, torch.Tensor],
    col_points: tuple[torch.Tensor, torch.Tensor],
) -> tuple[float, int]:
    """The largest exact upsampled value among the output pixels of input ``cells`` (M, 2)
    (i, j: the floors of their source points), and its flat output index (the smallest where
    several are equal)."""
    height, width = heatmap.shape
    out_w = len(col_points[0])

    def pixels(floors: torch.Tensor, cell_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (M, S) output indices of each cell along one axis, and which of them exist.
        first = torch.searchsorted(floors, cell_index)
        count = torch.searchsorted(floors, cell_index, right=True) - first
        span = torch.arange(max(int(count.max()), 1), device=floors.device)
        return (first[:, None] + span).clamp(max=len(floors) - 1), span < count[:, None]

    rows, row_ok = pixels(row_points[0], cells[:, 0])
    cols, col_ok = pixels(col_points[0], cells[:, 1])
    taps = torch.arange(-1, 3, device=heatmap.device)
    row_index = (row_points[0][rows][..., None] + taps).clamp(0, height - 1)  # (M, R, 4)
    col_index = (col_points[0][cols][..., None] + taps).clamp(0, width - 1)  # (M, C, 4)
    block = heatmap[row_index[:, :, None, :, None], col_index[:, None, :, None, :]].double()
    weights = row_points[1][rows][:, :, None, :, None] * col_points[1][cols][:, None, :, None, :]
    values = (block * weights).sum(dim=(-2, -1))  # (M, R, C)
    valid = row_ok[:, :, None] & col_ok[:, None, :]
    values = torch.where(valid, values, torch.full_like(values, -math.inf))
    flat = rows[:, :, None] * out_w + cols[:, None, :]
    top = values.max()
    index = torch.where(values == top, flat, torch.full_like(flat, flat.max() + 1)).min()
    return float(top), int(index)
