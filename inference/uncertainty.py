"""Uncertainty: ensemble measures, calibration on a held-out set, and how well it ranks errors.

Methods and the direction of their ``uncertainty`` column:
- ``smha`` (one model's maximum heatmap activation) and ``emha`` (maximum of the ensemble's mean
  heatmap): a higher activation means a more confident prediction;
- ``ecpv`` (variance of the ensemble members' coordinates, pixels²): higher means less confident;
- ``shape`` (:func:`shape_uncertainty`: the shape model's residual of the landmark given the
  others, divided by its heatmap activation): higher means less confident.
:func:`uncertainty_score` turns both into "higher = less certain" for everything below.

Calibration uses predictions on a calibration set (the validation list, or out-of-fold
predictions) whose errors are known:
- quantile bins (Schobs et al., TMI 2023): bin edges at the calibration scores' quantiles; each
  bin's error bound is the (1 - alpha) quantile of its calibration errors;
- split-conformal regions: nonconformity ``error / scale(bin)``, with ``scale`` the bin's mean
  error on one half of the calibration predictions, pooled over landmarks; ``q``, the conformal
  quantile of the other half's scores, makes the radius ``q * scale`` cover the true landmark
  with probability >= 1 - alpha for exchangeable data;
- elliptical regions (:class:`EllipseCalibration`): nonconformity the Mahalanobis radius
  ``sqrt(r^T S^-1 r)`` of the error vector r under a per-landmark covariance S (the fitted
  heatmap Gaussian's, INFERENCE.FIT_GAUSS, or the shape model's conditional one); the region
  ``{x: (x - p)^T S^-1 (x - p) <= q^2}`` with q the conformal quantile of the calibration
  radii has the same guarantee, and area ``pi q^2 sqrt(det S)``. A landmark without a usable
  covariance (a flat heatmap's is infinite) has radius inf: counted as not covered.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from inference.predictions import COVARIANCE_COLUMNS, SHAPE_COVARIANCE_COLUMNS
from utils.metrics import HIGHER_IS_CERTAIN, uncertainty_score  # noqa: F401 (re-exported)

# Where an ellipse's covariance comes from: its predictions.csv columns (xx, xy, yy).
ELLIPSE_SOURCES = {"heatmap": COVARIANCE_COLUMNS, "shape": SHAPE_COVARIANCE_COLUMNS}


def has_covariances(table: pd.DataFrame, columns: list[str]) -> bool:
    """Whether ``table`` has the xx, xy, yy ``columns`` with any values."""
    return set(columns) <= set(table.columns) and bool(table[columns].notna().any().all())


def table_covariances(table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """(N, 2, 2) covariances from a table's xx, xy, yy ``columns``."""
    xx, xy, yy = (table[c].to_numpy(float) for c in columns)
    return np.stack([np.stack([xx, xy], -1), np.stack([xy, yy], -1)], -2)


def table_offsets(table: pd.DataFrame) -> np.ndarray:
    """(N, 2) prediction - target of a table's rows, pixels."""
    return table[["pred_x", "pred_y"]].to_numpy(float) - table[["target_x", "target_y"]].to_numpy(
        float
    )


def fit_ellipses(
    calibration_table: pd.DataFrame, alpha: float
) -> dict[tuple[str, str], EllipseCalibration]:
    """One ellipse calibration per method and covariance source present in the annotated
    calibration predictions."""
    ellipses = {}
    annotated = calibration_table[calibration_table["error_px"].notna()]
    for method, group in annotated.groupby("method", sort=False):
        for source, columns in ELLIPSE_SOURCES.items():
            if has_covariances(group, columns):
                ellipses[method, source] = EllipseCalibration(
                    table_offsets(group), table_covariances(group, columns), alpha
                )
    return ellipses


