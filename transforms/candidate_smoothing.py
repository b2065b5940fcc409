"""PHD-Net's candidate smoothing: displacement votes, blurred, times the patch heatmap."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from utils.coordinates import resize_coords


def splat_votes(
    points: torch.Tensor, size: Sequence[int], weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum x,y ``points`` (N, P, 2) (input pixels), each with its weight (N, P) (default 1),
    into (N, H, W) maps, spread bilinearly over the 4 nearest pixel centres; points off the map
    or not finite are dropped."""
    height, width = int(size[0]), int(size[1])
    n = points.shape[0]
    votes = torch.zeros(n, height * width, device=points.device, dtype=points.dtype)
    x0, y0 = points[..., 0].floor(), points[..., 1].floor()
    fx, fy = points[..., 0] - x0, points[..., 1] - y0
    point_weights = torch.ones_like(fx) if weights is None else weights.to(fx)
    for dx, dy, weight in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        x, y = x0 + dx, y0 + dy
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height) & torch.isfinite(weight)
        x, y = torch.where(inside, x, 0), torch.where(inside, y, 0)  # NaN or inf: no vote
        index = (y * width + x).long()
        votes.scatter_add_(1, index, torch.where(inside, weight * point_weights, 0))
    return votes.view(n, height, width)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, H, W) maps (zero padding)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    blurred = F.conv2d(maps[:, None], kernel.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1), padding=(radius, 0))[:, 0]


def candidate_smoothing(
    heatmap: torch.Tensor | None,
    displacement: torch.Tensor | None,
    input_size: Sequence[int],
    vote_sigma: float,
    weight_votes_by_heatmap: bool = False,
    max_displacement: float | None = None,
) -> torch.Tensor:
    """Combine PHD-Net's outputs into one (B, K, H, W) map at input resolution.

    Args:
        heatmap: (B, K, h, w) patch probabilities (>= 0), or None.
        displacement: (B, K, 2, h, w) x,y from each patch centre to the landmark in patches
            (already decoded), or None.
        input_size: (H, W) of the model input.
        vote_sigma: blur of each vote, input pixels.
        weight_votes_by_heatmap: weight each patch's vote by its heatmap value instead of
            multiplying the maps (for one-hot patch heatmaps, whose upsampling peaks at a patch
            centre and would pull the prediction there).
        max_displacement: drop votes whose |dx| or |dy| reaches this many patches (they were
            clamped in training, so they point short of the landmark); None = keep all.
    Returns:
        the blurred vote density (votes per patch) times the bilinearly upsampled heatmap, or
        the blurred density of heatmap-weighted votes; only one of them where only one branch
        exists.
    """
    if heatmap is None and displacement is None:
        raise ValueError("candidate smoothing needs a heatmap or a displacement output")
    size = (int(input_size[0]), int(input_size[1]))
    combined = None
    if displacement is not None:
        batch, landmarks, _, h, w = displacement.shape
        ys, xs = torch.meshgrid(
            torch.arange(h, device=displacement.device),
            torch.arange(w, device=displacement.device),
            indexing="ij",
        )
        centres = torch.stack([xs, ys], dim=-1).to(displacement.dtype)  # (h, w, 2)
        offsets = displacement.permute(0, 1, 3, 4, 2)  # (B, K, h, w, 2) in patches
        if max_displacement is not None:
            clamped = (offsets.abs() >= max_displacement - 1e-6).any(-1, keepdim=True)
            offsets = torch.where(clamped, torch.full_like(offsets, math.inf), offsets)
        targets = centres + offsets
        points = resize_coords(targets.reshape(batch * landmarks, h * w, 2), (h, w), size)
        weights = None
        if weight_votes_by_heatmap and heatmap is not None:
            weights = heatmap.float().reshape(batch * landmarks, h * w)
        votes = gaussian_blur(splat_votes(points, size, weights), vote_sigma) / (h * w)
        combined = votes.view(batch, landmarks, *size)
        if weights is not None:
            return combined
    if heatmap is not None:
        upsampled = F.interpolate(heatmap.float(), size=size, mode="bilinear", align_corners=False)
        combined = upsampled if combined is None else combined * upsampled
    return combined
