"""ImageListDataset: images decoded in parallel threads, in their given order, with the
unreadable ones listed and left out."""

from __future__ import annotations

import numpy as np
from PIL import Image

from datasets.image_list import ImageListDataset
from utils.image_discovery import ImageInput


def test_threaded_loading_keeps_order_and_lists_unreadable_files(tmp_path):
    rng = np.random.default_rng(0)
    images = []
    for n in range(5):
        path = tmp_path / f"image{n}.png"
        Image.fromarray(rng.integers(0, 255, (30 + n, 20), dtype=np.uint8)).save(path)
        images.append(ImageInput(path, f"image{n}"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    images.insert(2, ImageInput(broken, "broken"))

    serial = ImageListDataset(images, (16, 12), [0, 1], load_threads=1)
    threaded = ImageListDataset(images, (16, 12), [0, 1], load_threads=3)

    for dataset in (serial, threaded):
        assert [sample.id for sample in dataset.samples] == [f"image{n}" for n in range(5)]
        assert [path for path, _ in dataset.failed] == [broken]
        assert "broken.png" in dataset.failed[0][1]
    for n in range(5):
        first, second = serial[n], threaded[n]
        assert first["original_size"].tolist() == [30 + n, 20]
        assert np.array_equal(first["image"].numpy(), second["image"].numpy())
