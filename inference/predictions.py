"""Model predictions of a dataset → the long ``predictions.csv`` table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from datasets.dataset_base import DatasetBase, Sample
from utils.coordinates import resize_coords, scale_factors
from utils.metrics import radial_errors
from utils.results import PREDICTION_COLUMNS

COVARIANCE_COLUMNS = ["cov_xx", "cov_xy", "cov_yy"]
SHAPE_COVARIANCE_COLUMNS = ["shape_cov_xx", "shape_cov_xy", "shape_cov_yy"]
REPLACED_COLUMN = "replaced"


@dataclass
class Predictions:
    """What a model predicted for N samples of a dataset.

    coords (N, K, 2) x,y and uncertainty (N, K), in pixels of the original images (of the input
    images for ``use_input_size``); index (N,) into ``dataset.samples``; original_size (N, 2)
    H, W; pixel_size (N, 2) x, y mm per original pixel, NaN where unknown; covariance
    (N, K, 2, 2) in pixels² of the coords' image, or None when no Gaussian was fitted; with
    a shape model: replaced (N, K) bool, True where consistent decoding replaced the plain
    decoding, and shape_covariance (N, K, 2, 2), each landmark's conditional covariance given
    the others (pixels² of the coords' image; None for ``ecpv``).
    """

    coords: np.ndarray
    uncertainty: np.ndarray
    index: np.ndarray
    original_size: np.ndarray
    pixel_size: np.ndarray
    covariance: np.ndarray | None = None
    replaced: np.ndarray | None = None
    shape_covariance: np.ndarray | None = None

    @classmethod
    def concatenate(cls, chunks: list[Predictions]) -> Predictions:
        """Join batches' predictions along the sample axis."""
        fields = {}
        for name in cls.__dataclass_fields__:
            values = [getattr(c, name) for c in chunks]
            fields[name] = None if values[0] is None else np.concatenate(values)
        return cls(**fields)


def target_coords(
    sample: Sample,
    original_size: Sequence[int],
    evaluation_mode: str,
    input_size: Sequence[int] | None,
) -> np.ndarray | None:
    """The sample's annotation (K, 2) in the space predictions are made in: original-image
    pixels, or input pixels for ``use_input_size`` (``input_size`` None: the model sees
    images at their original size); None if unannotated."""
    if sample.coords is None or evaluation_mode != "use_input_size" or input_size is None:
        return sample.coords
    return resize_coords(sample.coords, original_size, input_size)


def prediction_table(
    dataset: DatasetBase,
    predictions: Predictions,
    method: str,
    evaluation_mode: str,
    input_size: Sequence[int] | None,
) -> pd.DataFrame:
    """One row per sample and landmark: PREDICTION_COLUMNS, the fitted covariance
    (COVARIANCE_COLUMNS) if any, with a shape model ``replaced`` and the conditional covariance
    (SHAPE_COVARIANCE_COLUMNS, if any), then the dataset's extra sample attributes.

    ``landmark`` is the index into the JSON coordinate list, followed by ``landmark_name`` when
    the JSON names its landmarks; targets and errors are empty (NaN) for unannotated samples
    and missing landmarks, ``error_mm`` also where the pixel size is unknown."""
    landmark_ids = dataset.landmarks or list(range(predictions.coords.shape[1]))
    names = dataset.landmark_names
    rows = []
    for n, index in enumerate(predictions.index):
        sample = dataset.samples[int(index)]
        original_size = tuple(int(s) for s in predictions.original_size[n])
        pixel_size = predictions.pixel_size[n]
        target = target_coords(sample, original_size, evaluation_mode, input_size)
        if evaluation_mode == "use_input_size" and input_size is not None:
            sx, sy = scale_factors(original_size, input_size)
            pixel_size = pixel_size / np.array([sx, sy])  # mm per input pixel
        error_px = radial_errors(predictions.coords[n], target) if target is not None else None
        error_mm = None
        if target is not None and np.isfinite(pixel_size).all():
            error_mm = radial_errors(predictions.coords[n], target, pixel_size)
        for k, landmark in enumerate(landmark_ids):
            row = {
                "id": sample.id,
                "landmark": landmark,
                "landmark_name": names[k] if names else None,
                "method": method,
                "pred_x": predictions.coords[n, k, 0],
                "pred_y": predictions.coords[n, k, 1],
                "uncertainty": predictions.uncertainty[n, k],
                "target_x": target[k, 0] if target is not None else np.nan,
                "target_y": target[k, 1] if target is not None else np.nan,
                "error_px": error_px[k] if error_px is not None else np.nan,
                "error_mm": error_mm[k] if error_mm is not None else np.nan,
            }
            if predictions.covariance is not None:
                cov = predictions.covariance[n, k]
                row.update(cov_xx=cov[0, 0], cov_xy=cov[0, 1], cov_yy=cov[1, 1])
            if predictions.replaced is not None:
                row[REPLACED_COLUMN] = bool(predictions.replaced[n, k])
            if predictions.shape_covariance is not None:
                cov = predictions.shape_covariance[n, k]
                row.update(shape_cov_xx=cov[0, 0], shape_cov_xy=cov[0, 1], shape_cov_yy=cov[1, 1])
            row.update(sample.attributes)
            rows.append(row)
    columns = list(PREDICTION_COLUMNS)
    if names:
        columns.insert(columns.index("landmark") + 1, "landmark_name")
    if predictions.covariance is not None:
        columns += COVARIANCE_COLUMNS
    if predictions.replaced is not None:
        columns.append(REPLACED_COLUMN)
    if predictions.shape_covariance is not None:
        columns += SHAPE_COVARIANCE_COLUMNS
    columns += list(dataset.additional_sample_attribute_keys)
    return pd.DataFrame(rows, columns=columns)
