"""Landmark annotations from other tools → LaNNU-Net's dataset JSON (docs/dataset-format.md).

Readers (:func:`read_csv_landmarks`, :func:`read_coco`, :func:`read_labelme`) return a
:class:`ConvertedDataset`: every image's K landmarks as x,y in pixels of its image file, in the
project's convention (``utils/coordinates.py``: x = column, y = row, integer values are pixel
centres), or None where nobody placed a landmark. :func:`split_samples` and :func:`fold_splits`
draw the training / validation / testing lists, :func:`write_dataset` writes one JSON atomically.

Pixel conventions of the sources, and what we assume:

- CSV: x = column, y = row in pixels of the image file, integers at pixel centres (ours); taken
  as they are.
- COCO keypoints: taken as pixel indices, integers at pixel centres, so no shift: a keypoint at
  (3, 5) is ``[3.0, 5.0]``. COCO itself does not define sub-pixel positions; detectron2's COCO
  loader reads keypoints the same way ("integers in [0, H-1 or W-1] ... pixel indices") and adds
  0.5 only because its own convention puts pixel centres at half-integers. A tool that wrote
  continuous corner-origin coordinates into a COCO file would need LabelMe's shift instead.
- LabelMe points: continuous, (0, 0) is the top-left corner of the top-left pixel (its canvas
  draws the image at the origin and divides the mouse position by the zoom, so pixel ``i`` spans
  ``[i, i + 1)``, centre ``i + 0.5``); converted with ``x - 0.5``, ``y - 0.5``.

Every malformed input raises :class:`utils.errors.DataError` naming the file and the record (CSV
line, image, label); bad options raise :class:`utils.errors.ConfigError`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.dataset_base import SPLITS
from utils.errors import ConfigError, DataError
from utils.image_io import DICOM_SUFFIXES, PIL_SUFFIXES

logger = logging.getLogger(__name__)

FORMATS = ("csv", "coco", "labelme")
IMAGE_SUFFIXES = frozenset(PIL_SUFFIXES | DICOM_SUFFIXES | {".npz"})  # what read_image reads
CSV_COLUMNS = ("id", "landmark", "x", "y")  # required; "annotator" and "name" are optional
LABELME_SHIFT = 0.5  # LabelMe's corner-origin coordinates minus this = ours (pixel centres)

Point = tuple[float, float]


@dataclass
class ConvertedSample:
    """One image. ``coordinates``: K entries, each x,y in pixels of the image file ``image`` (in
    our convention) or None where the landmark was not placed."""

    id: str
    image: str  # relative to the images folder, "/"-separated
    coordinates: list[Point | None]

    @property
    def has_annotation(self) -> bool:
        """Whether at least one landmark was placed."""
        return any(point is not None for point in self.coordinates)

    @property
    def num_missing(self) -> int:
        """How many of the K landmarks were not placed."""
        return sum(point is None for point in self.coordinates)

    def to_json(self) -> dict[str, Any]:
        """The sample as the dataset JSON holds it: a missing point is ``null``; a sample with
        no point at all is ``"has_annotation": false, "coordinates": null``."""
        if not self.has_annotation:
            return {
                "id": self.id,
                "image": self.image,
                "has_annotation": False,
                "coordinates": None,
            }
        coordinates = [None if p is None else [p[0], p[1]] for p in self.coordinates]
        return {"id": self.id, "image": self.image, "coordinates": coordinates}


@dataclass
class ConvertedDataset:
    """What a reader found: the samples (K landmarks each, in index order), the landmarks'
    names when the source has them, and where it came from (for the JSON's description)."""

    samples: list[ConvertedSample]
    num_landmarks: int
    landmark_names: list[str] | None
    source: str


Splits = dict[str, list[ConvertedSample]]  # "training" / "validation" / "testing" → samples


# --- shared parsing helpers -------------------------------------------------------------------


def order_landmarks(labels: Iterable[str]) -> list[str]:
    """The distinct landmark labels in index order: numerically when all are numbers (``1, 2,
    10`` → indices 0, 1, 2), otherwise sorted as strings."""
    unique = set(labels)
    try:
        values = {label: float(label) for label in unique}
    except ValueError:
        return sorted(unique)
    if not all(math.isfinite(value) for value in values.values()):
        return sorted(unique)
    return sorted(unique, key=lambda label: (values[label], label))


def _number(value: Any, where: str) -> float:
    """``value`` (a JSON number or a CSV cell) as a finite float; DataError naming ``where``."""
    number = math.nan
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    if not math.isfinite(number):
        raise DataError(f"{where}: {value!r} is not a finite number")
    return number


def _read_json(path: Path) -> Any:
    """The parsed JSON file; DataError naming it when it is missing or malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None


def _relative_image(path: Path, images: Path, where: str) -> str:
    """``path`` of an existing image file as the JSON stores it: relative to ``images``,
    "/"-separated. Errors name ``where`` when the file is missing or outside ``images``."""
    if not path.is_file():
        raise DataError(f"{where}: image file not found: {path}")
    relative = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(images)))
    if relative.parts[:1] == ("..",):
        raise DataError(f"{where}: image {path} lies outside the images folder {images}")
    return relative.as_posix()


def find_image(images: Path, sample_id: str, listings: dict[Path, list[Path]], source: Path) -> str:
    """The image of ``sample_id``: the one file ``images/<id>.<suffix>`` with a suffix that
    ``utils.image_io.read_image`` reads (any case), relative to ``images``. ``listings`` caches
    folder contents between calls. No such file, or several, is an error naming the id and
    the annotation file ``source``."""
    where = f"{source}: id '{sample_id}'"
    stem = images / sample_id
    folder = stem.parent
    if folder not in listings:
        listings[folder] = (
            sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if folder.is_dir()
            else []
        )
    found = [p for p in listings[folder] if p.stem == stem.name and p.is_file()]
    if not found:
        raise DataError(
            f"{where}: no image file {stem}.<suffix> with a suffix in {sorted(IMAGE_SUFFIXES)}"
        )
    if len(found) > 1:
        raise DataError(
            f"{where}: several image files match {stem}.*: {[p.name for p in found]}; keep one"
        )
    return _relative_image(found[0], images, where)


# --- CSV --------------------------------------------------------------------------------------


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and the non-blank rows ``(line number, {column: stripped value})`` of a CSV
    with at least the columns :data:`CSV_COLUMNS`."""
    rows, line = [], 1
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            for row in reader:
                line = reader.line_num
                if any(cell.strip() for cell in row):
                    rows.append((line, row))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except csv.Error as err:
        raise DataError(f"{path} line {line + 1}: {err}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    missing = [column for column in CSV_COLUMNS if column not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; the header is {header} (needed: "
            f"{list(CSV_COLUMNS)}, optional: annotator, name)"
        )
    if len(set(header)) < len(header):
        raise DataError(f"{path}: the header {header} repeats a column")
    parsed = []
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"{path} line {line}: {len(row)} fields, the header has {len(header)}")
        parsed.append((line, dict(zip(header, (cell.strip() for cell in row), strict=True))))
    return header, parsed


