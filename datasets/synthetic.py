"""A synthetic landmark dataset that the project makes itself, for the demo and the tests.

Each image shows a textured, rotated and scaled "kite" (a quadrilateral with a bright rim and a
bright dot at each corner) on a noisy background; the four landmarks are its corners, so they sit
on image features a model can learn, and their positions vary far more than the model's error.
Image sizes vary and are not square, to exercise resizing.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

NUM_LANDMARKS = 4
# Corner directions of the kite (top, right, bottom, left) and their distances from its centre.
_KITE = np.array([[0.0, -0.8], [0.8, 0.0], [0.0, 1.5], [-0.6, 0.1]])


def _make_image(rng: np.random.Generator, height: int, width: int):
    yy, xx = np.mgrid[0:height, 0:width]
    image = 40 + 20 * np.sin(xx / rng.uniform(5, 9)) * np.cos(yy / rng.uniform(5, 9))
    image += rng.normal(0, 8, (height, width))
    size = rng.uniform(0.18, 0.26) * min(height, width)
    angle = np.deg2rad(rng.uniform(-30, 30))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.6) * height])
    corners = centre + (_KITE * size * rng.uniform(0.9, 1.1, (4, 1))) @ rotation.T
    polygon = np.round(corners * 16).astype(np.int32)  # cv2 sub-pixel drawing: 4 fractional bits
    canvas = np.zeros((height, width), np.float32)
    cv2.fillPoly(canvas, [polygon], 1.0, lineType=cv2.LINE_AA, shift=4)
    image += canvas * rng.uniform(60, 90)
    rim = np.zeros_like(canvas)
    cv2.polylines(rim, [polygon], True, 1.0, thickness=1, lineType=cv2.LINE_AA, shift=4)
    image += rim * 60
    for x, y in corners:
        image += 120 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2**2))
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.7)
    return np.clip(image, 0, 255).astype(np.uint8), corners


def make_synthetic_dataset(
    root: str | Path,
    json_name: str = "demo.json",
    counts: tuple[int, int, int] = (60, 12, 16),
    size_range: tuple[tuple[int, int], tuple[int, int]] = ((88, 104), (104, 128)),
    seed: int = 0,
    unannotated_test: int = 2,
) -> Path:
    """Write PNG images and a dataset JSON under ``root``; returns the JSON path.

    ``counts`` are the training, validation and testing sample counts; ``size_range`` gives the
    (min, max) of heights and of widths. The last ``unannotated_test`` testing samples have no
    coordinates. Every sample carries an extra attribute ``scanner``.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = {"name": "synthetic kites", "description": "LaNNU-Net's generated demo data", "fold": -1}
    number = 0
    for split, count in zip(("training", "validation", "testing"), counts, strict=True):
        samples = []
        for i in range(count):
            height = int(rng.integers(size_range[0][0], size_range[0][1] + 1))
            width = int(rng.integers(size_range[1][0], size_range[1][1] + 1))
            image, corners = _make_image(rng, height, width)
            name = f"images/kite_{number:04d}.png"
            cv2.imwrite(str(root / name), image)
            sample = {
                "id": f"kite_{number:04d}",
                "image": name,
                "coordinates": np.round(corners, 3).tolist(),
                "scanner": f"scanner_{number % 3}",
            }
            if split == "testing" and i >= count - unannotated_test:
                sample.update(coordinates=None, has_annotation=False)
            samples.append(sample)
            number += 1
        data[split] = samples
    json_path = root / json_name
    json_path.write_text(json.dumps(data, indent=1))
    return json_path
