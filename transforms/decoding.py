"""Heatmaps → coordinates (``decode``), batched in torch on the heatmaps' device.

Coordinates follow utils/coordinates.py: x = column, y = row, integer values are pixel centres.
Every decoder starts at the heatmap's maximum pixel and refines it below the pixel:

- ``argmax``: the maximum pixel itself (the original behaviour; error up to 0.5 px).
- ``quadratic``: Newton step of a 2D quadratic through the 3x3 neighbourhood of the maximum
  (full Hessian; per axis where the Hessian is not negative definite).
- ``dark``: the same Newton step on the log of the locally Gaussian-smoothed heatmap (DARK, Zhang
  et al. CVPR 2020); exact for a Gaussian, whose log is a quadratic.
- ``local_soft_argmax``: centroid of the heatmap minus 10 % of its maximum (negative parts
  dropped) in a window of radius ~3 sigma around the maximum. The threshold makes the weighted
  region symmetric about the true centre, so the centroid has no pull towards the pixel grid.

``fit_gaussian`` fits mean, covariance and amplitude of a 2D Gaussian by iteratively reweighted
least squares on the log heatmap (Guo's algorithm), vectorised over all heatmaps at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from transforms.upsampling import candidate_regions, upsample_regions
from utils.coordinates import resize_coords, resize_heatmaps, scale_factors

EVALUATION_MODES = ("scale_heatmap_first", "scale_pred_coords", "use_input_size")
DECODERS = ("argmax", "quadratic", "dark", "local_soft_argmax")
_SOFT_ARGMAX_THRESHOLD = 0.1
_EPS = 1e-10


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


def _fit_radius(sigma: float) -> int:
    """Window radius (pixels) of the Gaussian fit and of ``local_soft_argmax``."""
    return max(2, math.ceil(3 * sigma))


def _dark_radius(sigma: float) -> int:
    """Radius of DARK's window: the 3x3 Newton neighbourhood plus its smoothing kernel's."""
    return 1 + max(1, math.ceil(3 * max(0.5 * sigma, 0.5)))


def decoder_radius(method: str, sigma: float) -> int:
    """The farthest pixel (Chebyshev distance from the maximum pixel) that ``method`` reads
    with ``sigma``, the Gaussian-fit fallback near the border included."""
    if method == "argmax":
        return 0
    own = {"quadratic": 1, "dark": _dark_radius(sigma)}.get(method, _fit_radius(sigma))
    return max(own, _fit_radius(sigma))


def _windows(
    maps: torch.Tensor, centres: torch.Tensor, radius: int, rows: torch.Tensor | None = None
):
    """(N, 2r+1, 2r+1) windows of (M, H, W) ``maps`` centred on integer x,y ``centres`` (N, 2),
    window n from map ``rows[n]`` (default n), with a mask of the pixels inside the map;
    outside pixels repeat the nearest border pixel."""
    _, height, width = maps.shape
    offsets = torch.arange(-radius, radius + 1, device=maps.device)
    xs = centres[:, 0:1].long() + offsets  # (N, 2r+1)
    ys = centres[:, 1:2].long() + offsets
    inside = ((xs >= 0) & (xs < width))[:, None, :] & ((ys >= 0) & (ys < height))[:, :, None]
    rows = (
        torch.arange(maps.shape[0], device=maps.device) if rows is None else rows
    )  # symbolic in export
    rows = rows[:, None, None]
    window = maps[rows, ys.clamp(0, height - 1)[:, :, None], xs.clamp(0, width - 1)[:, None, :]]
    return window, inside


def _newton_offset(window: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Sub-pixel offset (N, 2) of the maximum of a quadratic through the centre 3x3 of (N, 3, 3)
    windows; 0 along an axis whose neighbours are off the map or not curved downwards."""
    c = window[:, 1, 1]
    gx = (window[:, 1, 2] - window[:, 1, 0]) / 2
    gy = (window[:, 2, 1] - window[:, 0, 1]) / 2
    hxx = window[:, 1, 2] - 2 * c + window[:, 1, 0]
    hyy = window[:, 2, 1] - 2 * c + window[:, 0, 1]
    hxy = (window[:, 2, 2] - window[:, 2, 0] - window[:, 0, 2] + window[:, 0, 0]) / 4
    x_ok = inside[:, 1, 0] & inside[:, 1, 2] & (hxx < -_EPS)
    y_ok = inside[:, 0, 1] & inside[:, 2, 1] & (hyy < -_EPS)
    det = hxx * hyy - hxy**2
    full = x_ok & y_ok & inside.all(dim=(1, 2)) & (det > _EPS)
    safe_det = torch.where(full, det, torch.ones_like(det))
    full_dx = -(hyy * gx - hxy * gy) / safe_det
    full_dy = -(hxx * gy - hxy * gx) / safe_det
    axis_dx = torch.where(x_ok, -gx / torch.where(x_ok, hxx, -torch.ones_like(hxx)), 0 * gx)
    axis_dy = torch.where(y_ok, -gy / torch.where(y_ok, hyy, -torch.ones_like(hyy)), 0 * gy)
    offset = torch.stack(
        [torch.where(full, full_dx, axis_dx), torch.where(full, full_dy, axis_dy)], dim=-1
    )
    return offset.clamp(-1.5, 1.5)


