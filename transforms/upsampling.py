"""Bicubic upsampling of a heatmap only where its maximum can be (scale_heatmap_first).

``F.interpolate(mode="bicubic", align_corners=False)`` is separable and local: output pixel
(Y, X) is ``sum_ij Wy[Y, i] * M[i, j] * Wx[X, j]``, with at most 4 non-zero weights per row of
``Wy`` (H, h) and ``Wx`` (W, w) (cubic convolution, A = -0.75, indices clamped at the border).
:func:`bicubic_matrix` takes those weights from ``F.interpolate`` itself, so any region of the
upsampled map is ``Wy[rows] @ M @ Wx[cols].T``, the same numbers to float rounding.

Where can the maximum of the upsampled map lie? Group the output pixels into *cells* by the
4 x 4 input pixels they are made of. An output value is a weighted sum of its cell's 16 values
whose weights sum to 1, so it is at most ``(1 + N) max - N min`` over the cell, with ``N`` the
largest total negative weight of any output pixel (0.45 for A = -0.75), and ``min`` at least
the map's minimum ``m``. Any computed output value ``L`` is a lower bound on the global maximum,
so the maximum lies in a cell holding an input pixel ``>= T = (L + N m) / (1 + N)``.
:func:`candidate_regions` upsamples a small window around the low-resolution maximum to get
``L``, then returns the output rectangle that covers every cell within reach of a pixel
``>= T`` (several separate peaks included), widened by the decoder's window radius and clipped
to the map: decoding it gives the coordinates of decoding the whole upsampled map, because the
maximum and every pixel its decoder reads lie inside, and the rectangle only stops short of the
decoder's window where the map itself ends. Where the rectangle is large (several far-apart
candidates, a flat map) the whole map is upsampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# Above this fraction of the upsampled map's pixels, the candidate region is not worth it: the
# whole map is upsampled instead (same result, by definition).
MAX_REGION_FRACTION = 0.25


@dataclass(frozen=True)
class _Axis:
    """One axis of a resize from ``size_in`` to ``size_out`` pixels: ``weights`` (out, in)
    float64 as F.interpolate applies them (border clamping included), the ``cells`` (out,) of
    the output rows (floor of their source coordinate, -1 .. in - 1: they read source rows
    cell - 1 .. cell + 2, clamped), and the largest total negative weight of a row."""

    weights: torch.Tensor
    cells: torch.Tensor
    negative_mass: float

    @property
    def cell_array(self) -> np.ndarray:
        return self.cells.numpy()


@lru_cache(maxsize=32)
def _axis(size_in: int, size_out: int) -> _Axis:
    eye = torch.eye(size_in, dtype=torch.float64)[None, None]  # unit vectors
    # Interpolating along one axis only; the other keeps its size, where bicubic is the identity.
    weights = F.interpolate(eye, size=(size_out, size_in), mode="bicubic", align_corners=False)
    weights = weights[0, 0]  # (out, in): column i is the upsampled i-th unit vector
    source = (torch.arange(size_out, dtype=torch.float64) + 0.5) * size_in / size_out - 0.5
    cells = torch.floor(source).long().clamp(-1, size_in - 1)
    negative_mass = float((-weights.clamp(max=0)).sum(dim=1).max())
    return _Axis(weights, cells, negative_mass)


def bicubic_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) float64 weights of 1D bicubic, centre-aligned resizing, as
    F.interpolate applies them (border clamping included)."""
    return _axis(int(size_in), int(size_out)).weights


def _span(cells: np.ndarray, first: int, last: int, margin: int, size: int) -> tuple[int, int]:
    """[start, stop) of the output rows whose cell is within first .. last, widened by
    ``margin`` and clipped to 0 .. size. ``cells`` never decrease along the rows, so the rows
    are found by bisection (this runs four times per landmark and image)."""
    start = int(np.searchsorted(cells, first, side="left"))
    stop = int(np.searchsorted(cells, last, side="right"))
    if stop <= start:
        raise ValueError(f"no output row reads cells {first} .. {last}")
    return max(0, start - margin), min(size, stop + margin)


