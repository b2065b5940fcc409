"""Predicting image files without a dataset JSON: a bundle's settings and a predictor (PyTorch
or ONNX Runtime) → one table of predictions in original-image pixels."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from datasets.image_list import ImageListDataset
from inference.bundle import BundleSettings
from inference.evaluation import add_conformal_radius
from inference.predictions import COVARIANCE_COLUMNS, Predictions, prediction_table
from inference.predictor import Predictor
from inference.uncertainty import UncertaintyCalibration
from utils.coordinates import resize_coords, scale_factors
from utils.image_discovery import ImageInput

logger = logging.getLogger(__name__)

# Images decoded and held at a time (each at the network's input size).
CHUNK_IMAGES = 64


@dataclass
class ImageInfo:
    """One predicted image: ``original_size`` (H, W), ``pixel_size`` [x, y] mm or None."""

    id: str
    path: Path
    original_size: tuple[int, int]
    pixel_size: tuple[float, float] | None


@dataclass
class ImagePredictions:
    """What :func:`predict_images` found: ``table`` (one row per image, method and landmark:
    OUTPUT_COLUMNS that apply), the images predicted, the ones that could not be read
    (path, reason), and the seconds it took."""

    table: pd.DataFrame
    images: list[ImageInfo]
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


def output_columns(settings: BundleSettings, with_mm: bool, with_covariance: bool) -> list[str]:
    """The columns of predict.py's predictions.csv for a bundle: ``landmark_name`` with names,
    ``conformal_radius`` when calibrated, millimetres when an image's pixel size is known."""
    columns = ["id", "image", "landmark"]
    columns += ["landmark_name"] if settings.landmark_names else []
    columns += ["method", "pred_x", "pred_y", "uncertainty"]
    columns += ["conformal_radius"] if settings.calibration else []
    columns += ["pred_x_mm", "pred_y_mm"] if with_mm else []
    return columns + (COVARIANCE_COLUMNS if with_covariance else [])


def to_original_pixels(predictions: Predictions, input_size: Sequence[int]) -> Predictions:
    """``use_input_size`` predictions (input pixels) mapped to each original image's pixels
    (covariances scaled alike)."""
    coords = predictions.coords.copy()
    covariance = None if predictions.covariance is None else predictions.covariance.copy()
    for n, size in enumerate(predictions.original_size):
        coords[n] = resize_coords(coords[n], input_size, size)
        if covariance is not None:
            scale = np.asarray(scale_factors(input_size, size))
            covariance[n] = covariance[n] * scale[:, None] * scale[None, :]
    return Predictions(
        coords,
        predictions.uncertainty,
        predictions.index,
        predictions.original_size,
        predictions.pixel_size,
        covariance,
    )


def predict_images(
    predictor: Predictor,
    settings: BundleSettings,
    images: Sequence[ImageInput],
    chunk_images: int = CHUNK_IMAGES,
) -> ImagePredictions:
    """Predict ``images`` with ``predictor`` as the bundle's ``settings`` say, CHUNK_IMAGES at a
    time; an unreadable image is logged, listed in ``failed`` and skipped.

    Returns coordinates in pixels of each original image (x = column, y = row), in every
    evaluation mode, their uncertainty (the method's: maximum activation or pixels²), the
    conformal radius (original pixels) when the bundle is calibrated, and millimetres where
    the pixel size is known (from the file, e.g. DICOM, or the run's DATASET.PIXEL_SIZE).
    """
    calibrations = {
        method: UncertaintyCalibration.from_state(state)
        for method, state in (settings.calibration or {}).items()
    }
    tables, infos, failed = [], [], []
    start = time.perf_counter()
    with tqdm(total=len(images), desc="predicting", unit="image", disable=None) as progress:
        for first in range(0, len(images), chunk_images):
            chunk = images[first : first + chunk_images]
            dataset = ImageListDataset(
                chunk,
                settings.input_size,
                settings.landmark_ids,
                settings.default_pixel_size,
                settings.with_position,
            )
            failed += dataset.failed
            if len(dataset):
                chunk_tables, chunk_infos = predict_dataset(predictor, settings, dataset)
                tables += chunk_tables
                infos += chunk_infos
            progress.update(len(chunk))
    seconds = time.perf_counter() - start
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if calibrations and not table.empty:
        table = add_conformal_radius(table, calibrations)
    return ImagePredictions(finish_table(table, settings, infos), infos, failed, seconds)


def predict_dataset(
    predictor: Predictor, settings: BundleSettings, dataset: ImageListDataset
) -> tuple[list[pd.DataFrame], list[ImageInfo]]:
    """``prediction_table`` of each method for the images of ``dataset``, in original-image
    pixels, with their files in ``image``; and the images' sizes and pixel sizes."""
    results = predictor.predict(dataset, settings.methods, settings.smha_index)
    tables = []
    for method, predictions in results.items():
        if settings.evaluation_mode == "use_input_size":
            predictions = to_original_pixels(predictions, settings.input_size)
        table = prediction_table(dataset, predictions, method, settings.evaluation_mode, None)
        files = [str(dataset.samples[int(i)].image_path) for i in predictions.index]
        table["image"] = np.repeat(files, settings.num_landmarks)
        tables.append(table)
    return tables, image_infos(dataset, next(iter(results.values())))


def image_infos(dataset: ImageListDataset, predictions: Predictions) -> list[ImageInfo]:
    """Size and pixel size of each image of ``predictions``."""
    infos = []
    for n, index in enumerate(predictions.index):
        sample = dataset.samples[int(index)]
        pixel_size = predictions.pixel_size[n]
        infos.append(
            ImageInfo(
                sample.id,
                sample.image_path,
                (int(predictions.original_size[n][0]), int(predictions.original_size[n][1])),
                tuple(float(s) for s in pixel_size) if np.isfinite(pixel_size).all() else None,
            )
        )
    return infos


def finish_table(
    table: pd.DataFrame, settings: BundleSettings, infos: Sequence[ImageInfo]
) -> pd.DataFrame:
    """``prediction_table`` rows → predict.py's columns (no targets or errors: the images are
    not annotated): landmark names, millimetres where the pixel size is known."""
    with_mm = any(info.pixel_size for info in infos)
    with_covariance = "cov_xx" in table.columns
    columns = output_columns(settings, with_mm, with_covariance)
    if table.empty:
        return pd.DataFrame(columns=columns)
    table = table.copy()
    if settings.landmark_names:
        names = dict(zip(settings.landmark_ids, settings.landmark_names, strict=True))
        table["landmark_name"] = table["landmark"].map(names)
    if with_mm:
        sizes = {info.id: info.pixel_size or (np.nan, np.nan) for info in infos}
        table["pred_x_mm"] = table["pred_x"] * table["id"].map(lambda i: sizes[i][0])
        table["pred_y_mm"] = table["pred_y"] * table["id"].map(lambda i: sizes[i][1])
    return table[columns]
