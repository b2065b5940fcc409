"""Ensemble uncertainty measures, calibration and their evaluation."""

import numpy as np
import pandas as pd
import pytest
import torch

from inference.ensemble import average_outputs, decode_methods
from inference.uncertainty import (
    EllipseCalibration,
    UncertaintyCalibration,
    conformal_quantile,
    coordinate_variance,
    evaluate_uncertainty,
    spearman,
    uncertainty_score,
)


def argmax_decode(output, original_sizes):
    """A decoder like the U-Net trainer's in use_input_size mode, on the finest output."""
    heatmaps = output[0]
    batch, landmarks, _, width = heatmaps.shape
    values, index = heatmaps.reshape(batch, landmarks, -1).max(-1)
    return torch.stack([index % width, index // width], -1).float(), values


def member(points_and_values, size=(12, 16)):
    """A one-sample, one-level output with a single bright pixel per landmark."""
    heatmap = torch.zeros(1, len(points_and_values), *size)
    for k, ((x, y), value) in enumerate(points_and_values):
        heatmap[0, k, y, x] = value
    return [heatmap]


def test_three_measures_on_hand_built_heatmaps():
    a = member([((5, 5), 2.0), ((1, 2), 1.0)])
    b = member([((7, 5), 4.0), ((1, 2), 3.0)])
    sizes = torch.tensor([[12, 16]])
    out = decode_methods([a, b], sizes, argmax_decode, ("smha", "emha", "ecpv"), smha_index=0)
    smha = out["smha"]
    assert smha.coords[0].tolist() == [[5, 5], [1, 2]]
    assert smha.uncertainty[0].tolist() == [2.0, 1.0]
    emha = out["emha"]  # mean heatmap: 1 at (5,5), 2 at (7,5); 2 at (1,2)
    assert emha.coords[0].tolist() == [[7, 5], [1, 2]]
    assert emha.uncertainty[0].tolist() == [2.0, 2.0]
    ecpv = out["ecpv"]
    assert ecpv.coords[0].tolist() == [[6, 5], [1, 2]]
    assert ecpv.uncertainty[0].tolist() == [1.0, 0.0]  # mean squared distance to the mean point
    assert smha.replaced is None and smha.shape_covariance is None  # no shape model
    smha_b = decode_methods([a, b], sizes, argmax_decode, ("smha",), smha_index=1)["smha"]
    assert smha_b.coords[0].tolist() == [[7, 5], [1, 2]]


def test_identical_members_give_zero_variance_and_the_single_prediction():
    a = member([((3, 4), 2.0), ((10, 1), 5.0)])
    sizes = torch.tensor([[12, 16]])
    out = decode_methods([a, a], sizes, argmax_decode, ("smha", "emha", "ecpv"))
    single = argmax_decode(a, sizes)
    for method in ("smha", "emha", "ecpv"):
        torch.testing.assert_close(out[method].coords, single[0])
    assert out["ecpv"].uncertainty.abs().max() == 0


def test_coordinate_variance_and_average_outputs():
    coords = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]], [[1.0, 3.0]], [[1.0, -3.0]]])
    mean, variance = coordinate_variance(coords)
    assert mean.tolist() == [[1.0, 0.0]] and variance.tolist() == [(1 + 1 + 9 + 9) / 4]
    averaged = average_outputs([[torch.ones(2)], [torch.zeros(2)]])
    assert averaged[0].tolist() == [0.5, 0.5]


def test_score_direction():
    assert uncertainty_score("smha", np.array([3.0]))[0] == -3.0
    assert uncertainty_score("ecpv", np.array([3.0]))[0] == 3.0


def test_conformal_quantile_rank():
    scores = np.arange(1, 10, dtype=float)  # n = 9: rank ceil(10 * 0.9) = 9
    assert conformal_quantile(scores, 0.1) == 9.0
    assert conformal_quantile(scores, 0.5) == 5.0
    assert conformal_quantile(scores[:5], 0.05) == np.inf