def read_csv_landmarks(path: Path, images: Path, annotator: str | None = None) -> ConvertedDataset:
    """Read a long-format CSV, one row per point: ``id, landmark, x, y``, optionally
    ``annotator`` and ``name``.

    x = column, y = row in pixels of the image file ``images/<id>.<suffix>`` (our convention,
    taken as they are). Landmarks are indexed by :func:`order_landmarks` of the ``landmark``
    column; a ``name`` column gives their names. ``annotator`` None or ``"mean"``: each point is
    the mean of the annotators who placed it; a name: that annotator's points only. A point that
    nobody (chosen) placed is None; an image without any point is unannotated.
    """
    path, images = Path(path), Path(images)
    header, rows = _csv_rows(path)
    has_annotators, has_names = "annotator" in header, "name" in header
    points: dict[tuple[str, str, str], tuple[Point, int]] = {}  # (id, annotator, landmark)
    names: dict[str, str] = {}
    for line, row in rows:
        where = f"{path} line {line}"
        for column in ("id", "landmark", *(["annotator"] if has_annotators else [])):
            if not row[column]:
                raise DataError(f"{where}: empty '{column}'")
        key = (row["id"], row["annotator"] if has_annotators else "", row["landmark"])
        if key in points:
            raise DataError(
                f"{where}: a second point for id '{key[0]}'"
                + (f", annotator '{key[1]}'" if has_annotators else "")
                + f", landmark '{key[2]}' (the first is on line {points[key][1]})"
            )
        point = (_number(row["x"], f"{where}: x"), _number(row["y"], f"{where}: y"))
        points[key] = (point, line)
        name = row["name"] if has_names else ""
        if name and names.setdefault(key[2], name) != name:
            raise DataError(
                f"{where}: landmark '{key[2]}' is named '{name}' here and "
                f"'{names[key[2]]}' on an earlier line"
            )
    if not points:
        raise DataError(f"{path}: no rows")
    annotators = sorted({key[1] for key in points})
    chosen = _chosen_annotators(annotator, annotators, has_annotators, path)
    landmarks = order_landmarks(key[2] for key in points)
    unnamed = [landmark for landmark in landmarks if landmark not in names]
    if has_names and unnamed:
        raise DataError(f"{path}: landmark(s) {unnamed} have no value in the 'name' column")
    listings: dict[Path, list[Path]] = {}
    samples = []
    for sample_id in dict.fromkeys(key[0] for key in points):
        coordinates: list[Point | None] = []
        for landmark in landmarks:
            placed = [points[k][0] for a in chosen if (k := (sample_id, a, landmark)) in points]
            coordinates.append(_mean_point(placed))
        samples.append(
            ConvertedSample(sample_id, find_image(images, sample_id, listings, path), coordinates)
        )
    how = "" if not has_annotators else f", annotator {annotator or 'mean'}"
    return ConvertedDataset(
        samples,
        len(landmarks),
        [names[landmark] for landmark in landmarks] if has_names else None,
        f"{path.name} (csv{how})",
    )


