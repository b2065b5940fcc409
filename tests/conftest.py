"""Shared fixtures: tiny, deliberately non-square synthetic datasets written under tmp_path."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datasets.synthetic import make_synthetic_dataset  # noqa: E402

# The tests' networks are tiny: one intra-op thread runs them fastest, and several threads
# contend badly on a busy 2-core CI machine (a 6 s test took 57 s).
torch.set_num_threads(1)

# Hand-made dataset: every image is 30 rows x 40 columns (H, W), three landmarks per sample.
HAND_SIZE = (30, 40)
HAND_COORDS = {
    "a": [[5.0, 6.0], [20.5, 10.25], [35.0, 25.0]],
    "b": [[10.0, 3.0], [0.0, 0.0], [39.0, 29.0]],
    "c": [[1.5, 2.5], [12.0, 14.0], [30.0, 20.0]],
    "t1": [[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]],
}


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a (H, W) uint8 or uint16 array as a grayscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def hand_image(seed: int, size=HAND_SIZE) -> np.ndarray:
    """A reproducible (H, W) uint8 random image."""
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def hand_samples() -> dict:
    """The hand dataset's JSON content (image paths relative to the dataset root)."""

    def sample(sample_id, **extra):
        entry = {
            "id": sample_id,
            "image": f"img/{sample_id}.png",
            "coordinates": copy.deepcopy(HAND_COORDS.get(sample_id)),  # tests mutate theirs
        }
        entry.update(extra)
        return entry

    return {
        "name": "hand",
        "description": "hand-made test data",
        "fold": -1,
        "training": [
            sample("a", patient_id="p1", suid="s1"),
            sample("b", patient_id="p2", suid="s2"),
            sample("c", patient_id="p3", suid="s3"),
        ],
        "validation": [sample("c", patient_id="p3", suid="s3")],
        "testing": [
            sample("t1", patient_id="p4", suid="s4", pixel_size=[0.5, 0.25]),
            sample("t2", patient_id="p5", suid="s5", has_annotation=False),
        ],
    }


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(autouse=True)
def fingerprint_cache(tmp_path, monkeypatch):
    """Dataset fingerprints (config_auto.cache_dir) are cached under tmp_path, not ~/.cache."""
    cache = tmp_path / "fingerprint_cache"
    monkeypatch.setenv("LANNUNET_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def hand_dataset(tmp_path):
    """(json path, dataset root) of the hand dataset: 30x40 PNGs, three landmarks per sample;
    testing holds an annotated sample with a pixel size and an unannotated one."""
    root = tmp_path / "hand"
    data = hand_samples()
    for seed, sample_id in enumerate(["a", "b", "c", "t1", "t2"]):
        write_png(root / "img" / f"{sample_id}.png", hand_image(seed))
    return write_json(root / "hand.json", data), root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Root of the kite dataset most end-to-end tests train on: 8/3/4 samples, images 40-48
    rows by 50-60 columns, ``demo.json``."""
    root = tmp_path_factory.mktemp("kites")
    make_synthetic_dataset(root, counts=(8, 3, 4), size_range=((40, 48), (50, 60)), seed=3)
    return root


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """(json path, root) of a tiny synthetic kite dataset: 3/2/3 samples, images 40-48 rows by
    56-64 columns, the last testing sample unannotated."""
    root = tmp_path_factory.mktemp("synthetic")
    json_path = make_synthetic_dataset(
        root, counts=(3, 2, 3), size_range=((40, 48), (56, 64)), seed=1, unannotated_test=1
    )
    return json_path, root


def gaussian_image(size, centre, sigma=1.2, amplitude=1.0) -> np.ndarray:
    """(H, W) float32 image of a Gaussian at sub-pixel ``centre`` x,y (pixel centres integer)."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    d2 = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2
    return (amplitude * np.exp(-d2 / (2 * sigma**2))).astype(np.float32)


def weighted_centroid(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted x,y centroid of a (H, W) image, negative values clipped to 0."""
    weights = np.clip(np.asarray(image, dtype=np.float64), 0, None)
    yy, xx = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
    total = weights.sum()
    return np.array([(weights * xx).sum() / total, (weights * yy).sum() / total])
