"""From prediction tables to the files of a results folder: errors, uncertainty, calibration."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from inference.uncertainty import (
    UncertaintyCalibration,
    evaluate_uncertainty,
    fit_ellipses,
    uncertainty_score,
)
from utils.metrics import summarise_errors
from utils.plotting import save_uncertainty_curves
from utils.results import format_summary, write_results

logger = logging.getLogger(__name__)


def fit_calibrations(
    calibration_table: pd.DataFrame, num_bins: int, alpha: float
) -> dict[str, UncertaintyCalibration]:
    """One calibration per method from annotated calibration predictions (errors in px)."""
    calibrations = {}
    annotated = calibration_table[calibration_table["error_px"].notna()]
    for method, group in annotated.groupby("method", sort=False):
        scores = uncertainty_score(method, group["uncertainty"].to_numpy())
        calibrations[method] = UncertaintyCalibration(
            scores, group["error_px"].to_numpy(float), num_bins, alpha
        )
    return calibrations


def add_conformal_radius(
    table: pd.DataFrame, calibrations: dict[str, UncertaintyCalibration]
) -> pd.DataFrame:
    """Insert ``conformal_radius`` (pixels of the predictions' image) after ``error_mm``."""
    radius = pd.Series(float("nan"), index=table.index)
    for method, calibration in calibrations.items():
        rows = table["method"] == method
        scores = uncertainty_score(method, table.loc[rows, "uncertainty"].to_numpy())
        radius[rows] = calibration.radius(scores)
    table = table.copy()
    table.insert(table.columns.get_loc("error_mm") + 1, "conformal_radius", radius)
    return table


def evaluate_and_write(
    table: pd.DataFrame,
    calibration_table: pd.DataFrame | None,
    folder: Path,
    thresholds: Sequence[float],
    num_bins: int,
    alpha: float,
    title: str,
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Write predictions.csv, summary.csv, results.xlsx, uncertainty_summary.csv,
    uncertainty_bins.csv and uncertainty.png into ``folder`` and log the summaries.
    Returns the predictions as written, the summary and its unit ('mm' or 'px')."""
    calibrations, ellipses = {}, {}
    if calibration_table is not None and calibration_table["error_px"].notna().any():
        calibrations = fit_calibrations(calibration_table, num_bins, alpha)
        ellipses = fit_ellipses(calibration_table, alpha)
        table = add_conformal_radius(table, calibrations)
    summary, unit = summarise_errors(table, thresholds)
    write_results(table, summary, folder)
    uncertainty_summary, bins = evaluate_uncertainty(table, calibrations, ellipses)
    uncertainty_summary.to_csv(folder / "uncertainty_summary.csv", index=False)
    if not bins.empty:
        bins.to_csv(folder / "uncertainty_bins.csv", index=False)
    if not uncertainty_summary.empty:
        save_uncertainty_curves(table, folder / "uncertainty.png")
    lines = [format_summary(summary, title)]
    if not uncertainty_summary.empty:
        lines += [
            "uncertainty (errors in px; spearman of uncertainty vs error):",
            uncertainty_summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"),
        ]
    if not calibrations:
        lines.append("no annotated validation list to calibrate on: no conformal radii")
    logger.info("%s\nresults written to %s", "\n".join(lines), folder)
    return table, summary, unit