def _chosen_annotators(
    annotator: str | None, annotators: list[str], has_annotators: bool, path: Path
) -> list[str]:
    """The annotators whose points count: all for None or "mean", else the one named."""
    if annotator in (None, "mean"):
        return annotators
    if not has_annotators:
        raise ConfigError(f"--annotator {annotator}: {path} has no 'annotator' column")
    if annotator not in annotators:
        raise ConfigError(
            f"--annotator {annotator!r} is not in {path}; annotators: {annotators} (or 'mean')"
        )
    return [annotator]


def _mean_point(points: Sequence[Point]) -> Point | None:
    """The mean x,y of ``points``; None when there are none."""
    if not points:
        return None
    return (
        math.fsum(p[0] for p in points) / len(points),
        math.fsum(p[1] for p in points) / len(points),
    )


# --- COCO -------------------------------------------------------------------------------------


def read_coco(path: Path, images: Path) -> ConvertedDataset:
    """Read a COCO keypoints JSON: ``images`` (``id``, ``file_name`` relative to ``images``),
    ``annotations`` (``image_id``, ``keypoints`` ``[x, y, v] * K``) and ``categories[0]
    .keypoints`` (the K landmark names; ``skeleton`` is ignored).

    Keypoints are pixel indices, integers at pixel centres, so x,y are kept as they are (a
    keypoint at (3, 5) is ``[3.0, 5.0]``); ``v == 0`` is a missing point (None). One annotation
    per image; an image without one is unannotated. A sample's id is its file name without the
    suffix (``"sub/a"`` for ``sub/a.png``).
    """
    path, images = Path(path), Path(images)
    data = _read_json(path)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise DataError(
            f"{path}: a COCO file needs the lists 'images', 'annotations', 'categories'"
        )
    categories = data["categories"]
    names = (
        categories[0].get("keypoints") if categories and isinstance(categories[0], dict) else None
    )
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: categories[0] needs 'keypoints', the list of landmark names")
    file_names = _coco_images(path, data["images"])
    keypoints: dict[Any, list] = {}
    for position, annotation in enumerate(data["annotations"]):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if not isinstance(image_id, int | str) or image_id not in file_names:
            raise DataError(
                f"{path}: annotation #{position} has image_id {image_id!r}, not an id in 'images'"
            )
        where = f"{path}: image '{file_names[image_id]}'"
        if image_id in keypoints:
            raise DataError(f"{where} has several annotations; keep one per image")
        values = annotation.get("keypoints")
        if not isinstance(values, list) or len(values) != 3 * len(names):
            count = len(values) if isinstance(values, list) else "no"
            raise DataError(
                f"{where}: {count} keypoint values, expected 3 x {len(names)} = "
                f"{3 * len(names)} (x, y, v for each name in categories[0].keypoints)"
            )
        keypoints[image_id] = values
    samples, seen = [], {}
    for image_id, file_name in file_names.items():
        where = f"{path}: image '{file_name}'"
        sample_id = Path(file_name).with_suffix("").as_posix()
        if sample_id in seen:
            raise DataError(
                f"{where} and '{seen[sample_id]}' both give the sample id '{sample_id}'"
            )
        seen[sample_id] = file_name
        values = keypoints.get(image_id, [0] * (3 * len(names)))
        coordinates = [
            _coco_point(values[3 * k : 3 * k + 3], f"{where}, keypoint '{name}'")
            for k, name in enumerate(names)
        ]
        image = _relative_image(images / file_name, images, where)
        samples.append(ConvertedSample(sample_id, image, coordinates))
    return ConvertedDataset(samples, len(names), list(names), f"{path.name} (coco)")


