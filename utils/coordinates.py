"""The one coordinate convention of LaNNU-Net, and the resizes that must respect it.

- A landmark is ``(x, y)`` = (column, row), a float, in pixels of a named image.
- Integer values are pixel centres: ``(i, j)`` is the centre of ``array[j, i]``; the image covers
  ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
- Sizes are ``(H, W)`` = ``array.shape[-2:]``. PIL's ``(W, H)`` appears only inside image I/O.
- Resizing an image from ``(H, W)`` to ``(h, w)`` maps ``x' = (x + 0.5) * w / W - 0.5`` (and the
  same for y). This is the centre-aligned mapping of OpenCV's resize and of torch's
  ``interpolate(..., align_corners=False)``, which the image resizes here use.
- A vertical flip of an image of height H maps ``y' = H - 1 - y``; a horizontal flip of an
  image of width W maps ``x' = W - 1 - x`` and swaps the landmarks of each left/right pair.
- A missing landmark is ``(NaN, NaN)``; it lies on no image.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = np.ndarray | torch.Tensor


def scale_factors(from_size: Sequence[int], to_size: Sequence[int]) -> tuple[float, float]:
    """``(sx, sy)``: how many pixels of ``to_size`` one pixel of ``from_size`` spans."""
    (from_h, from_w), (to_h, to_w) = from_size, to_size
    return to_w / from_w, to_h / from_h


def resize_coords(coords: ArrayLike, from_size: Sequence[int], to_size: Sequence[int]) -> ArrayLike:
    """Map ``(..., 2)`` x,y coordinates in pixels of an image of size ``from_size`` (H, W) to the
    same points in pixels of that image resized to ``to_size`` (H, W)."""
    sx, sy = scale_factors(from_size, to_size)
    if isinstance(coords, torch.Tensor):
        if not coords.is_floating_point():
            coords = coords.double()
        scale = torch.tensor([sx, sy], dtype=coords.dtype, device=coords.device)
    else:
        coords = np.asarray(coords, dtype=np.float64)
        scale = np.array([sx, sy])
    return (coords + 0.5) * scale - 0.5


def flip_coords_vertical(coords: ArrayLike, height: int) -> ArrayLike:
    """``(..., 2)`` x,y coordinates after flipping an image of ``height`` rows upside down."""
    flipped = coords.clone() if isinstance(coords, torch.Tensor) else np.array(coords, dtype=float)
    flipped[..., 1] = height - 1 - flipped[..., 1]
    return flipped


def flip_coords_horizontal(coords: ArrayLike, width: int) -> ArrayLike:
    """``(..., 2)`` x,y coordinates after mirroring an image of ``width`` columns left-right
    (the landmarks keep their order: :func:`flip_permutation` swaps the pairs)."""
    flipped = coords.clone() if isinstance(coords, torch.Tensor) else np.array(coords, dtype=float)
    flipped[..., 0] = width - 1 - flipped[..., 0]
    return flipped


def flip_permutation(num_landmarks: int, pairs: Sequence[Sequence[int]]) -> list[int]:
    """Landmark order after a horizontal flip: landmark k of the flipped image is landmark
    ``perm[k]`` of the original (the two members of each pair swap; identity without pairs)."""
    perm = list(range(num_landmarks))
    for i, j in pairs:
        perm[i], perm[j] = int(j), int(i)
    return perm


def coords_inside(coords: ArrayLike, size: Sequence[int]) -> ArrayLike:
    """Boolean ``(...,)``: which ``(..., 2)`` x,y points lie on an image of ``size`` (H, W)."""
    height, width = size
    x, y = coords[..., 0], coords[..., 1]
    return (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


def position_channels(
    patch_size: Sequence[int], corner: Sequence[int], image_size: Sequence[int]
) -> np.ndarray:
    """Where each pixel of a patch lies in its image, as two input channels for the network.

    Args:
        patch_size: (h, w) of the patch.
        corner: x, y of the patch's top-left pixel in pixels of the image (may be negative).
        image_size: (H, W) of the image.
    Returns:
        (2, h, w) float32: the x and the y of each pixel centre, scaled so that the image spans
        [-1, 1] (``x -> (2x + 1) / W - 1``); 0 where the patch lies outside the image, as the
        image channel is there (patches and stitched windows are padded with zeros).
    """
    patch_h, patch_w = int(patch_size[0]), int(patch_size[1])
    height, width = int(image_size[0]), int(image_size[1])
    x = np.arange(patch_w) + int(corner[0])
    y = np.arange(patch_h) + int(corner[1])
    x_scaled = (2 * x + 1) / width - 1
    y_scaled = (2 * y + 1) / height - 1
    inside = ((y >= 0) & (y < height))[:, None] & ((x >= 0) & (x < width))[None, :]
    channels = np.stack(
        [
            np.broadcast_to(x_scaled[None, :], (patch_h, patch_w)),
            np.broadcast_to(y_scaled[:, None], (patch_h, patch_w)),
        ]
    )
    return (channels * inside).astype(np.float32)


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a 2D ``(H, W)`` float image to ``size`` (h, w), centre-aligned.

    Area averaging when shrinking (no aliasing), bilinear when enlarging; both follow the
    mapping of :func:`resize_coords`.
    """
    height, width = int(size[0]), int(size[1])
    if (height, width) == image.shape[:2]:
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def resize_heatmaps(heatmaps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic, centre-aligned resize of ``(B, K, H, W)`` heatmaps to ``size`` (h, w)."""
    return F.interpolate(
        heatmaps, size=tuple(int(s) for s in size), mode="bicubic", align_corners=False
    )
