"""Uncertainty: ensemble measures, calibration on a held-out set, and how well it ranks errors.

Methods and the direction of their ``uncertainty`` column:
- ``smha`` (one model's maximum heatmap activation) and ``emha`` (maximum of the ensemble's mean
  heatmap): a higher activation means a more confident prediction;
- ``ecpv`` (variance of the ensemble members' coordinates, pixels²): higher means less confident.
:func:`uncertainty_score` turns both into "higher = less certain" for everything below.

Calibration uses predictions on a calibration set (the validation list, or out-of-fold
predictions) whose errors are known:
- quantile bins (Schobs et al., TMI 2023): bin edges at the calibration scores' quantiles; each
  bin's error bound is the (1 - alpha) quantile of its calibration errors;
- split-conformal regions: nonconformity ``error / scale(bin)``, with ``scale`` the bin's mean
  error on one half of the calibration predictions, pooled over landmarks; ``q``, the conformal
  quantile of the other half's scores, makes the radius ``q * scale`` cover the true landmark
  with probability >= 1 - alpha for exchangeable data.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from utils.metrics import HIGHER_IS_CERTAIN, uncertainty_score  # noqa: F401 (re-exported)


def coordinate_variance(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E-CPV of (M, ..., 2) member coordinates: their mean (..., 2) and variance (...), the mean
    squared distance of the members to their mean (pixels²)."""
    mean = coords.mean(dim=0)
    variance = ((coords - mean) ** 2).sum(dim=-1).mean(dim=0)
    return mean, variance


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The split-conformal quantile: the ceil((n + 1)(1 - alpha))-th smallest score (inf when
    the calibration set is too small for that level)."""
    scores = np.sort(np.asarray(scores, dtype=float))
    rank = math.ceil((len(scores) + 1) * (1 - alpha))
    return float(scores[rank - 1]) if rank <= len(scores) else math.inf


class UncertaintyCalibration:
    """Quantile bins and conformal radii fitted on one method's calibration predictions.

    Args:
        scores: (N,) uncertainty scores (higher = less certain) of the calibration predictions.
        errors: (N,) their radial errors.
        num_bins: quantile bins (fewer if there are too few samples).
        alpha: miscoverage: bounds and radii should hold for a fraction 1 - alpha.
    """

    def __init__(self, scores: np.ndarray, errors: np.ndarray, num_bins: int, alpha: float):
        scores, errors = np.asarray(scores, float), np.asarray(errors, float)
        num_bins = max(1, min(num_bins, len(scores) // 4))
        self.alpha = alpha
        # Split-conformal needs the scale to be fitted on other data than the quantile: bins and
        # scales come from every other prediction, the quantile from the rest.
        fit, hold_out = np.arange(len(scores)) % 2 == 0, np.arange(len(scores)) % 2 == 1
        self.edges = np.quantile(scores[fit], np.linspace(0, 1, num_bins + 1)[1:-1])
        fit_bins = self.assign_bins(scores[fit])
        fit_errors = errors[fit]
        self.bin_mean_error = np.array(
            [
                fit_errors[fit_bins == b].mean() if (fit_bins == b).any() else fit_errors.mean()
                for b in range(num_bins)
            ]
        )
        all_bins = self.assign_bins(scores)
        self.bin_bound = np.array(
            [
                np.quantile(errors[all_bins == b], 1 - alpha)
                if (all_bins == b).any()
                else np.quantile(errors, 1 - alpha)
                for b in range(num_bins)
            ]
        )
        scale = np.maximum(self.bin_mean_error[self.assign_bins(scores[hold_out])], 1e-12)
        self.quantile = conformal_quantile(errors[hold_out] / scale, alpha)

    def to_state(self) -> dict[str, float | list[float]]:
        """The fitted calibration as plain values (a model bundle stores it)."""
        return {
            "alpha": float(self.alpha),
            "edges": [float(v) for v in self.edges],
            "bin_mean_error": [float(v) for v in self.bin_mean_error],
            "bin_bound": [float(v) for v in self.bin_bound],
            "quantile": float(self.quantile),
        }

    @classmethod
    def from_state(cls, state: dict) -> UncertaintyCalibration:
        """The calibration :meth:`to_state` wrote (a KeyError names a missing value)."""
        calibration = cls.__new__(cls)
        calibration.alpha = float(state["alpha"])
        calibration.edges = np.asarray(state["edges"], dtype=float)
        calibration.bin_mean_error = np.asarray(state["bin_mean_error"], dtype=float)
        calibration.bin_bound = np.asarray(state["bin_bound"], dtype=float)
        calibration.quantile = float(state["quantile"])
        if (
            not len(calibration.bin_mean_error)
            == len(calibration.bin_bound)
            == calibration.num_bins
        ):
            raise ValueError("bin_mean_error and bin_bound need one value per bin")
        return calibration

    @property
    def num_bins(self) -> int:
        return len(self.edges) + 1

    def assign_bins(self, scores: np.ndarray) -> np.ndarray:
        """Bin index 0 (most certain) .. num_bins - 1 of each score."""
        return np.searchsorted(self.edges, np.asarray(scores, float), side="right")

    def radius(self, scores: np.ndarray) -> np.ndarray:
        """Conformal radius (pixels of the errors' image) for each score."""
        return self.quantile * np.maximum(self.bin_mean_error[self.assign_bins(scores)], 1e-12)

    def error_bound(self, scores: np.ndarray) -> np.ndarray:
        """The estimated error bound of each score's bin."""
        return self.bin_bound[self.assign_bins(scores)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 3 values."""
    if len(a) < 3:
        return math.nan
    ranks_a = pd.Series(a).rank().to_numpy()
    ranks_b = pd.Series(b).rank().to_numpy()
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return math.nan
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def evaluate_uncertainty(
    table: pd.DataFrame, calibrations: dict[str, UncertaintyCalibration] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How well each method's uncertainty ranks its errors on the annotated test predictions.

    Returns the summary (one row per method: n, spearman, mre, mre of the most certain 50 % and
    90 %, and with a calibration: conformal coverage and mean radius) and the per-bin table
    (method, bin, n, mean error, error bound, fraction within the bound).
    """
    summary_rows, bin_rows = [], []
    annotated = table[table["error_px"].notna()]
    for method, group in annotated.groupby("method", sort=False):
        errors = group["error_px"].to_numpy(float)
        scores = uncertainty_score(method, group["uncertainty"].to_numpy())
        order = np.argsort(scores, kind="stable")
        row = {
            "method": method,
            "n": len(errors),
            "spearman": spearman(scores, errors),
            "mre": errors.mean(),
        }
        for fraction in (0.5, 0.9):
            keep = order[: max(1, int(round(fraction * len(errors))))]
            row[f"mre_most_certain_{int(fraction * 100)}"] = errors[keep].mean()
        calibration = (calibrations or {}).get(method)
        if calibration is not None:
            radius = calibration.radius(scores)
            row["conformal_alpha"] = calibration.alpha
            row["conformal_coverage"] = float((errors <= radius).mean())
            row["conformal_mean_radius"] = float(radius.mean())
            bins = calibration.assign_bins(scores)
            bounds = calibration.error_bound(scores)
            for b in range(calibration.num_bins):
                in_bin = bins == b
                bin_rows.append(
                    {
                        "method": method,
                        "bin": b,
                        "n": int(in_bin.sum()),
                        "mean_error": errors[in_bin].mean() if in_bin.any() else math.nan,
                        "error_bound": calibration.bin_bound[b],
                        "within_bound": float((errors[in_bin] <= bounds[in_bin]).mean())
                        if in_bin.any()
                        else math.nan,
                    }
                )
        summary_rows.append(row)
    return pd.DataFrame(summary_rows), pd.DataFrame(bin_rows)