def _coco_images(path: Path, entries: list) -> dict[Any, str]:
    """COCO ``images`` as ``{id: file_name}`` in file order; errors name the entry."""
    file_names: dict[Any, str] = {}
    for position, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("file_name"), str)):
            raise DataError(f"{path}: images[{position}] needs an 'id' and a 'file_name'")
        image_id = entry.get("id")
        if not isinstance(image_id, int | str) or isinstance(image_id, bool):
            raise DataError(f"{path}: image '{entry['file_name']}' needs an integer or string 'id'")
        if image_id in file_names:
            raise DataError(f"{path}: image '{entry['file_name']}' repeats the id {image_id!r}")
        file_names[image_id] = entry["file_name"]
    if not file_names:
        raise DataError(f"{path}: 'images' is empty")
    return file_names


def _coco_point(triple: list, where: str) -> Point | None:
    """One COCO ``[x, y, v]`` as x,y (no shift), or None for ``v == 0`` (not labelled)."""
    visibility = triple[2]
    if visibility not in (0, 1, 2) or isinstance(visibility, bool):
        raise DataError(f"{where}: visibility {visibility!r}, expected 0, 1 or 2")
    if visibility == 0:
        return None
    return _number(triple[0], f"{where}: x"), _number(triple[1], f"{where}: y")


# --- LabelMe ----------------------------------------------------------------------------------


@dataclass
class _LabelMeFile:
    """One LabelMe file: its image's path, and its points by label (in our convention)."""

    path: Path
    image: Path
    points: dict[str, Point]


def read_labelme(
    folder: Path, images: Path, landmark_order: Path | None = None
) -> ConvertedDataset:
    """Read a folder of LabelMe JSON files (``*.json``, one per image, not recursive).

    Shapes of ``shape_type`` "point" are landmarks named by their ``label`` (other shapes are
    ignored). LabelMe's ``points [[x, y]]`` are continuous with (0, 0) at the top-left corner of
    the top-left pixel; we store ``x - 0.5, y - 0.5`` (pixel centres at integers, in pixels of
    the image file). ``imagePath`` is relative to the JSON file (LabelMe's convention), or else
    to ``images``. Landmark order: one label per line of ``landmark_order``, or
    :func:`order_landmarks` of all labels. A sample's id is the JSON file's stem; a label
    missing from a file is None.
    """
    folder, images = Path(folder), Path(images)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of LabelMe JSON files")
    files = [_read_labelme_file(p, images) for p in sorted(folder.glob("*.json"))]
    if not files:
        raise DataError(f"{folder}: no LabelMe *.json files")
    if landmark_order is None:
        labels = order_landmarks(label for file in files for label in file.points)
    else:
        labels = _read_order_file(Path(landmark_order))
        for file in files:
            unknown = [label for label in file.points if label not in labels]
            if unknown:
                raise DataError(
                    f"{file.path}: label '{unknown[0]}' is not in the landmark order file "
                    f"{landmark_order}"
                )
    samples = [
        ConvertedSample(
            file.path.stem,
            _relative_image(file.image, images, str(file.path)),
            [file.points.get(label) for label in labels],
        )
        for file in files
    ]
    return ConvertedDataset(samples, len(labels), labels, f"{folder.name}/*.json (labelme)")