def candidate_regions(
    heatmaps: torch.Tensor, size: Sequence[int], margin: int
) -> list[tuple[int, int, int, int] | None]:
    """For each of the (K, h, w) ``heatmaps``, the rectangle of its bicubic upsampling to
    ``size`` (H, W) that holds the upsampled map's maximum, widened by ``margin`` output pixels
    (the decoder's window) and clipped to the map: (y0, y1, x0, x1), half-open; None where it
    would exceed MAX_REGION_FRACTION of the map, or where the map shrinks along an axis (then
    resize that map whole)."""
    height, width = int(size[0]), int(size[1])
    count, h, w = heatmaps.shape
    if height < h or width < w:  # shrinking: no cells to skip (and a cell may hold no pixel)
        return [None] * count
    ay, ax = _axis(h, height), _axis(w, width)
    heatmaps = heatmaps.detach().float().cpu()  # small; the weights live on the CPU
    negative = ay.negative_mass * (1 + ax.negative_mass) + ax.negative_mass * (1 + ay.negative_mass)
    flat = heatmaps.reshape(count, -1).argmax(dim=1).tolist()
    lower = torch.empty(count)
    for k, (heatmap, index) in enumerate(zip(heatmaps, flat, strict=True)):
        i, j = index // w, index % w  # L: upsampled around the maximum (its cells i-1 .. i)
        y0, y1 = _span(ay.cell_array, i - 1, i, 0, height)
        x0, x1 = _span(ax.cell_array, j - 1, j, 0, width)
        lower[k] = upsample_region(heatmap, size, (y0, y1, x0, x1)).max()
    lower -= 1e-4 * heatmaps.abs().amax(dim=(1, 2))  # float rounding: keep a cell that ties
    # A cell can reach L only if (1 + N) max - N min >= L over its 4 x 4 input pixels, so only
    # if one of them is >= T = (L + N min(map)) / (1 + N): cells within reach of such pixels.
    threshold = (lower + negative * heatmaps.amin(dim=(1, 2))) / (1 + negative)
    above = heatmaps >= threshold[:, None, None]
    rows, cols = above.any(dim=2), above.any(dim=1)  # (K, h), (K, w)
    regions = []
    for k in range(count):
        found_rows, found_cols = torch.nonzero(rows[k])[:, 0], torch.nonzero(cols[k])[:, 0]
        # Input pixel r is read by the output rows of cells r - 2 .. r + 1; one output pixel
        # more on each side for a row on a cell boundary in float rounding.
        y0, y1 = _span(
            ay.cell_array, int(found_rows[0]) - 2, int(found_rows[-1]) + 1, margin + 1, height
        )
        x0, x1 = _span(
            ax.cell_array, int(found_cols[0]) - 2, int(found_cols[-1]) + 1, margin + 1, width
        )
        too_large = (y1 - y0) * (x1 - x0) > MAX_REGION_FRACTION * height * width
        regions.append(None if too_large else (y0, y1, x0, x1))
    return regions


def _support(axis: _Axis, start: int, stop: int, size_in: int) -> slice:
    """The input rows that output rows start:stop read: cells - 1 .. cells + 2, clamped."""
    first, last = int(axis.cells[start]) - 1, int(axis.cells[stop - 1]) + 2
    return slice(max(0, first), min(size_in, last + 1))


def upsample_region(
    heatmap: torch.Tensor, size: Sequence[int], region: tuple[int, int, int, int]
) -> torch.Tensor:
    """Rows y0:y1, columns x0:x1 of the bicubic upsampling of the (h, w) ``heatmap`` to
    ``size`` (H, W): (y1 - y0, x1 - x0), computed in float64 from the input pixels they read,
    returned in the heatmap's dtype."""
    y0, y1, x0, x1 = region
    h, w = heatmap.shape
    ay, ax = _axis(h, int(size[0])), _axis(w, int(size[1]))
    rows, cols = _support(ay, y0, y1, h), _support(ax, x0, x1, w)
    wy, wx = ay.weights[y0:y1, rows], ax.weights[x0:x1, cols]
    if heatmap.device != wy.device:
        wy, wx = wy.to(heatmap.device), wx.to(heatmap.device)
    return (wy @ heatmap[rows, cols].double() @ wx.T).to(heatmap.dtype)


def _common_starts(
    starts: torch.Tensor, stops: torch.Tensor, size: int
) -> tuple[torch.Tensor, int]:
    """Starts of spans of one common length (the longest of ``starts``:``stops``), each
    covering its own span and shifted inwards where it would leave 0 .. size."""
    length = int((stops - starts).max())
    return torch.minimum(starts, torch.full_like(starts, size - length)), length


def upsample_regions(
    heatmaps: torch.Tensor, size: Sequence[int], regions: Sequence[tuple[int, int, int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of the bicubic upsampling of (N, h, w) ``heatmaps`` to ``size`` (H, W), one per
    region (y0, y1, x0, x1), all of the largest region's size: a smaller region is widened,
    away from the map's border where it would leave the map, so that each window holds its
    region and ends only where its region does or at the map's border.

    Returns:
        windows (N, S_y, S_x) in the heatmaps' dtype (computed in float64), and their top-left
        corners (N, 2) x,y in pixels of the upsampled map.
    """
    height, width = int(size[0]), int(size[1])
    _, h, w = heatmaps.shape
    ay, ax = _axis(h, height), _axis(w, width)
    bounds = torch.tensor(regions, dtype=torch.long)
    y0, sy = _common_starts(bounds[:, 0], bounds[:, 1], height)
    x0, sx = _common_starts(bounds[:, 2], bounds[:, 3], width)
    ys = y0[:, None] + torch.arange(sy)  # (N, S_y) output rows
    xs = x0[:, None] + torch.arange(sx)
    # The input rows (columns) the windows read, one common number of them.
    r0, ly = _common_starts(
        (ay.cells[ys[:, 0]] - 1).clamp(min=0), (ay.cells[ys[:, -1]] + 3).clamp(max=h), h
    )
    c0, lx = _common_starts(
        (ax.cells[xs[:, 0]] - 1).clamp(min=0), (ax.cells[xs[:, -1]] + 3).clamp(max=w), w
    )
    rs = r0[:, None] + torch.arange(ly)
    cs = c0[:, None] + torch.arange(lx)
    wy = ay.weights[ys[:, :, None], rs[:, None, :]]  # (N, S_y, L_y)
    wx = ax.weights[xs[:, :, None], cs[:, None, :]]  # (N, S_x, L_x)
    device = heatmaps.device
    index = torch.arange(len(regions))[:, None, None]
    parts = heatmaps[index.to(device), rs[:, :, None].to(device), cs[:, None, :].to(device)]
    windows = wy.to(device) @ parts.double() @ wx.transpose(1, 2).to(device)
    corners = torch.stack([x0, y0], dim=-1).to(device=device, dtype=heatmaps.dtype)
    return windows.to(heatmaps.dtype), corners
