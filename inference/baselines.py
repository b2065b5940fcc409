"""Reference predictors that a trained model must beat by far."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_position_predictions(
    train_coords: Sequence[np.ndarray],
    train_sizes: Sequence[Sequence[int]],
    test_sizes: Sequence[Sequence[int]],
) -> np.ndarray:
    """Predict every landmark at its mean training position, relative to the image size.

    Args:
        train_coords: per training image (K, 2) x,y in its pixels (NaN where missing: left
            out of that landmark's mean).
        train_sizes: per training image (H, W).
        test_sizes: per test image (H, W).
    Returns:
        (N_test, K, 2) x,y in pixels of each test image.
    """
    relative = [
        (np.asarray(c) + 0.5) / np.array([w, h])
        for c, (h, w) in zip(train_coords, train_sizes, strict=True)
    ]
    mean = np.nanmean(relative, axis=0)
    return np.stack([mean * np.array([w, h]) - 0.5 for h, w in test_sizes])