def _edge_mask(window: torch.Tensor) -> torch.Tensor:
    """(N, S, S) mask of the outermost ring of each window."""
    mask = torch.zeros(window.shape[1:], dtype=torch.bool, device=window.device)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask[None].expand_as(window)


def _dark_offset(maps: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """Newton step on the log of the Gaussian-smoothed (sigma/2) map around ``centres``; where
    the smoothing window leaves the map, on the log of the map itself (padding would bias)."""
    kernel = _gaussian_kernel(max(0.5 * sigma, 0.5), maps.device, maps.dtype)
    pad = len(kernel) // 2
    window, inside = _windows(maps, centres, _dark_radius(sigma))
    smooth = F.conv2d(window[:, None], kernel.view(1, 1, 1, -1))
    smooth = F.conv2d(smooth, kernel.view(1, 1, -1, 1))[:, 0]  # (N, 3, 3)
    raw = window[:, pad:-pad, pad:-pad]
    smooth = torch.where(inside.all(dim=(1, 2))[:, None, None], smooth, raw)
    floor = smooth.amax(dim=(1, 2), keepdim=True).clamp_min(_EPS) * 1e-6
    log_window = torch.log(torch.maximum(smooth, floor))
    return _newton_offset(log_window, inside[:, pad:-pad, pad:-pad])


def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def decode_heatmaps(
    heatmaps: torch.Tensor, method: str = "argmax", sigma: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel maxima of (B, K, H, W) heatmaps.

    Args:
        heatmaps: (B, K, H, W).
        method: one of DECODERS.
        sigma: the expected Gaussian sigma in pixels of these heatmaps (sets the windows of
            ``dark`` and ``local_soft_argmax``).
    Returns:
        coords (B, K, 2) x,y in pixels of the heatmaps, and their maxima (B, K). Never NaN.
    """
    if method not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {method!r}")
    peak_coords, peak = heatmap_argmax(heatmaps)
    if method == "argmax":
        return peak_coords, peak
    batch, landmarks, height, width = heatmaps.shape
    maps = heatmaps.reshape(batch * landmarks, height, width).float()
    centres = peak_coords.reshape(-1, 2)
    inner = torch.stack([centres[:, 0].clamp(1, width - 2), centres[:, 1].clamp(1, height - 2)], -1)
    # Near the border the neighbourhood of the maximum is one-sided, which biases a parabola and
    # a centroid alike: there every decoder takes the Gaussian fit, which needs no symmetry.
    near_border = (inner != centres).any(-1)
    if method == "quadratic":
        offset = _newton_offset(*_windows(maps, centres, 1))
    elif method == "dark":
        offset = _dark_offset(maps, centres, sigma)
    else:  # local_soft_argmax
        radius = _fit_radius(sigma)
        window, inside = _windows(maps, centres, radius)
        top = window.amax(dim=(1, 2), keepdim=True)
        above = (window - _SOFT_ARGMAX_THRESHOLD * top).clamp_min(0)
        weights = above * inside
        total = weights.sum(dim=(1, 2))
        grid = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
        safe_total = torch.where(total > _EPS, total, torch.ones_like(total))
        dx = (weights * grid[None, None, :]).sum(dim=(1, 2)) / safe_total
        dy = (weights * grid[None, :, None]).sum(dim=(1, 2)) / safe_total
        offset = torch.stack([dx, dy], -1)
        # Where the border (or the window) cuts the weighted region it is not symmetric.
        near_border |= ((above > 0) & (~inside | _edge_mask(window))).any(dim=(1, 2))
        near_border |= total <= _EPS
    if near_border.any():
        fitted = _fit_gaussian_rows(maps[near_border], centres[near_border], sigma)[0]
        offset[near_border] = (fitted - centres[near_border]).to(offset.dtype)
    coords = (centres + offset).reshape(batch, landmarks, 2).to(heatmaps.dtype)
    return coords, peak


def heatmap_candidates(
    heatmaps: torch.Tensor, count: int, block: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` highest local maxima of each heatmap, strongest first.

    The map is cut into ``block`` x ``block`` pixel blocks; a block whose maximum is the
    largest of its 3 x 3 neighbourhood of blocks gives one candidate at its maximum pixel
    (so candidates are at least ``block`` pixels apart), refined by a Newton step of a
    quadratic through its 3x3 neighbourhood. One pass over the pixels (a few ms for 19 maps
    of 512 x 416 on one CPU core, where a pixel-wise 7 x 7 maximum filter took ~280 ms).

    Args:
        heatmaps: (B, K, H, W).
        count: candidates per heatmap.
        block: block side in pixels of the heatmap.
    Returns:
        coords (B, K, count, 2) x,y in pixels of the heatmap and their values (B, K, count).
        Blocks of a flat region count as maxima (with its value, e.g. a background of 0); a
        heatmap with fewer maxima fills the rest with value -inf (at its first pixel).
    """
    batch, landmarks, height, width = heatmaps.shape
    maps = heatmaps.reshape(batch * landmarks, height, width).float()
    rows_b, cols_b = -(-height // block), -(-width // block)
    if (rows_b * block, cols_b * block) != (height, width):
        maps = F.pad(maps, (0, cols_b * block - width, 0, rows_b * block - height), value=-math.inf)
    n = len(maps)
    # Two reductions over views (no copy): within each row's x-blocks, then over block rows.
    row_max, inner_x = maps.view(n, rows_b * block, cols_b, block).max(dim=-1)
    block_max, inner_y = row_max.view(n, rows_b, block, cols_b).max(dim=2)
    pixel_row = torch.arange(rows_b, device=maps.device)[None, :, None] * block + inner_y
    inner_x = inner_x.gather(1, pixel_row)  # (n, rows_b, cols_b): x offset in that pixel row
    inner = inner_y * block + inner_x
    pooled = F.max_pool2d(block_max[:, None], 3, stride=1, padding=1)[:, 0]
    peaks = torch.where(block_max == pooled, block_max, torch.full_like(block_max, -math.inf))
    count = min(count, rows_b * cols_b)
    values, flat_block = peaks.reshape(len(maps), -1).topk(count, dim=-1)
    offset_in_block = inner.reshape(len(maps), -1).gather(1, flat_block)
    xs = (flat_block % cols_b) * block + offset_in_block % block
    ys = (flat_block // cols_b) * block + offset_in_block // block
    found = torch.isfinite(values)
    centres = torch.stack([torch.where(found, xs, 0), torch.where(found, ys, 0)], -1)
    centres = centres.reshape(-1, 2)
    rows = torch.arange(len(maps), device=maps.device).repeat_interleave(count)
    offset = _newton_offset(*_windows(maps, centres.float(), 1, rows))
    offset = torch.where(found.reshape(-1, 1), offset, 0)
    coords = (centres + offset).reshape(batch, landmarks, count, 2)
    return coords.to(heatmaps.dtype), values.reshape(batch, landmarks, count).to(heatmaps.dtype)


def decode_upsampled(
    heatmaps: torch.Tensor, size: Sequence[int], method: str, sigma: float
) -> torch.Tensor:
    """Decode (K, h, w) heatmaps bicubically upsampled to ``size`` (H, W), as
    ``decode_heatmaps(resize_heatmaps(heatmaps[None], size), method, sigma)`` does, but each
    heatmap upsampled only in the rectangle that holds its maximum and the decoder's window
    (transforms/upsampling.py; the whole map where that rectangle is large).

    Args:
        heatmaps: (K, h, w).
        size: (H, W) to upsample to.
        method: one of DECODERS.
        sigma: the peaks' sigma in pixels of the upsampled maps.
    Returns:
        (K, 2) x,y in pixels of the upsampled maps.
    """
    margin = decoder_radius(method, sigma)
    regions = candidate_regions(heatmaps, size, margin)
    coords = torch.empty(len(heatmaps), 2, dtype=heatmaps.dtype, device=heatmaps.device)
    whole = [k for k, region in enumerate(regions) if region is None]
    windowed = [k for k, region in enumerate(regions) if region is not None]
    if whole:
        maps = resize_heatmaps(heatmaps[whole][None], size)
        coords[whole] = decode_heatmaps(maps, method, sigma)[0][0].to(coords.dtype)
    if windowed:
        # One batch of equal windows: each still holds its region, and ends only where its
        # region does or at the map's border, so every decoder reads what it reads on the map.
        windows, corners = upsample_regions(
            heatmaps[windowed], size, [regions[k] for k in windowed]
        )
        decoded = decode_heatmaps(windows[None], method, sigma)[0][0]
        coords[windowed] = (decoded + corners).to(coords.dtype)
    return coords


def argmax_quadratic(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The maximum pixel of each heatmap and the Newton step of the quadratic through its 3x3
    neighbourhood, in tensor operations only (no data-dependent branches), so that it can be
    part of an exported (ONNX) graph with any batch size.

    It is ``decode_heatmaps(heatmaps, "quadratic")`` except within one pixel of the border,
    where that takes a Gaussian fit and this the step along the axes it can (or none).

    Args:
        heatmaps: (B, K, H, W).
    Returns:
        coords (B, K, 2) x,y in pixels of the heatmaps, and the maxima (B, K).
    """
    batch, landmarks, height, width = heatmaps.shape
    peak_coords, peak = heatmap_argmax(heatmaps)
    maps = heatmaps.reshape(batch * landmarks, height, width).float()
    centres = peak_coords.reshape(batch * landmarks, 2)
    offset = _newton_offset(*_windows(maps, centres, 1))
    return (centres + offset).reshape(batch, landmarks, 2).to(heatmaps.dtype), peak


@dataclass
class GaussianFit:
    """Fitted 2D Gaussians: mean (B, K, 2) x,y and covariance (B, K, 2, 2) in heatmap pixels
    (pixels²), amplitude (B, K). A heatmap with no Gaussian-like peak (flat, all zero) keeps
    its argmax as mean and gets an infinite covariance."""

    mean: torch.Tensor
    covariance: torch.Tensor
    amplitude: torch.Tensor


def _fit_gaussian_rows(
    maps: torch.Tensor, centres: torch.Tensor, sigma: float, iterations: int = 3
):
    """Guo's fit on (N, H, W) ``maps`` around integer x,y ``centres`` (N, 2): mean (N, 2),
    covariance (N, 2, 2), amplitude (N,) and a validity mask (N,), in float64."""
    maps, centres = maps.double(), centres.double()
    radius = _fit_radius(sigma)
    window, inside = _windows(maps, centres, radius)
    top = window.amax(dim=(1, 2), keepdim=True)
    used = inside & (window > 0.05 * top) & (top > _EPS)
    grid = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    x = grid[None, None, :].expand_as(window)
    y = grid[None, :, None].expand_as(window)
    design = torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], dim=-1)  # (N, S, S, 6)
    log_h = torch.log(window.clamp_min(_EPS))
    weights = torch.where(used, window, torch.zeros_like(window))
    eye = torch.eye(6, device=maps.device, dtype=maps.dtype)
    for _ in range(iterations):
        w2 = (weights**2)[..., None]
        normal = torch.einsum("nijk,nijl->nkl", design * w2, design) + 1e-12 * eye
        rhs = torch.einsum("nijk,nij->nk", design * w2, log_h)
        params = torch.linalg.solve(normal, rhs)
        fitted = torch.exp(torch.einsum("nijk,nk->nij", design, params).clamp(max=50))
        weights = torch.where(used, fitted, torch.zeros_like(fitted))
    a, b, c, d, e, f = params.unbind(-1)
    precision = torch.stack([torch.stack([-2 * d, -e], -1), torch.stack([-e, -2 * f], -1)], -2)
    det = precision[:, 0, 0] * precision[:, 1, 1] - precision[:, 0, 1] ** 2
    valid = (precision[:, 0, 0] > _EPS) & (det > _EPS) & (used.sum(dim=(1, 2)) >= 6)
    safe = torch.where(valid[:, None, None], precision, eye[:2, :2].expand_as(precision))
    covariance = torch.linalg.inv(safe)
    offset = (covariance @ torch.stack([b, c], -1)[..., None])[..., 0]
    valid &= (offset.abs() <= radius).all(-1)
    quadratic_at_mean = (offset[:, None, :] @ safe @ offset[..., None])[:, 0, 0]
    amplitude = torch.exp((a + 0.5 * quadratic_at_mean).clamp(max=50))
    mean = torch.where(valid[:, None], centres + offset, centres)
    covariance = torch.where(
        valid[:, None, None], covariance, torch.full_like(covariance, math.inf)
    )
    amplitude = torch.where(valid, amplitude, window[:, radius, radius])
    return mean, covariance, amplitude, valid


def fit_gaussian(heatmaps: torch.Tensor, sigma: float = 2.0, iterations: int = 3) -> GaussianFit:
    """Robust least-squares fit of ``A exp(-(p - m)^T S^-1 (p - m) / 2)`` around each maximum.

    Fits ``log h`` with a quadratic in a window of radius ~3 ``sigma`` (heatmap pixels), over the
    pixels above 5 % of the maximum, weighting each residual by the fitted heatmap value and
    refitting (Guo, IEEE Signal Processing Magazine 2011): noise in the dim tails, where the log
    is unreliable, barely counts. All heatmaps are solved together as batched 6x6 systems.
    """
    peak_coords, _ = heatmap_argmax(heatmaps)
    batch, landmarks, height, width = heatmaps.shape
    mean, covariance, amplitude, _ = _fit_gaussian_rows(
        heatmaps.reshape(batch * landmarks, height, width),
        peak_coords.reshape(-1, 2),
        sigma,
        iterations,
    )
    dtype = heatmaps.dtype
    return GaussianFit(
        mean.reshape(batch, landmarks, 2).to(dtype),
        covariance.reshape(batch, landmarks, 2, 2).to(dtype),
        amplitude.reshape(batch, landmarks).to(dtype),
    )


@dataclass
class DecodedLandmarks:
    """One sample's decoded landmarks: coords (K, 2) x,y and max_activation (K,) (S-MHA, always
    of the input-resolution heatmap); covariance (K, 2, 2) in pixels² of the coords' image when
    a Gaussian was fitted, else None."""

    coords: torch.Tensor
    max_activation: torch.Tensor
    covariance: torch.Tensor | None = None

    @classmethod
    def concatenate(cls, parts: Sequence[DecodedLandmarks]) -> DecodedLandmarks:
        """The landmarks of ``parts`` (decoded separately, e.g. with their own sigmas) in order."""
        if len(parts) == 1:
            return parts[0]
        covariances = [p.covariance for p in parts]
        return cls(
            torch.cat([p.coords for p in parts]),
            torch.cat([p.max_activation for p in parts]),
            None if covariances[0] is None else torch.cat(covariances),
        )


def heatmap_to_coords(
    heatmap: torch.Tensor,
    original_size: Sequence[int],
    evaluation_mode: str,
    method: str = "argmax",
    sigma: float = 2.0,
    fit_gauss: bool = False,
) -> DecodedLandmarks:
    """Decode one sample's (K, h, w) heatmaps at model-input resolution.

    Args:
        heatmap: (K, h, w), the finest model output.
        original_size: (H, W) of the image file.
        evaluation_mode: ``scale_heatmap_first`` (bicubic upsampling to (H, W), then decode),
            ``scale_pred_coords`` (decode at (h, w), then map the point to (H, W)) or
            ``use_input_size`` (decode at (h, w); coordinates stay in input pixels).
        method: one of DECODERS; ignored when ``fit_gauss``: then the mean of a Gaussian fitted
            at input resolution is the coordinate, in every mode mapped like a point.
        sigma: the target Gaussian's sigma in input pixels.
    Returns:
        coordinates in pixels of the original image (of the input for use_input_size).
    """
    if evaluation_mode not in EVALUATION_MODES:
        raise ValueError(
            f"evaluation_mode must be one of {EVALUATION_MODES}, got {evaluation_mode!r}"
        )
    input_size = tuple(heatmap.shape[-2:])
    maps = heatmap[None].float()
    _, peak = heatmap_argmax(maps)
    covariance = None
    if fit_gauss:
        # Fitted at input resolution in every mode: bicubic upsampling adds no information to
        # the fit, only pixels (it cost ~10 ms per landmark at 1340 x 1671, 0.2 ms here).
        fit = fit_gaussian(maps, sigma)
        coords, covariance = fit.mean[0], fit.covariance[0]
    else:
        if evaluation_mode == "scale_heatmap_first":
            sigma = sigma * max(scale_factors(input_size, original_size))
            coords = decode_upsampled(maps[0], original_size, method, sigma)
            return DecodedLandmarks(coords, peak[0])
        coords = decode_heatmaps(maps, method, sigma)[0][0]
    if evaluation_mode != "use_input_size":
        coords = resize_coords(coords, input_size, original_size)
        if covariance is not None:
            scale = torch.tensor(
                scale_factors(input_size, original_size), dtype=coords.dtype, device=coords.device
            )
            covariance = covariance * scale[:, None] * scale[None, :]
    return DecodedLandmarks(coords, peak[0], covariance)


@dataclass(frozen=True)
class HeatmapDecoder:
    """How (B, K, h, w) input-resolution heatmaps become coordinates: INFERENCE.EVALUATION_MODE,
    INFERENCE.DECODING and INFERENCE.FIT_GAUSS as plain values."""

    evaluation_mode: str = "scale_heatmap_first"
    method: str = "dark"
    fit_gauss: bool = False

    def decode(
        self,
        heatmaps: torch.Tensor,
        original_sizes: torch.Tensor,
        sigma: float | Sequence[float],
    ) -> tuple[torch.Tensor, ...]:
        """Decode a batch.

        Args:
            heatmaps: (B, K, h, w) at the network input's resolution.
            original_sizes: (B, 2) H, W of each image file.
            sigma: the peaks' sigma in input pixels (sets the decoder windows); a (K,) sequence
                gives each landmark its own.
        Returns:
            coords (B, K, 2) x,y in pixels of each original image (of the input with
            ``use_input_size``), the maximum activation (B, K), and with ``fit_gauss`` the
            covariances (B, K, 2, 2) in pixels² of the same image.
        """
        per_landmark = not isinstance(sigma, int | float)
        groups = (
            [(slice(k, k + 1), float(s)) for k, s in enumerate(sigma)]
            if per_landmark
            else [(slice(None), float(sigma))]
        )
        decoded = []
        for b in range(heatmaps.shape[0]):
            parts = [
                heatmap_to_coords(
                    heatmaps[b, landmarks],
                    original_sizes[b].tolist(),
                    self.evaluation_mode,
                    method=self.method,
                    sigma=group_sigma,
                    fit_gauss=self.fit_gauss,
                )
                for landmarks, group_sigma in groups
            ]
            decoded.append(DecodedLandmarks.concatenate(parts))
        coords = torch.stack([d.coords for d in decoded])
        max_activation = torch.stack([d.max_activation for d in decoded])
        if self.fit_gauss:
            return coords, max_activation, torch.stack([d.covariance for d in decoded])
        return coords, max_activation