def coordinate_variance(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E-CPV of (M, ..., 2) member coordinates: their mean (..., 2) and variance (...), the mean
    squared distance of the members to their mean (pixels²)."""
    mean = coords.mean(dim=0)
    variance = ((coords - mean) ** 2).sum(dim=-1).mean(dim=0)
    return mean, variance


def shape_uncertainty(residual: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """The ``shape`` measure (B, K): ``(1 + d²) / a``, with d² the landmark's squared
    Mahalanobis residual under the shape model given the other landmarks (chi-square with 2
    degrees of freedom when the layout is plausible) and a its heatmap activation, floored at
    1e-6 of the image's strongest (a conditional mean, activation 0, is least certain). The
    scale of the activations does not matter: bins and conformal radii depend on its ranks
    and ratios only."""
    activation = activation.double()
    floor = activation.amax(dim=-1, keepdim=True).clamp_min(1e-12) * 1e-6
    return (1 + residual.double()) / torch.maximum(activation, floor)


def mahalanobis_radius(offset: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """``sqrt(r^T S^-1 r)`` of (N, 2) offsets under (N, 2, 2) covariances; inf where S is not
    finite and positive definite."""
    offset, covariance = np.asarray(offset, float), np.asarray(covariance, float)
    finite = np.isfinite(covariance).all(axis=(1, 2)) & np.isfinite(offset).all(axis=1)
    safe = np.where(finite[:, None, None], covariance, np.eye(2))
    det = safe[:, 0, 0] * safe[:, 1, 1] - safe[:, 0, 1] * safe[:, 1, 0]
    valid = finite & (safe[:, 0, 0] > 0) & (det > 0)
    safe = np.where(valid[:, None, None], safe, np.eye(2))
    squared = np.einsum(
        "ni,nij,nj->n", offset * valid[:, None], np.linalg.inv(safe), offset * valid[:, None]
    )
    return np.where(valid, np.sqrt(np.maximum(squared, 0)), math.inf)


class EllipseCalibration:
    """Split-conformal ellipses: the conformal quantile ``scale`` of calibration radii.

    Args:
        offsets: (N, 2) calibration errors (prediction - target), pixels.
        covariances: (N, 2, 2) their covariances, pixels².
        alpha: miscoverage.
    """

    def __init__(self, offsets: np.ndarray, covariances: np.ndarray, alpha: float):
        self.alpha = alpha
        self.scale = conformal_quantile(mahalanobis_radius(offsets, covariances), alpha)

    def covered(self, offsets: np.ndarray, covariances: np.ndarray) -> np.ndarray:
        """(N,) bool: each error inside its ellipse."""
        return mahalanobis_radius(offsets, covariances) <= self.scale

    def areas(self, covariances: np.ndarray) -> np.ndarray:
        """(N,) ellipse areas, pixels² (inf without a usable covariance)."""
        covariances = np.asarray(covariances, float)
        finite = np.isfinite(covariances).all(axis=(1, 2))
        covariances = np.where(finite[:, None, None], covariances, 0.0)
        det = covariances[:, 0, 0] * covariances[:, 1, 1] - covariances[:, 0, 1] ** 2
        usable = finite & (det > 0)
        root = np.sqrt(np.where(usable, det, 1.0))
        return np.where(usable, math.pi * self.scale**2 * root, math.inf)


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
    table: pd.DataFrame,
    calibrations: dict[str, UncertaintyCalibration] | None = None,
    ellipses: dict[tuple[str, str], EllipseCalibration] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How well each method's uncertainty ranks its errors on the annotated test predictions.

    Returns the summary (one row per method: n, spearman, mre, mre of the most certain 50 % and
    90 %, and with a calibration: conformal coverage, mean radius and mean circle area; with
    ``ellipses`` (:func:`fit_ellipses`), per covariance source ``ellipse_<source>_coverage``,
    ``_mean_area`` (pixels²; over landmarks with a usable covariance), ``_unusable`` (their
    count) and ``_scale`` (the conformal q)) and the per-bin table (method, bin, n, mean error,
    error bound, fraction within the bound).
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
            row["conformal_mean_area"] = float((math.pi * radius**2).mean())
        for source, columns in ELLIPSE_SOURCES.items():
            ellipse = (ellipses or {}).get((method, source))
            if ellipse is None or not has_covariances(group, columns):
                continue
            covariances = table_covariances(group, columns)
            areas = ellipse.areas(covariances)
            usable = np.isfinite(areas)
            row[f"ellipse_{source}_coverage"] = float(
                ellipse.covered(table_offsets(group), covariances).mean()
            )
            row[f"ellipse_{source}_mean_area"] = (
                float(areas[usable].mean()) if usable.any() else math.nan
            )
            row[f"ellipse_{source}_unusable"] = int((~usable).sum())
            row[f"ellipse_{source}_scale"] = ellipse.scale
        if calibration is not None:
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
