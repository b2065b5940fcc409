"""Finding the images to predict: files named on the command line and folders searched for
every format that utils/image_io.py reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from utils.errors import DataError
from utils.image_io import DICOM_SUFFIXES, PIL_SUFFIXES, has_dicom_preamble

IMAGE_SUFFIXES = frozenset(PIL_SUFFIXES | DICOM_SUFFIXES | {".npz"})


@dataclass(frozen=True)
class ImageInput:
    """An image file to predict and its ``id``: its path relative to the folder it was found
    in (``/``-separated), or its name when it was named itself; without an image suffix
    (a DICOM file named by its UID, ``1.2.840....``, keeps its whole name)."""

    path: Path
    id: str


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or has_dicom_preamble(path)


def _image_id(relative: Path) -> str:
    known = relative.suffix.lower() in IMAGE_SUFFIXES
    return (relative.with_suffix("") if known else relative).as_posix()


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def find_images(inputs: Sequence[str | Path]) -> list[ImageInput]:
    """The images of ``inputs`` (files and folders), in the order given, each folder's sorted.

    A folder is searched recursively for files with an image suffix (IMAGE_SUFFIXES, any case)
    and for DICOM files of any name; hidden files and folders are skipped. A file named itself
    is always taken (an unreadable one is reported when it is read).

    Raises:
        DataError: a path that does not exist, a folder without images, or two images with the
            same id (e.g. ``a.png`` and ``a.dcm``), naming them.
    """
    found: list[ImageInput] = []
    for given in inputs:
        path = Path(given)
        if path.is_file():
            found.append(ImageInput(path, _image_id(Path(path.name))))
        elif path.is_dir():
            images = [
                ImageInput(file, _image_id(file.relative_to(path)))
                for file in sorted(path.rglob("*"))
                if file.is_file() and not _hidden(file.relative_to(path)) and _is_image(file)
            ]
            if not images:
                raise DataError(f"{path}: no images found (searched for {sorted(IMAGE_SUFFIXES)})")
            found.extend(images)
        else:
            raise DataError(f"input not found: {path}")
    seen: dict[str, Path] = {}
    for image in found:
        if image.id in seen:
            raise DataError(
                f"two images have the id '{image.id}': {seen[image.id]} and {image.path}; "
                "give them in separate runs or rename one"
            )
        seen[image.id] = image.path
    return found