def heteroscedastic(n, seed):
    """Errors whose spread grows with the (noisy) uncertainty score: exchangeable draws."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(1, 10, n)
    errors = scale * np.abs(rng.normal(size=(n, 2))).sum(-1) / 1.5
    scores = scale * rng.uniform(0.8, 1.2, n)
    return scores, errors


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_conformal_coverage_on_exchangeable_errors(alpha):
    calibration = UncertaintyCalibration(*heteroscedastic(3000, seed=0), num_bins=5, alpha=alpha)
    scores, errors = heteroscedastic(5000, seed=1)
    coverage = (errors <= calibration.radius(scores)).mean()
    assert abs(coverage - (1 - alpha)) < 0.03
    bounds = calibration.error_bound(scores)
    assert abs((errors <= bounds).mean() - (1 - alpha)) < 0.03
    radii = calibration.radius(np.array([1.5, 9.5]))
    assert radii[0] < radii[1]  # an uncertain prediction gets a wider region


def test_evaluation_ranks_and_bins():
    scores, errors = heteroscedastic(400, seed=2)
    table = pd.DataFrame({"method": "ecpv", "uncertainty": scores, "error_px": errors})
    calibration = UncertaintyCalibration(*heteroscedastic(400, seed=3), num_bins=4, alpha=0.1)
    summary, bins = evaluate_uncertainty(table, {"ecpv": calibration})
    row = summary.iloc[0]
    assert row["spearman"] > 0.5
    assert row["mre_most_certain_50"] < row["mre_most_certain_90"] < row["mre"]
    assert 0.8 < row["conformal_coverage"] < 1.0
    assert list(bins["bin"]) == [0, 1, 2, 3] and bins["n"].sum() == 400
    assert bins["mean_error"].is_monotonic_increasing


def test_spearman():
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 45.0])) == pytest.approx(1)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1)
    assert np.isnan(spearman(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])))


def test_missing_landmarks_are_left_out_of_calibration_and_evaluation():
    """Rows of missing landmarks (no error) change neither the calibration nor the summary."""
    from inference.evaluation import fit_calibrations

    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "method": "smha",
            "uncertainty": rng.uniform(0.1, 1.0, 40),
            "error_px": rng.uniform(0.0, 5.0, 40),
        }
    )
    holes = table.copy()
    holes.loc[::4, "error_px"] = np.nan
    scored = holes[holes["error_px"].notna()]
    for calibrated in (fit_calibrations(holes, 3, 0.1), fit_calibrations(scored, 3, 0.1)):
        assert np.isfinite(calibrated["smha"].bin_bound).all()
    summary, _ = evaluate_uncertainty(holes, fit_calibrations(holes, 3, 0.1))
    expected, _ = evaluate_uncertainty(scored, fit_calibrations(scored, 3, 0.1))
    pd.testing.assert_frame_equal(summary, expected)
    assert summary["n"].item() == 30


def test_ellipses_cover_anisotropic_errors_and_beat_the_circle():
    rng = np.random.default_rng(0)

    def errors(n):
        # Each landmark's error is elongated along its own direction, 6 px by 1 px.
        angle = rng.uniform(0, np.pi, n)
        rotation = np.stack(
            [
                np.stack([np.cos(angle), -np.sin(angle)], -1),
                np.stack([np.sin(angle), np.cos(angle)], -1),
            ],
            -2,
        )
        covariance = rotation @ np.diag([36.0, 1.0]) @ rotation.transpose(0, 2, 1)
        offsets = np.einsum("nij,nj->ni", np.linalg.cholesky(covariance), rng.normal(size=(n, 2)))
        return offsets, covariance

    ellipse = EllipseCalibration(*errors(2000), alpha=0.1)
    offsets, covariance = errors(4000)
    coverage = ellipse.covered(offsets, covariance).mean()
    assert abs(coverage - 0.9) < 0.03
    radius = np.quantile(np.linalg.norm(offsets, axis=1), 0.9)  # the best single circle
    assert ellipse.areas(covariance).mean() < 0.5 * np.pi * radius**2
    flat = np.full((1, 2, 2), np.inf)  # a flat heatmap's covariance: no ellipse
    assert not ellipse.covered(np.zeros((1, 2)), flat)[0] and np.isinf(ellipse.areas(flat)[0])
