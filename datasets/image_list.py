"""Images to predict without a dataset JSON: a list of files, loaded as a dataset's testing
list is (the same decoding, normalisation and resizing: DatasetBase._load)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from datasets.dataset_base import DatasetBase, Sample
from utils.errors import DataError
from utils.image_discovery import ImageInput

logger = logging.getLogger(__name__)


class ImageListDataset(DatasetBase):
    """Unannotated images, each decoded once when the dataset is made; those that cannot be
    read are left out and listed in ``failed`` as (path, one-line reason).

    Args:
        images: the files and their ids (utils/image_discovery.py).
        input_size: (H, W) the network's images are resized to; None = kept at their size.
        landmarks: the JSON indices the model predicts (written in the ``landmark`` column).
        default_pixel_size: [x, y] mm per pixel where the file stores none (DICOM does).
        with_position: add the x, y position channels (patch models).
        load_threads: images decoded at once (PNG inflation, normalising and resizing release
            the GIL); None = the number of CPU cores.
    """

    def __init__(
        self,
        images: Sequence[ImageInput],
        input_size: Sequence[int] | None,
        landmarks: Sequence[int],
        default_pixel_size: Sequence[float] | None = None,
        with_position: bool = False,
        load_threads: int | None = None,
    ) -> None:
        # What DatasetBase.__init__ sets from a JSON, set from the list instead.
        self.json_path = Path("images given to predict")
        self.split = "testing"
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.augmentation = None
        self.patch_sampler = None
        self.with_position = with_position
        self.default_pixel_size = tuple(default_pixel_size) if default_pixel_size else None
        self.landmarks = list(landmarks)
        self.num_landmarks = len(self.landmarks)
        # predict.py names landmarks from the bundle (inference/image_prediction.py)
        self.landmark_names, self.flip_pairs = None, []
        self.samples = [Sample(image.id, image.path, None, None) for image in images]
        self.failed: list[tuple[Path, str]] = []
        self._cache = {}
        threads = min(load_threads or os.cpu_count() or 1, max(len(self.samples), 1))
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(self._load_or_reason, range(len(self.samples))))
        loaded = []
        for sample, result in zip(self.samples, results, strict=True):
            if isinstance(result, str):
                logger.error("skipped %s: %s", sample.image_path, result)
                self.failed.append((sample.image_path, result))
            else:
                loaded.append((sample, result))
        self.samples = [sample for sample, _ in loaded]
        self._cache = {index: data for index, (_, data) in enumerate(loaded)}

    def _load_or_reason(self, index: int) -> tuple | str:
        """The decoded image of sample ``index``, or the one-line reason it cannot be read."""
        try:
            return self._load(index)
        except DataError as err:
            return str(err)
