"""Dataset JSON → samples → model inputs.

The JSON holds ``name``, ``description``, ``fold`` and the lists ``training``, ``validation`` and
``testing`` of samples ``{"id", "image", "coordinates"}`` (image paths relative to the dataset
root; a testing sample may have ``"has_annotation": false`` and ``"coordinates": null``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from datasets.landmark_info import check_landmark_count, read_landmark_info, select_landmarks
from datasets.patch_sampling import PatchSampler, crop_patch
from transforms.dataloader_transforms import Augmentation
from utils.coordinates import coords_inside, position_channels, resize_coords, resize_image
from utils.errors import DataError
from utils.image_io import normalise_image, read_image

logger = logging.getLogger(__name__)

SPLITS = ("training", "validation", "testing")


def annotation_path(src_targets: str | Path, fold: int) -> Path:
    """``src_targets/fold<fold>.json`` for fold >= 0, else ``src_targets`` (not checked)."""
    return Path(src_targets) / f"fold{fold}.json" if fold >= 0 else Path(src_targets)


def resolve_annotation_file(src_targets: str | Path, fold: int) -> Path:
    """The JSON to read (:func:`annotation_path`), checked to exist."""
    if fold >= 0 and Path(src_targets).is_file():
        raise DataError(
            f"TRAINER.FOLD = {fold} reads fold{fold}.json from the folder DATASET.SRC_TARGETS, "
            f"but {src_targets} is a file; set TRAINER.FOLD -1 to read this file"
        )
    path = annotation_path(src_targets, fold)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    return path


def prepared_annotation_file(
    dataset_class: type[DatasetBase], root: str | Path, src_targets: str | Path, fold: int
) -> Path:
    """:func:`resolve_annotation_file`, after ``dataset_class.prepare_data`` had its chance to
    create or convert the data (the synthetic demo generates itself)."""
    dataset_class.prepare_data(Path(root), annotation_path(src_targets, fold))
    return resolve_annotation_file(src_targets, fold)


def read_dataset_json(path: str | Path) -> dict:
    """Parse and check the top level of a dataset JSON; errors name the file."""
    path = Path(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level must be an object with training/validation/testing")
    for split in SPLITS:
        if not isinstance(data.get(split, []), list):
            raise DataError(f"{path}: '{split}' must be a list of samples")
    return data


def coordinates_in_file(data: dict) -> int:
    """Coordinates per sample in a parsed dataset JSON (the first annotated sample's; 0 if
    none)."""
    for split in SPLITS:
        for raw in data.get(split, []):
            if isinstance(raw, dict) and isinstance(raw.get("coordinates"), list):
                return len(raw["coordinates"])
    return 0


@dataclass
class Sample:
    """One JSON sample. ``coords`` (K, 2): x,y of the selected landmarks in original pixels,
    NaN where a landmark is missing; None when the sample is unannotated (or all missing)."""

    id: str
    image_path: Path
    coords: np.ndarray | None
    pixel_size: tuple[float, float] | None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def has_annotation(self) -> bool:
        return self.coords is not None


@dataclass
class CheckedFields:
    """What :func:`check_sample_fields` found in one raw JSON sample."""

    coords: np.ndarray | None  # (K, 2) of the selected landmarks; None: unannotated or bad
    num_coords: int | None  # landmarks in the file (all of them); None: none or malformed
    pixel_size: tuple[float, float] | None
    errors: list[str]  # empty when the sample can be used


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_coordinates(raw: Any) -> tuple[np.ndarray | None, str | None]:
    """A JSON ``coordinates`` list as (K, 2) float64 x,y, a missing landmark (``null`` or
    ``[null, null]``) as NaN; or (None, the problem)."""
    if not isinstance(raw, list):
        return None, "coordinates must be a list of [x, y] pairs"
    coords = np.full((len(raw), 2), np.nan)
    for k, point in enumerate(raw):
        if point is None or (isinstance(point, list) and point == [None, None]):
            continue
        if not isinstance(point, list) or len(point) != 2:
            return None, "coordinates must be a list of [x, y] pairs"
        if not all(map(_number, point)):
            if any(isinstance(v, float) and not math.isfinite(v) for v in point):
                return None, "coordinates contain NaN or infinity"
            return None, (
                f"coordinates must be a list of [x, y] numbers, or null for a missing landmark "
                f"(landmark {k}: {point!r})"
            )
        coords[k] = point
    return coords, None


def check_sample_fields(
    raw: dict,
    landmarks: list[int],
    attribute_keys: list[str],
    allow_unannotated: bool,
    num_coords: int | None,
) -> CheckedFields:
    """Check a raw sample's coordinates, pixel size and extra attributes (its ``id`` and
    ``image`` already checked), against ``num_coords`` landmarks of earlier samples (None: it
    is the first). The dataset refuses the first error, the data check reports them all."""
    errors: list[str] = []
    coords = count = None
    annotated = raw.get("has_annotation", True)
    if annotated and raw.get("coordinates") is not None:
        all_coords, problem = parse_coordinates(raw["coordinates"])
        if problem:
            errors.append(problem)
        else:
            count = len(all_coords)
            bad = [i for i in landmarks if not 0 <= i < count]
            if num_coords is not None and count != num_coords:
                errors.append(f"has {count} landmarks, earlier samples have {num_coords}")
            elif bad:
                errors.append(
                    f"DATASET.LANDMARKS {landmarks} asks for index {bad[0]} but the sample has "
                    f"landmarks 0..{count - 1}"
                )
            else:
                coords = all_coords[landmarks] if landmarks else all_coords
                if np.isnan(coords).all():  # every landmark missing: as "has_annotation": false
                    coords = None
                    if not allow_unannotated:
                        errors.append(
                            "every landmark is null (no annotation); unannotated samples "
                            "belong in 'testing'"
                        )
    elif annotated:
        errors.append('coordinates are null; set "has_annotation": false')
    elif not allow_unannotated:
        errors.append("has no annotation; unannotated samples belong in 'testing'")
    pixel_size = raw.get("pixel_size")
    if pixel_size is not None:
        valid = (
            isinstance(pixel_size, list)
            and len(pixel_size) == 2
            and all(
                isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in pixel_size
            )
        )
        if valid:
            pixel_size = (float(pixel_size[0]), float(pixel_size[1]))
        else:
            errors.append("pixel_size must be [x, y] mm per pixel, both > 0")
            pixel_size = None
    missing = [key for key in attribute_keys if key not in raw]
    if missing:
        errors.append(f"lacks the attributes {missing} that the dataset class needs")
    return CheckedFields(coords, count, pixel_size, errors)


def parse_samples(
    raw_samples: list[dict],
    json_path: Path,
    root: Path,
    landmarks: list[int],
    attribute_keys: list[str],
    allow_unannotated: bool = True,
) -> list[Sample]:
    """Check every raw JSON sample and keep the selected landmarks. Errors name the sample.

    ``allow_unannotated`` False (training, validation) refuses samples without coordinates."""
    samples, seen_ids, n_coords = [], set(), None
    for position, raw in enumerate(raw_samples):
        if not isinstance(raw, dict) or "id" not in raw or not isinstance(raw.get("image"), str):
            raise DataError(f"{json_path}: sample #{position} needs an 'id' and an 'image' path")
        sample_id = str(raw["id"])
        where = f"{json_path}: sample '{sample_id}'"
        if sample_id in seen_ids:
            raise DataError(f"{where}: duplicate id")
        seen_ids.add(sample_id)
        checked = check_sample_fields(raw, landmarks, attribute_keys, allow_unannotated, n_coords)
        if checked.errors:
            raise DataError(f"{where}: {checked.errors[0]}")
        n_coords = n_coords or checked.num_coords
        coords, pixel_size = checked.coords, checked.pixel_size
        if not (root / raw["image"]).is_file():
            raise DataError(f"{where}: image file not found: {root / raw['image']}")
        samples.append(
            Sample(
                id=sample_id,
                image_path=root / raw["image"],
                coords=coords,
                pixel_size=pixel_size,
                attributes={key: raw[key] for key in attribute_keys},
            )
        )
    return samples


class DatasetBase(Dataset):
    """One split of a dataset JSON, resized to ``input_size`` (H, W) (None: kept at its original
    size), optionally augmented, and optionally cut into patches (``with_patches``).

    ``__getitem__`` returns a dict of tensors:
      - ``image`` (C, H, W) float32 (the patch, with a patch sampler): channel 0 the image,
        normalised per image; with ``with_position`` two more channels, the x and y of each
        pixel in the (resized, augmented) whole image (``utils.coordinates.position_channels``);
      - ``coords`` (K, 2) x,y in pixels of the resized image after augmentation (zeros if
        unannotated, NaN where a landmark is missing); with a patch sampler still of the whole
        image, not of the patch;
      - ``visible`` (K,) float32: 1 where the landmark is annotated and inside ``image`` (0
        where missing);
      - ``patch_corner`` (2,) x,y of ``image``'s top-left pixel in the resized image (0, 0
        without a patch sampler);
      - ``original_size`` (2,) H, W of the image file; ``pixel_size`` (2,) x, y in mm (NaN if
        unknown); ``index`` (the sample's position in ``self.samples``).

    Subclasses list extra JSON keys in ``additional_sample_attribute_keys``; their values are
    checked to exist and are written next to each prediction in the results.
    """

    additional_sample_attribute_keys: list[str] = []

    @classmethod
    def prepare_data(cls, root: Path, annotation_file: Path) -> None:
        """Called before the annotation file is read; a subclass may create or convert data
        here (the synthetic demo generates itself). The base class does nothing."""

    def __init__(
        self,
        json_path: str | Path,
        split: str,
        root: str | Path,
        input_size: tuple[int, int] | None,
        landmarks: list[int] | None = None,
        augmentation: Augmentation | None = None,
        cache_data: bool = True,
        default_pixel_size: tuple[float, float] | None = None,
        max_samples: int = -1,
        with_position: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.json_path = Path(json_path)
        self.split = split
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.augmentation = augmentation
        self.patch_sampler: PatchSampler | None = None  # with_patches sets it
        self.with_position = with_position
        self.default_pixel_size = tuple(default_pixel_size) if default_pixel_size else None
        data = read_dataset_json(self.json_path)
        raw = data.get(split, [])
        if max_samples >= 0:
            raw = raw[:max_samples]
        self.landmarks = list(landmarks or [])
        self.samples = parse_samples(
            raw,
            self.json_path,
            Path(root),
            self.landmarks,
            list(self.additional_sample_attribute_keys),
            allow_unannotated=split == "testing",
        )
        self.num_landmarks = self._count_landmarks(data)
        info = read_landmark_info(data, self.json_path)
        count = coordinates_in_file(data)
        problems = check_landmark_count(info, count, self.json_path) if count else []
        if problems:
            raise DataError(problems[0])
        # names (K,) of the served landmarks, or None; flip pairs as positions among them
        self.landmark_names, self.flip_pairs = select_landmarks(
            info, self.landmarks, self.json_path
        )
        self._cache: dict[int, tuple[np.ndarray, tuple[int, int], tuple | None]] = {}
        if cache_data and self.samples:
            for index in tqdm(
                range(len(self.samples)), desc=f"caching {split}", leave=False, disable=None
            ):
                self._cache[index] = self._load(index)

    def _count_landmarks(self, data: dict) -> int:
        if self.landmarks:
            return len(self.landmarks)
        annotated = [s for s in self.samples if s.has_annotation]
        if annotated:
            return len(annotated[0].coords)
        return coordinates_in_file(data)  # an unannotated test list: count from any split

    def __len__(self) -> int:
        return len(self.samples)

    def landmark_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Every annotated sample's landmarks before augmentation: coords (N, K, 2) x,y in pixels
        of the images this dataset serves (resized to ``input_size``, if set; NaN where
        missing), and visible (N, K) bool (inside the image; False where missing)."""
        coords, visible = [], []
        for index, sample in enumerate(self.samples):
            if sample.has_annotation:
                image, original_size, _ = self._cached_or_loaded(index)
                points = self._served_coords(sample, original_size)
                coords.append(points)
                visible.append(coords_inside(points, image.shape))
        count = self.num_landmarks
        if not coords:
            return np.zeros((0, count, 2)), np.zeros((0, count), dtype=bool)
        return np.stack(coords), np.stack(visible)

    def with_patches(self, patch_sampler: PatchSampler) -> DatasetBase:
        """The same samples (sharing the image cache) cut into patches by ``patch_sampler``."""
        view = copy.copy(self)
        view.patch_sampler = patch_sampler
        return view

    def _load(self, index: int) -> tuple[np.ndarray, tuple[int, int], tuple | None]:
        """Decode, normalise and resize one image: (image (H, W) at input size, or original
        size if ``input_size`` is None; original (H, W); pixel size [x, y] mm or None)."""
        sample = self.samples[index]
        try:
            loaded = read_image(sample.image_path)
        except DataError as err:
            raise DataError(f"sample '{sample.id}': {err}") from None
        original_size = loaded.pixels.shape
        pixel_size = sample.pixel_size or loaded.pixel_size or self.default_pixel_size
        known = sample.has_annotation and np.isfinite(sample.coords).all(axis=1)
        if sample.has_annotation and not coords_inside(sample.coords[known], original_size).all():
            logger.warning(
                "sample '%s': a landmark lies outside its %dx%d image", sample.id, *original_size
            )
        image = loaded.pixels
        if self.input_size is not None:
            image = resize_image(image, self.input_size)
        # normalised by the original's statistics: the same as before resizing, but cheaper
        return normalise_image(image, statistics_of=loaded.pixels), original_size, pixel_size

    def _cached_or_loaded(self, index: int) -> tuple[np.ndarray, tuple[int, int], tuple | None]:
        return self._cache.get(index) or self._load(index)

    def _served_coords(self, sample: Sample, original_size: tuple[int, int]) -> np.ndarray:
        """(K, 2) x,y of an annotated sample's landmarks in pixels of the image served (kept
        exact at the original size: a resize to the same size is not, in floating point)."""
        if self.input_size is None:
            return np.asarray(sample.coords, dtype=np.float64)
        return resize_coords(sample.coords, original_size, self.input_size)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """``item``: an index, or ``(index, augmentation seed)`` from SeededEpochSampler."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        image, original_size, pixel_size = self._cached_or_loaded(index)
        sample = self.samples[index]
        if not sample.has_annotation:
            coords = np.zeros((self.num_landmarks, 2))
        else:
            coords = self._served_coords(sample, original_size)
        if self.augmentation is not None:
            if seed is None:
                seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
            image, coords = self.augmentation(image, coords, seed)
        visible = coords_inside(coords, image.shape) & sample.has_annotation
        corner = np.zeros(2, dtype=np.int64)
        whole_size = image.shape
        if self.patch_sampler is not None:
            # Without augmentation (validation) the patch depends on the sample alone.
            rng = np.random.default_rng([index if seed is None else seed, 1])
            corner = self.patch_sampler.corner(coords, visible, image.shape, rng)
            image = crop_patch(image, corner, self.patch_sampler.patch_size)
            visible = visible & coords_inside(coords - corner, image.shape)
        channels = [image[None]]
        if self.with_position:
            channels.append(position_channels(image.shape, corner, whole_size))
        return {
            "image": torch.from_numpy(np.concatenate(channels).astype(np.float32, copy=False)),
            "coords": torch.as_tensor(coords, dtype=torch.float32),
            "visible": torch.as_tensor(visible, dtype=torch.float32),
            "patch_corner": torch.as_tensor(corner, dtype=torch.float32),
            "original_size": torch.tensor(original_size, dtype=torch.int64),
            "pixel_size": torch.tensor(
                pixel_size if pixel_size else (math.nan, math.nan), dtype=torch.float64
            ),
            "index": torch.tensor(index),
        }
