"""Dataset fingerprint and integrity check: every sample of a dataset JSON read once.

The fingerprint summarises what the automatic configuration (config_auto.py) needs (image sizes,
landmark count and spread) and what a user should see before training (formats, pixel sizes,
intensity ranges); the check lists every defect with the sample's id instead of stopping at the
first, so that one run of ``python main.py --cfg x.yaml --check-data`` shows all of them.

Errors stop a training run (the sample could not be used); warnings do not (a landmark outside
its image is kept but marked invisible, as the dataset class does).
Coordinates are x,y in pixels of the original image (utils/coordinates.py); sizes are (H, W).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from datasets.dataset_base import (
    SPLITS,
    check_sample_fields,
    coordinates_in_file,
    read_dataset_json,
)
from datasets.landmark_info import check_landmark_count, read_landmark_info, select_landmarks
from utils.coordinates import coords_inside, resize_coords
from utils.errors import DataError
from utils.image_io import read_image

logger = logging.getLogger(__name__)

FINGERPRINT_VERSION = 3  # part of the cache key: bump when the fingerprint's content changes
# (3: missing landmarks, landmark names, flip pairs and the checks of pairs and coincidences)
COINCIDE_PX = 0.5  # two landmarks closer than this (original pixels) coincide
COINCIDE_SHARE = 0.1  # ... a warning when they do in at least this share of samples (and 2)


@dataclass
class Issue:
    """One defect of one sample (``sample_id`` None: of the sample at ``position``)."""

    severity: str  # "error" or "warning"
    split: str
    sample_id: str | None
    position: int
    message: str

    def __str__(self) -> str:
        if self.position < 0:  # of the dataset as a whole
            return f"{self.severity}: {self.message}"
        who = f"sample '{self.sample_id}'" if self.sample_id is not None else f"#{self.position}"
        return f"{self.severity}: {self.split} {who}: {self.message}"


@dataclass
class Fingerprint:
    """What reading every sample once found.

    ``sizes`` (N, 2) H, W and ``intensity`` (N, 2) min, max of the raw pixel values of each
    readable image; ``pixel_sizes``: how many images have each ``"x x y"`` mm pixel size (or
    ``"unknown"``); ``landmark_std_px`` (K, 2) x, y standard deviation of each landmark over the
    annotated samples in original pixels, ``landmark_std_rel`` (K, 2) the same as a fraction of
    the image's width and height; ``training_landmarks_rel`` (N, K, 2) each annotated training
    sample's landmarks in unit-image coordinates (utils/coordinates.py's resize to a 1 x 1
    image: -0.5 ... 0.5 across the image), for rules that depend on the layout (landmark
    spacing, augmentation), NaN where a landmark is missing; ``missing_landmarks``: per split,
    (K,) how many annotated samples lack each landmark (``null`` coordinates);
    ``landmark_names`` (K,) or None and ``flip_pairs`` (positions among the K landmarks) as the
    JSON declares them for the selected landmarks; ``selected_landmarks``: DATASET.LANDMARKS.
    """

    json_path: str
    split_counts: dict[str, int]
    formats: dict[str, int]
    sizes: list[list[int]]
    intensity: list[list[float]]
    pixel_sizes: dict[str, int]
    num_landmarks: int
    landmarks_outside: int
    landmark_std_px: list[list[float]]
    landmark_std_rel: list[list[float]]
    training_landmarks_rel: list[list[list[float]]] = field(default_factory=list)
    missing_landmarks: dict[str, list[int]] = field(default_factory=dict)
    landmark_names: list[str] | None = None
    flip_pairs: list[list[int]] = field(default_factory=list)
    selected_landmarks: list[int] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.severity == "warning"]

    @property
    def landmark_ids(self) -> list[int]:
        """The JSON indices of the K landmarks (DATASET.LANDMARKS, or all)."""
        return list(self.selected_landmarks) or list(range(self.num_landmarks))

    def median_size(self) -> tuple[float, float]:
        """(H, W): the median height and the median width of the images."""
        if not self.sizes:
            raise DataError(f"{self.json_path}: no readable image to plan from")
        sizes = np.asarray(self.sizes, dtype=np.float64)
        return float(np.median(sizes[:, 0])), float(np.median(sizes[:, 1]))

    def median_aspect(self) -> float:
        """Median of H / W over the images."""
        sizes = np.asarray(self.sizes, dtype=np.float64)
        return float(np.median(sizes[:, 0] / sizes[:, 1]))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        data = json.loads(text)
        data["issues"] = [Issue(**issue) for issue in data["issues"]]
        return cls(**data)


def compute_fingerprint(
    json_path: str | Path,
    root: str | Path,
    landmarks: list[int] | None = None,
    default_pixel_size: tuple[float, float] | None = None,
    attribute_keys: list[str] | None = None,
) -> Fingerprint:
    """Read every sample of every split of ``json_path`` once and check it.

    Args:
        json_path: the dataset JSON; a malformed file raises DataError (nothing else to check).
        root: the folder the JSON's image paths are relative to.
        landmarks: DATASET.LANDMARKS (indices; [] or None = all).
        default_pixel_size: DATASET.PIXEL_SIZE [x, y] mm, for images without their own.
        attribute_keys: extra JSON keys the dataset class needs in every sample.
    """
    json_path, root = Path(json_path), Path(root)
    landmarks = list(landmarks or [])
    data = read_dataset_json(json_path)
    info = read_landmark_info(data, json_path)
    names, pairs = select_landmarks(info, landmarks, json_path)  # a half pair: DataError
    issues: list[Issue] = [
        Issue("error", "", None, -1, problem)
        for problem in check_landmark_count(info, coordinates_in_file(data), json_path)
    ]
    annotated: list[tuple[str, str, np.ndarray]] = []  # (split, id, (K, 2) original px)
    counts, formats, pixel_sizes = {}, Counter(), Counter()
    sizes, intensity, rel_coords, px_coords, training_rel = [], [], [], [], []
    n_coords, outside = None, 0
    first_split_of_id: dict[str, str] = {}
    total = sum(len(data.get(split, [])) for split in SPLITS)
    progress = tqdm(total=total, desc="checking data", leave=False, disable=None)
    for split in SPLITS:
        raws = data.get(split, [])
        counts[split] = len(raws)
        for position, raw in enumerate(raws):
            progress.update()
            if (
                not isinstance(raw, dict)
                or "id" not in raw
                or not isinstance(raw.get("image"), str)
            ):
                issues.append(
                    Issue("error", split, None, position, "needs an 'id' and an 'image' path")
                )
                continue
            sample_id = str(raw["id"])
            errors: list[str] = []
            warnings: list[str] = []
            if first_split_of_id.get(sample_id) == split:
                errors.append("duplicate id")
            elif sample_id in first_split_of_id:
                warnings.append(f"the same id is also in '{first_split_of_id[sample_id]}'")
            first_split_of_id.setdefault(sample_id, split)
            checked = check_sample_fields(
                raw, landmarks, attribute_keys or [], split == "testing", n_coords
            )
            errors += checked.errors
            n_coords = n_coords or checked.num_coords
            coords, pixel_size = checked.coords, checked.pixel_size
            path = root / raw["image"]
            loaded = None
            try:
                loaded = read_image(path)  # names a missing file as "image file not found"
            except DataError as err:
                errors.append(str(err))
            if loaded is not None:
                size = loaded.pixels.shape
                sizes.append([int(size[0]), int(size[1])])
                formats[path.suffix.lower()] = formats[path.suffix.lower()] + 1
                intensity.append([float(loaded.pixels.min()), float(loaded.pixels.max())])
                spacing = pixel_size or loaded.pixel_size or default_pixel_size
                key = f"{spacing[0]:g} x {spacing[1]:g}" if spacing else "unknown"
                pixel_sizes[key] += 1
                if coords is not None:
                    annotated.append((split, sample_id, coords))
                    inside = coords_inside(coords, size) | np.isnan(coords).any(axis=1)
                    for index in np.flatnonzero(~inside):
                        outside += 1
                        x, y = coords[index]
                        warnings.append(
                            f"landmark {index} at x={x:g}, y={y:g} lies outside the "
                            f"{size[0]}x{size[1]} (HxW) image"
                        )
                    px_coords.append(coords)
                    # fractions of the image: the unit-image resize, whose -0.5 cancels in the std
                    rel_coords.append(resize_coords(coords, size, (1, 1)))
                    if split == "training":
                        training_rel.append(np.round(rel_coords[-1], 6).tolist())
            issues += [Issue("error", split, sample_id, position, m) for m in errors]
            issues += [Issue("warning", split, sample_id, position, m) for m in warnings]
    progress.close()
    num_landmarks = len(landmarks) if landmarks else (n_coords or 0)
    std_px = _nan_std(px_coords)
    std_rel = _nan_std(rel_coords)
    missing = {
        split: np.sum(
            [np.isnan(c).any(axis=1) for s, _, c in annotated if s == split], axis=0, dtype=int
        ).tolist()
        if any(s == split for s, _, _ in annotated)
        else [0] * num_landmarks
        for split in SPLITS
    }
    ids = landmarks or list(range(num_landmarks))  # messages name JSON indices
    warnings = check_pair_sides(annotated, pairs, ids) + check_coinciding(annotated, ids)
    issues += [Issue("warning", "", None, -1, message) for message in warnings]
    return Fingerprint(
        json_path=str(json_path),
        split_counts=counts,
        formats=dict(formats),
        sizes=sizes,
        intensity=intensity,
        pixel_sizes=dict(pixel_sizes),
        num_landmarks=num_landmarks,
        landmarks_outside=outside,
        landmark_std_px=std_px,
        landmark_std_rel=std_rel,
        training_landmarks_rel=training_rel,
        missing_landmarks=missing,
        landmark_names=names,
        flip_pairs=[list(pair) for pair in pairs],
        selected_landmarks=landmarks,
        issues=issues,
    )


def _nan_std(points: list[np.ndarray]) -> list:
    """(K, 2) standard deviation over samples, missing landmarks left out (NaN if all are)."""
    if not points:
        return []
    stacked = np.asarray(points, dtype=np.float64)
    known = np.isfinite(stacked)
    count = known.sum(axis=0)
    mean = np.where(known, stacked, 0).sum(axis=0) / np.maximum(count, 1)
    var = (np.where(known, stacked - mean, 0) ** 2).sum(axis=0) / np.maximum(count, 1)
    return np.where(count > 0, np.sqrt(var), np.nan).tolist()


def check_pair_sides(
    annotated: list[tuple[str, str, np.ndarray]], pairs: list[tuple[int, int]], ids: list[int]
) -> list[str]:
    """Warnings for flip pairs whose order disagrees with most pairs' in most images.

    A pair [i, j] may name its left member first or second, but all pairs the same way; the
    convention is the one most pairs follow (i left of j, x_i < x_j, in most images where both
    are placed). A pair whose i lies on the other side in most images was likely given the
    wrong way round. ``annotated``: (split, id, (K, 2) x,y) per annotated sample; ``pairs``
    positions among the K landmarks, ``ids`` their JSON indices (named in the messages)."""
    if len(pairs) < 2 or not annotated:
        return []
    coords = np.stack([c for _, _, c in annotated])  # (N, K, 2)
    shares = []
    for i, j in pairs:
        both = np.isfinite(coords[:, [i, j], 0]).all(axis=1)
        left = coords[both, i, 0] < coords[both, j, 0]
        shares.append((float(left.mean()) if both.any() else 0.5, int(both.sum())))
    first_left = sum(share > 0.5 for share, _ in shares) >= len(pairs) / 2
    warnings = []
    for (i, j), (share, count) in zip(pairs, shares, strict=True):
        wrong = 1 - share if first_left else share
        if count and wrong > 0.5:
            a, b = ids[i], ids[j]
            warnings.append(
                f"flip pair [{a}, {b}]: landmark {a} is {'right' if first_left else 'left'} of "
                f"landmark {b} in {100 * wrong:.0f} % of {count} images, unlike most pairs' "
                "first landmark; is the pair given the wrong way round?"
            )
    return warnings


def check_coinciding(annotated: list[tuple[str, str, np.ndarray]], ids: list[int]) -> list[str]:
    """Warnings for two landmarks closer than COINCIDE_PX in at least COINCIDE_SHARE of the
    samples that place both (and in 2 or more): a copy-paste error in the annotations?
    ``ids``: the JSON indices of the K landmarks (named in the messages)."""
    if not annotated:
        return []
    coords = np.stack([c for _, _, c in annotated])  # (N, K, 2)
    distance = np.linalg.norm(coords[:, :, None] - coords[:, None], axis=-1)  # NaN if missing
    close = np.nan_to_num(distance, nan=np.inf) < COINCIDE_PX
    both = np.isfinite(distance)
    warnings = []
    for a, b in zip(*np.triu_indices(coords.shape[1], k=1), strict=True):
        count, placed = int(close[:, a, b].sum()), int(both[:, a, b].sum())
        if count >= 2 and count >= COINCIDE_SHARE * placed:
            examples = [annotated[n][1] for n in np.flatnonzero(close[:, a, b])[:3]]
            warnings.append(
                f"landmarks {ids[a]} and {ids[b]} coincide (< {COINCIDE_PX:g} px apart) in "
                f"{count} of {placed} samples (e.g. {', '.join(map(repr, examples))}): "
                "a copy-paste error?"
            )
    return warnings


def fingerprint_key(
    json_path: Path, root: Path, landmarks, default_pixel_size, attribute_keys
) -> str:
    """A hash of everything the fingerprint depends on: the arguments, and the path,
    modification time and size of the JSON and of every image it names (stat only)."""

    def stat(path: Path) -> list:
        try:
            info = path.stat()
        except OSError:
            return [str(path), None, None]
        return [str(path), info.st_mtime_ns, info.st_size]

    data = read_dataset_json(json_path)
    images = [
        stat(Path(root) / raw["image"])
        for split in SPLITS
        for raw in data.get(split, [])
        if isinstance(raw, dict) and isinstance(raw.get("image"), str)
    ]
    content = [
        FINGERPRINT_VERSION,
        stat(Path(json_path).resolve()),
        str(Path(root).resolve()),
        list(landmarks or []),
        list(default_pixel_size or []),
        list(attribute_keys or []),
        images,
    ]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:24]


def cached_fingerprint(
    json_path: str | Path,
    root: str | Path,
    cache_dir: str | Path,
    landmarks: list[int] | None = None,
    default_pixel_size: tuple[float, float] | None = None,
    attribute_keys: list[str] | None = None,
    refresh: bool = False,
) -> Fingerprint:
    """:func:`compute_fingerprint`, kept in ``cache_dir`` as ``fingerprint_<key>.json``; any
    change of the JSON or of an image's modification time or size reads the data again, and so
    does ``refresh``."""
    json_path, root = Path(json_path), Path(root)
    key = fingerprint_key(json_path, root, landmarks, default_pixel_size, attribute_keys)
    cache_file = Path(cache_dir) / f"fingerprint_{key}.json"
    if cache_file.is_file() and not refresh:
        try:
            fingerprint = Fingerprint.from_json(cache_file.read_text())
            logger.debug("dataset fingerprint from the cache %s", cache_file)
            return fingerprint
        except (ValueError, TypeError, KeyError):  # a damaged cache file: read the data again
            logger.warning("ignoring the damaged fingerprint cache %s", cache_file)
    fingerprint = compute_fingerprint(
        json_path, root, landmarks, default_pixel_size, attribute_keys
    )
    partial = cache_file.with_suffix(f".{os.getpid()}.tmp")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(fingerprint.to_json())
        partial.replace(cache_file)  # atomic: a parallel run never reads half a file
    except OSError as err:  # the cache only saves time: a read-only home must not stop a run
        logger.warning("could not cache the dataset fingerprint in %s: %s", cache_dir, err)
    return fingerprint


def _min_median_max(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    return f"{values.min():g} / {np.median(values):g} / {values.max():g}"


def format_report(fingerprint: Fingerprint) -> str:
    """The fingerprint and every issue, as lines of text for the log."""
    counts = ", ".join(f"{split} {n}" for split, n in fingerprint.split_counts.items())
    lines = [f"data check of {fingerprint.json_path}", f"  samples: {counts}"]
    if fingerprint.sizes:
        sizes = np.asarray(fingerprint.sizes, dtype=np.float64)
        intensity = np.asarray(fingerprint.intensity)
        lines += [
            f"  formats: {fingerprint.formats}",
            f"  height (px), min / median / max: {_min_median_max(sizes[:, 0])}",
            f"  width (px), min / median / max: {_min_median_max(sizes[:, 1])}",
            f"  aspect H/W, min / median / max: {_min_median_max(sizes[:, 0] / sizes[:, 1])}",
            f"  pixel size [x, y] mm: {fingerprint.pixel_sizes}",
            f"  intensity: lowest {intensity[:, 0].min():g}, highest {intensity[:, 1].max():g}"
            f"; per-image range, min / median / max: "
            f"{_min_median_max(intensity[:, 1] - intensity[:, 0])}",
        ]
    lines.append(
        f"  landmarks: {fingerprint.num_landmarks} per sample, "
        f"{fingerprint.landmarks_outside} outside their image"
    )
    missing = fingerprint.missing_landmarks
    if any(sum(counts) for counts in missing.values()):
        parts = []
        for split, counts in missing.items():
            ids = fingerprint.landmark_ids
            per = ", ".join(f"{k}: {n}" for k, n in zip(ids, counts, strict=True) if n)
            parts.append(f"{split} {sum(counts)}" + (f" ({per})" if per else ""))
        lines.append(
            f"  missing landmarks (null), per split (landmark: samples): {'; '.join(parts)}"
        )
    if fingerprint.landmark_names:
        lines.append(f"  landmark names: {', '.join(fingerprint.landmark_names)}")
    if fingerprint.flip_pairs:
        lines.append(
            f"  flip pairs (left/right, swapped by horizontal flips): {fingerprint.flip_pairs}"
        )
    if fingerprint.landmark_std_px:
        spread = ", ".join(
            f"{i}: {sx:.1f}/{sy:.1f}" for i, (sx, sy) in enumerate(fingerprint.landmark_std_px)
        )
        lines.append(f"  spread of each landmark (std x/y, original px): {spread}")
    lines.append(f"  {len(fingerprint.errors)} errors, {len(fingerprint.warnings)} warnings")
    lines += [f"  {issue}" for issue in fingerprint.issues]
    return "\n".join(lines)


def raise_on_errors(fingerprint: Fingerprint) -> None:
    """DataError (one line: the count and the first error) if the check found errors."""
    errors = fingerprint.errors
    if errors:
        raise DataError(
            f"{fingerprint.json_path}: {len(errors)} data error(s), the first: {errors[0]} "
            "(--check-data lists all)"
        )
