"""Cutting training patches out of (augmented) images, biased towards landmarks.

Most of a full-resolution image holds no landmark: uniformly drawn patches mostly get all-zero
targets, and a heatmap network then learns to predict nothing. ``PatchSampler`` draws, with
probability ``bias``, a patch around one of the visible landmarks, at a uniformly random position
inside the patch; otherwise a uniformly placed patch (negatives teach the network what is not a
landmark).

Which landmark: a patch around one landmark also holds its neighbours, so with a uniform choice a
landmark in a cluster (lips, incisors, chin) is a target several times as often as an isolated
one (sella, porion), and the isolated ones learn last. :func:`balanced_landmark_weights` chooses
landmarks so that each lies inside about equally many patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PatchSampler:
    """Where to cut a ``patch_size`` (H, W) patch; ``bias`` = P(the patch holds a landmark)."""

    patch_size: tuple[int, int]
    bias: float
    landmark_weights: tuple[float, ...] | None = None  # choice weights (K,); None = uniform

    def corner(
        self,
        coords: np.ndarray,
        visible: np.ndarray,
        image_size: Sequence[int],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Top-left pixel (x, y) of the patch, integer, in pixels of the image.

        Args:
            coords: (K, 2) x,y landmarks in pixels of the image.
            visible: (K,) True where a landmark is annotated and inside the image.
            image_size: (H, W) of the image.
        Returns:
            (2,) int64 x, y. The patch stays inside the image where the image is larger than
            the patch; where it is smaller, the image lies inside the patch (padded there).
        """
        height, width = int(image_size[0]), int(image_size[1])
        patch_h, patch_w = self.patch_size
        low = np.array([min(0, width - patch_w), min(0, height - patch_h)])
        high = np.array([max(0, width - patch_w), max(0, height - patch_h)])
        candidates = np.flatnonzero(visible)
        if len(candidates) and rng.random() < self.bias:
            weights = None
            if self.landmark_weights is not None:
                weights = np.asarray(self.landmark_weights)[candidates]
                weights = weights / weights.sum() if weights.sum() > 0 else None
            landmark = np.asarray(coords[rng.choice(candidates, p=weights)], dtype=np.float64)
            # The landmark's pixel lands at a uniform position in the patch; clamping keeps it
            # inside because the pixel is inside the image.
            pixel = np.clip(np.floor(landmark + 0.5), 0, [width - 1, height - 1])
            offset = rng.integers(0, [patch_w, patch_h])
            corner = np.clip(pixel - offset, low, high)
        else:
            corner = rng.integers(low, high + 1)
        return corner.astype(np.int64)


def crop_patch(image: np.ndarray, corner: Sequence[int], patch_size: Sequence[int]) -> np.ndarray:
    """The (H, W) patch of ``image`` (h, w) whose top-left pixel is ``corner`` (x, y); pixels
    outside the image are 0 (the mean of a normalised image)."""
    patch_h, patch_w = int(patch_size[0]), int(patch_size[1])
    x0, y0 = int(corner[0]), int(corner[1])
    patch = np.zeros((patch_h, patch_w), dtype=image.dtype)
    src_y0, src_x0 = max(y0, 0), max(x0, 0)
    src_y1 = min(y0 + patch_h, image.shape[0])
    src_x1 = min(x0 + patch_w, image.shape[1])
    if src_y1 > src_y0 and src_x1 > src_x0:
        patch[src_y0 - y0 : src_y1 - y0, src_x0 - x0 : src_x1 - x0] = image[
            src_y0:src_y1, src_x0:src_x1
        ]
    return patch


def patch_cooccurrence(
    coords: np.ndarray, visible: np.ndarray, patch_size: Sequence[int]
) -> np.ndarray:
    """(K, K): ``C[i, j]`` = probability that landmark j lies inside a patch placed (as
    ``PatchSampler`` does) around landmark i, averaged over the images where both are visible.

    Args:
        coords: (N, K, 2) x,y of N images' landmarks, in pixels of the images patches are cut from.
        visible: (N, K) bool (False where a landmark is missing: its coords may be NaN).
        patch_size: (h, w).
    """
    patch_h, patch_w = patch_size
    offsets = np.abs(coords[:, None, :, :] - coords[:, :, None, :])  # (N, i, j, 2)
    # A uniform position of i inside the patch holds j with the overlap of two patch-sized
    # intervals offset by |j - i| (borders of the image ignored).
    inside = np.clip(1 - offsets[..., 0] / patch_w, 0, 1) * np.clip(
        1 - offsets[..., 1] / patch_h, 0, 1
    )
    both = visible[:, :, None] & visible[:, None, :]
    counts = both.sum(axis=0)
    held = np.where(both, inside, 0.0).sum(axis=0)  # a missing landmark's NaN counts nowhere
    return np.where(counts > 0, held / np.maximum(counts, 1), 0.0)


def balanced_landmark_weights(cooccurrence: np.ndarray, iterations: int = 500) -> np.ndarray:
    """(K,) probabilities of choosing each landmark to place a patch around, such that the
    expected number of patches holding landmark j, ``sum_i p_i C[i, j]``, is as equal over j as
    non-negative ``p`` allow (multiplicative updates that solve ``C^T p = const``; a landmark
    whose neighbours already cover it is chosen less).

    Args:
        cooccurrence: (K, K) from :func:`patch_cooccurrence`.
    """
    matrix = np.asarray(cooccurrence, dtype=np.float64)
    count = len(matrix)
    weights = np.full(count, 1.0 / count)
    row_sums = np.maximum(matrix.sum(axis=1), 1e-12)
    for _ in range(iterations):
        coverage = np.maximum(matrix.T @ weights, 1e-12)
        weights = weights * (matrix @ (1.0 / coverage)) / row_sums
        weights /= weights.sum()
    return weights
