"""Reading images of every supported format into one 2D float array, normalised per image.

Supported: PNG, JPEG, TIFF and BMP (8 or 16 bit, grayscale or colour converted to gray), NPZ (the
array under key ``image``, or the only array), DICOM (rescale slope/intercept applied,
PixelSpacing read; also a file of any other name that starts like DICOM). Every error names
the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from utils.errors import DataError

PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
# ITU-R BT.601 luma weights, the same as PIL's "L" conversion.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class LoadedImage:
    """A decoded image: ``pixels`` (H, W) float32, and its pixel size [x, y] in mm if stored."""

    pixels: np.ndarray
    pixel_size: tuple[float, float] | None = None


def _read_pil(path: Path) -> LoadedImage:
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
            img = img.convert("RGB")
        array = np.asarray(img)
    if array.ndim == 3:
        array = array[..., :3].astype(np.float32) @ _LUMA
    return LoadedImage(array.astype(np.float32))


def _read_npz(path: Path) -> LoadedImage:
    with np.load(path, allow_pickle=False) as data:
        keys = list(data.keys())
        if "image" in keys:
            array = data["image"]
        elif len(keys) == 1:
            array = data[keys[0]]
        else:
            raise DataError(f"{path}: NPZ holds {keys}; store the image under the key 'image'")
    array = np.squeeze(np.asarray(array, dtype=np.float32))
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3] @ _LUMA
    return LoadedImage(array)


def _read_dicom(path: Path) -> LoadedImage:
    import pydicom  # imported here so that users without DICOM data need not install it

    try:
        ds = pydicom.dcmread(path)
        array = ds.pixel_array.astype(np.float32)
    except Exception as err:  # pydicom raises many unrelated types for a bad file
        raise DataError(f"{path}: not a readable DICOM image ({err})") from None
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    array = array * slope + intercept
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3] @ _LUMA
    pixel_size = None
    spacing = getattr(ds, "PixelSpacing", None)
    if spacing is not None and len(spacing) == 2:
        # DICOM PixelSpacing is [row spacing (y), column spacing (x)].
        pixel_size = (float(spacing[1]), float(spacing[0]))
    return LoadedImage(array, pixel_size)


def has_dicom_preamble(path: str | Path) -> bool:
    """Whether a file starts like a DICOM file (``DICM`` after the 128-byte preamble), as DICOM
    files without a suffix, or named by their UID (``1.2.840....``), do."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def read_image(path: str | Path) -> LoadedImage:
    """Decode an image file to a (H, W) float32 array, not yet normalised."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in PIL_SUFFIXES:
            loaded = _read_pil(path)
        elif suffix == ".npz":
            loaded = _read_npz(path)
        elif suffix in DICOM_SUFFIXES or has_dicom_preamble(path):
            loaded = _read_dicom(path)
        else:
            raise DataError(
                f"{path}: unsupported image format '{suffix}'; use PNG, JPEG, TIFF, BMP, WebP, "
                "NPZ or DICOM"
            )
    except DataError:
        raise
    except Exception as err:  # PIL, zipfile and pydicom raise many types for a damaged file
        raise DataError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from None
    if loaded.pixels.ndim != 2 or min(loaded.pixels.shape) < 2:
        raise DataError(f"{path}: expected a 2D image, got shape {loaded.pixels.shape}")
    if not np.isfinite(loaded.pixels).all():
        raise DataError(f"{path}: image contains NaN or infinite values")
    return loaded


def normalise_image(pixels: np.ndarray, statistics_of: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit standard deviation per image (a constant image becomes all zeros).

    ``statistics_of``: the image whose mean and standard deviation are used (default
    ``pixels``). Resizing is linear with weights that sum to one, so normalising an image
    resized from ``original`` by ``original``'s statistics equals resizing the normalised
    original (to float32 rounding), without a pass of arithmetic over the full-size image.
    """
    reference = pixels if statistics_of is None else statistics_of
    mean, std = cv2.meanStdDev(np.asarray(reference, dtype=np.float32))  # one pass, float64 sums
    std = float(std[0, 0])
    return (pixels.astype(np.float32) - float(mean[0, 0])) / (std if std > 1e-8 else 1.0)