def _read_labelme_file(path: Path, images: Path) -> _LabelMeFile:
    """One LabelMe file's point shapes (shifted to our convention) and image path; errors name
    the file and the label."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DataError(f"{path}: not a LabelMe file (no 'shapes' list)")
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise DataError(f"{path}: no 'imagePath'")
    image_path = image_path.replace("\\", "/")  # LabelMe on Windows writes backslashes
    image = path.parent / image_path
    if not image.is_file() and (images / image_path).is_file():
        image = images / image_path
    points: dict[str, Point] = {}
    for position, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict):
            raise DataError(f"{path}: shapes[{position}] is not an object")
        if shape.get("shape_type") != "point":
            continue
        label = shape.get("label")
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"{path}: point shapes[{position}] has no label")
        label = label.strip()
        where = f"{path}: label '{label}'"
        if label in points:
            raise DataError(f"{where} appears twice")
        xy = shape.get("points")
        if not (isinstance(xy, list) and len(xy) == 1 and _is_pair(xy[0])):
            raise DataError(f"{where}: a point needs 'points': [[x, y]], got {xy!r}")
        x, y = _number(xy[0][0], f"{where}: x"), _number(xy[0][1], f"{where}: y")
        _warn_if_outside(data, x, y, where)
        points[label] = (x - LABELME_SHIFT, y - LABELME_SHIFT)
    return _LabelMeFile(path, image, points)


def _is_pair(value: Any) -> bool:
    """Whether ``value`` is a JSON list of two items (checked as numbers later)."""
    return isinstance(value, list) and len(value) == 2


def _warn_if_outside(data: dict, x: float, y: float, where: str) -> None:
    """Log a warning when LabelMe's x,y (corner origin) lie outside ``imageWidth`` x
    ``imageHeight``, when the file gives them."""
    width, height = data.get("imageWidth"), data.get("imageHeight")
    sized = isinstance(width, int | float) and isinstance(height, int | float)
    if sized and not (0 <= x <= width and 0 <= y <= height):
        logger.warning(
            "%s: point (%g, %g) lies outside the %gx%g image", where, x, y, width, height
        )


def _read_order_file(path: Path) -> list[str]:
    """The landmark labels of an order file, one per line (blank lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the landmark order file ({err})") from None
    labels: list[str] = []
    for number, line in enumerate(lines, start=1):
        label = line.strip()
        if label in labels:
            raise DataError(f"{path} line {number}: label '{label}' is listed twice")
        if label:
            labels.append(label)
    if not labels:
        raise DataError(f"{path}: the landmark order file lists no labels")
    return labels


# --- splits -----------------------------------------------------------------------------------


def group_keys(samples: Sequence[ConvertedSample], group_regex: str | None) -> list[str]:
    """Each sample's group (patient): the first capture group of ``group_regex`` searched in
    its id; without a regex every sample is its own group. An id it misses is an error."""
    if group_regex is None:
        return [sample.id for sample in samples]
    try:
        pattern = re.compile(group_regex)
    except re.error as err:
        raise ConfigError(f"--group-regex {group_regex!r}: {err}") from None
    if pattern.groups < 1:
        raise ConfigError(f"--group-regex {group_regex!r} needs a capture group, e.g. '^(P\\d+)_'")
    keys = []
    for sample in samples:
        match = pattern.search(sample.id)
        if match is None or match.group(1) is None:
            raise DataError(f"id '{sample.id}' does not match --group-regex {group_regex!r}")
        keys.append(match.group(1))
    return keys


def _shuffled_groups(
    samples: Sequence[ConvertedSample], group_regex: str | None, rng: np.random.Generator
) -> list[list[int]]:
    """Sample indices by group, the groups in a random order that depends on ``rng`` and the
    group keys alone (not on the order of the samples)."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(group_keys(samples, group_regex)):
        groups.setdefault(key, []).append(index)
    ordered = [groups[key] for key in sorted(groups)]
    return [ordered[i] for i in rng.permutation(len(ordered))]


def _rng(seed: int, *more: int) -> np.random.Generator:
    """A generator determined by ``seed`` (and ``more``, e.g. the fold)."""
    if seed < 0:
        raise ConfigError(f"--seed {seed}: give a seed >= 0")
    return np.random.default_rng([seed, *more])


def _take(groups: list[list[int]], target: float) -> tuple[list[list[int]], list[list[int]]]:
    """Split ``groups`` into (taken, rest), taking each group in turn when that brings the
    number of images taken nearer ``target``."""
    taken, rest, count = [], [], 0
    for group in groups:
        if abs(count + len(group) - target) < abs(count - target):
            taken.append(group)
            count += len(group)
        else:
            rest.append(group)
    return taken, rest


def _count(groups: list[list[int]]) -> int:
    return sum(len(group) for group in groups)


def _parts(samples: Sequence[ConvertedSample], **parts: list[list[int]]) -> Splits:
    """``{split: samples}`` from groups of indices; samples keep their input order."""
    return {
        split: [samples[i] for i in sorted(i for group in groups for i in group)]
        for split, groups in parts.items()
    }


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(f"{name} {value}: give a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"--val-fraction {val_fraction} + --test-fraction {test_fraction} leave no training"
        )


def _check_split(splits: Splits, val_fraction: float, where: str) -> Splits:
    """Refuse a split without training images; warn about an empty validation list."""
    if not splits["training"]:
        raise DataError(f"{where} has no annotated training images; convert more images")
    if val_fraction > 0 and not splits["validation"]:
        logger.warning(
            "%s has no validation images (too few images for --val-fraction %g); train with "
            "TRAINER.PERFORM_VALIDATION False or raise the fraction",
            where,
            val_fraction,
        )
    return splits


def split_samples(
    samples: Sequence[ConvertedSample],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    group_regex: str | None = None,
) -> Splits:
    """One random training / validation / testing split, deterministic for a ``seed``.

    About ``test_fraction`` and ``val_fraction`` of all images go to testing and validation,
    whole groups at a time (:func:`group_keys`). A group with an unannotated image is always
    tested (the dataset reader refuses unannotated training or validation samples).
    """
    _check_fractions(val_fraction, test_fraction)
    groups = _shuffled_groups(samples, group_regex, _rng(seed))
    test_only: list[list[int]] = []
    others: list[list[int]] = []
    for group in groups:
        (others if all(samples[i].has_annotation for i in group) else test_only).append(group)
    drawn, rest = _take(others, test_fraction * len(samples) - _count(test_only))
    validation, training = _take(rest, val_fraction * len(samples))
    splits = _parts(samples, training=training, validation=validation, testing=test_only + drawn)
    return _check_split(splits, val_fraction, "the split")


def fold_splits(
    samples: Sequence[ConvertedSample],
    folds: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    group_regex: str | None = None,
) -> list[Splits]:
    """K-fold cross-validation splits, deterministic for a ``seed``.

    Whole groups (:func:`group_keys`) are dealt to ``folds`` test parts of near-equal image
    counts, so every image is tested in exactly one fold; each fold's validation list is about
    ``val_fraction`` of its non-test images, whole groups drawn from them, and the rest is
    training. Unannotated images are only tested: in other folds they are left out.
    """
    _check_fractions(val_fraction, 0.0)
    groups = _shuffled_groups(samples, group_regex, _rng(seed))
    if folds < 2:
        raise ConfigError(f"--folds {folds}: give at least 2 folds")
    if folds > len(groups):
        raise DataError(f"--folds {folds}: there are only {len(groups)} images (or groups)")
    tested: list[list[list[int]]] = [[] for _ in range(folds)]
    for group in sorted(groups, key=len, reverse=True):  # stable: ties keep the random order
        min(tested, key=_count).append(group)
    result = []
    for fold in range(folds):
        rest = [
            annotated
            for other in range(folds)
            if other != fold
            for group in tested[other]
            if (annotated := [i for i in group if samples[i].has_annotation])
        ]
        rest = [rest[i] for i in _rng(seed, fold).permutation(len(rest))]
        validation, training = _take(rest, val_fraction * _count(rest))
        splits = _parts(samples, training=training, validation=validation, testing=tested[fold])
        result.append(_check_split(splits, val_fraction, f"fold {fold}"))
    return result


# --- output -----------------------------------------------------------------------------------


def dataset_json(
    name: str, description: str, splits: Splits, landmark_names: list[str] | None, fold: int = -1
) -> dict[str, Any]:
    """The dataset JSON's content (docs/dataset-format.md), ``landmark_names`` when known."""
    content: dict[str, Any] = {"name": name, "description": description, "fold": fold}
    if landmark_names is not None:
        content["landmark_names"] = list(landmark_names)
    for split in SPLITS:
        content[split] = [sample.to_json() for sample in splits[split]]
    return content


def format_dataset_json(content: dict[str, Any]) -> str:
    """``content`` as JSON text with one sample per line; numbers exactly as Python's repr
    (read back, they are the same floats)."""

    def dump(value: Any) -> str:
        return json.dumps(value, allow_nan=False)

    lines = []
    for key, value in content.items():
        if key in SPLITS and value:
            samples = ",\n".join(f"    {dump(sample)}" for sample in value)
            lines.append(f"  {dump(key)}: [\n{samples}\n  ]")
        else:
            lines.append(f"  {dump(key)}: {dump(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_dataset(path: Path, content: dict[str, Any], overwrite: bool = False) -> None:
    """Write one dataset JSON atomically (a temporary file in the same folder, then
    ``os.replace``); an existing ``path`` is refused unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise DataError(f"{path} exists; pass --overwrite to replace it")
    text = format_dataset_json(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_datasets(outputs: dict[Path, dict[str, Any]], overwrite: bool = False) -> None:
    """Write several dataset JSONs (:func:`write_dataset`), refusing before writing any when
    one exists and not ``overwrite``."""
    existing = [str(path) for path in outputs if Path(path).exists()]
    if existing and not overwrite:
        raise DataError(f"{existing[0]} exists; pass --overwrite to replace it")
    for path, content in outputs.items():
        write_dataset(path, content, overwrite)


# --- the whole conversion ---------------------------------------------------------------------


def read_annotations(
    fmt: str,
    input_path: Path,
    images: Path,
    annotator: str | None = None,
    landmark_order: Path | None = None,
) -> ConvertedDataset:
    """Read ``input_path`` with the reader of ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; available: {list(FORMATS)}")
    if annotator is not None and fmt != "csv":
        raise ConfigError("--annotator applies to --format csv only")
    if landmark_order is not None and fmt != "labelme":
        raise ConfigError("--landmark-order applies to --format labelme only")
    if not Path(images).is_dir():
        raise DataError(f"--images {images}: not a folder")
    if fmt == "csv":
        return read_csv_landmarks(input_path, images, annotator)
    if fmt == "coco":
        return read_coco(input_path, images)
    return read_labelme(input_path, images, landmark_order)


def convert_dataset(
    fmt: str,
    input_path: Path,
    images: Path,
    output: Path,
    folds: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float | None = None,
    group_regex: str | None = None,
    seed: int = 0,
    annotator: str | None = None,
    landmark_order: Path | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Read annotations, split them and write the dataset JSON(s); returns the paths written.

    Without ``folds``: ``output`` with one split (:func:`split_samples`; ``test_fraction``
    None = 0.2). With ``folds`` K: ``fold0.json`` ... ``fold<K-1>.json`` in ``output``'s
    folder (:func:`fold_splits`), not ``output`` itself. Image paths are relative to ``images``
    (use it as ``DATASET.ROOT``); ``name`` defaults to ``output``'s stem.
    """
    output = Path(output)
    dataset = read_annotations(fmt, Path(input_path), Path(images), annotator, landmark_order)
    name, description = name or output.stem, f"converted from {dataset.source}"
    if folds is None:
        test = 0.2 if test_fraction is None else test_fraction
        split = split_samples(dataset.samples, val_fraction, test, seed, group_regex)
        outputs = {output: dataset_json(name, description, split, dataset.landmark_names)}
    else:
        if test_fraction is not None:
            raise ConfigError("--test-fraction does not apply with --folds (each fold tests 1/K)")
        outputs = {
            output.parent / f"fold{fold}.json": dataset_json(
                name, description, split, dataset.landmark_names, fold
            )
            for fold, split in enumerate(
                fold_splits(dataset.samples, folds, val_fraction, seed, group_regex)
            )
        }
    write_datasets(outputs, overwrite)
    log_summary(dataset, outputs)
    return list(outputs)


def log_summary(dataset: ConvertedDataset, outputs: dict[Path, dict[str, Any]]) -> None:
    """Log one line: images, landmarks, missing points and the split sizes of each output."""
    annotated = [s for s in dataset.samples if s.has_annotation]
    missing = sum(s.num_missing for s in annotated)
    sizes = "; ".join(
        f"{path.name}: " + ", ".join(f"{split} {len(content[split])}" for split in SPLITS)
        for path, content in outputs.items()
    )
    logger.info(
        "converted %s: %d images (%d without annotation), %d landmarks, %d missing points; %s",
        dataset.source,
        len(dataset.samples),
        len(dataset.samples) - len(annotated),
        dataset.num_landmarks,
        missing,
        sizes,
    )
