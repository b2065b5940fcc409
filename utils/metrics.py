"""Localisation metrics: radial errors, mean radial error (MRE) and success detection rates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def error_column(unit: str) -> str:
    """The predictions.csv column of errors in ``unit`` ('mm' or 'px')."""
    return "error_mm" if unit == "mm" else "error_px"


def radial_errors(
    predictions: np.ndarray, targets: np.ndarray, pixel_size: Sequence[float] | None = None
) -> np.ndarray:
    """Euclidean distances between (..., 2) x,y points; in mm when ``pixel_size`` [x, y] (mm per
    pixel of the points' image) is given, else in pixels."""
    delta = np.asarray(predictions, dtype=float) - np.asarray(targets, dtype=float)
    if pixel_size is not None:
        delta = delta * np.asarray(pixel_size, dtype=float)
    return np.sqrt((delta**2).sum(axis=-1))


def sdr_column(threshold: float) -> str:
    """Column name of the success detection rate at ``threshold``: 2.5 -> 'sdr_2.5'."""
    return f"sdr_{threshold:g}"


def summarise_errors(
    predictions: pd.DataFrame, thresholds: Sequence[float]
) -> tuple[pd.DataFrame, str]:
    """One row per method and landmark, plus landmark ``all``, over the annotated predictions.

    Columns: method, landmark, (landmark_name, when the predictions have it), n (the scored
    predictions: missing landmarks and unannotated samples have no error and are not counted),
    mre, std, median, sdr_<t> (percent of errors <= t), unit.
    Errors are in mm when every annotated prediction has one, else in pixels.
    Returns the table and its unit ('mm' or 'px').
    """
    annotated = predictions[predictions["error_px"].notna()]
    use_mm = len(annotated) > 0 and annotated["error_mm"].notna().all()
    unit = "mm" if use_mm else "px"
    column = error_column(unit)
    rows = []
    for method, by_method in annotated.groupby("method", sort=False):
        groups = [(lm, g) for lm, g in by_method.groupby("landmark")] + [("all", by_method)]
        for landmark, group in groups:
            errors = group[column].to_numpy(dtype=float)
            row = {
                "method": method,
                "landmark": landmark,
                "n": len(errors),
                "mre": errors.mean(),
                "std": errors.std(),
                "median": float(np.median(errors)),
            }
            for t in thresholds:
                row[sdr_column(t)] = 100.0 * float((errors <= t).mean())
            row["unit"] = unit
            rows.append(row)
    columns = ["method", "landmark", "n", "mre", "std", "median"]
    columns += [sdr_column(t) for t in thresholds] + ["unit"]
    summary = pd.DataFrame(rows, columns=columns)
    if "landmark_name" in predictions.columns:
        names = dict(zip(predictions["landmark"], predictions["landmark_name"], strict=True))
        summary.insert(2, "landmark_name", summary["landmark"].map(names).fillna(""))
    return summary, unit


# The direction of each uncertainty method's ``uncertainty`` column (inference/uncertainty.py).
HIGHER_IS_CERTAIN = {"smha": True, "emha": True, "ecpv": False, "shape": False}


def uncertainty_score(method: str, uncertainty: np.ndarray) -> np.ndarray:
    """The ``uncertainty`` column as a score where higher means less certain."""
    values = np.asarray(uncertainty, dtype=float)
    return -values if HIGHER_IS_CERTAIN.get(method, False) else values
