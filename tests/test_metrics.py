"""Tests of utils/metrics.py: radial errors and the per-landmark summary."""

import math

import numpy as np
import pandas as pd
import pytest

from utils.metrics import radial_errors, sdr_column, summarise_errors


def test_radial_errors_px():
    predictions = np.array([[3.0, 4.0], [1.0, 1.0], [-2.0, 5.0]])
    targets = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(radial_errors(predictions, targets), [5.0, 0.0, 5.0])


def test_radial_errors_mm_anisotropic():
    # pixel_size [x, y] = (0.5, 2.0) mm: dx = 3 px * 0.5 = 1.5 mm, dy = 4 px * 2 = 8 mm
    errors = radial_errors(np.array([[3.0, 4.0]]), np.array([[0.0, 0.0]]), pixel_size=(0.5, 2.0))
    np.testing.assert_allclose(errors, [math.hypot(1.5, 8.0)])
    # x and y are not swapped
    swapped = radial_errors(np.array([[3.0, 4.0]]), np.array([[0.0, 0.0]]), pixel_size=(2.0, 0.5))
    np.testing.assert_allclose(swapped, [math.hypot(6.0, 2.0)])


def test_radial_errors_batched_shape():
    predictions = np.zeros((4, 3, 2))
    targets = np.ones((4, 3, 2))
    errors = radial_errors(predictions, targets)
    assert errors.shape == (4, 3)
    np.testing.assert_allclose(errors, math.sqrt(2))


def test_radial_errors_nan_propagates():
    errors = radial_errors(np.array([[np.nan, 1.0]]), np.array([[0.0, 0.0]]))
    assert np.isnan(errors[0])


def test_sdr_column_names():
    assert sdr_column(2.5) == "sdr_2.5"
    assert sdr_column(2.0) == "sdr_2"
    assert sdr_column(4) == "sdr_4"


def table(error_px, error_mm, landmarks, methods=None):
    n = len(error_px)
    return pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(n)],
            "landmark": landmarks,
            "method": methods or ["model"] * n,
            "error_px": error_px,
            "error_mm": error_mm,
        }
    )


def test_summary_in_px_excludes_unannotated():
    predictions = table(
        error_px=[1.0, 3.0, 2.0, 6.0, np.nan, np.nan],
        error_mm=[np.nan] * 6,
        landmarks=[0, 0, 1, 1, 0, 1],
    )
    summary, unit = summarise_errors(predictions, [2.0, 2.5, 5.0])
    assert unit == "px"
    assert list(summary.columns) == [
        "method",
        "landmark",
        "n",
        "mre",
        "std",
        "median",
        "sdr_2",
        "sdr_2.5",
        "sdr_5",
        "unit",
    ]
    assert summary["landmark"].tolist() == [0, 1, "all"]
    rows = summary.set_index("landmark")
    assert rows.loc[0, "n"] == 2 and rows.loc[1, "n"] == 2 and rows.loc["all", "n"] == 4
    assert rows.loc[0, "mre"] == pytest.approx(2.0)
    assert rows.loc[1, "mre"] == pytest.approx(4.0)
    assert rows.loc["all", "mre"] == pytest.approx(3.0)
    assert rows.loc["all", "median"] == pytest.approx(2.5)  # of 1, 2, 3, 6
    assert rows.loc["all", "std"] == pytest.approx(np.std([1.0, 3.0, 2.0, 6.0]))
    # sdr_t = % of errors <= t (inclusive): 1, 2 of 4 within 2; 1, 2 within 2.5; 1, 2, 3 within 5
    assert rows.loc["all", "sdr_2"] == pytest.approx(50.0)
    assert rows.loc["all", "sdr_2.5"] == pytest.approx(50.0)
    assert rows.loc["all", "sdr_5"] == pytest.approx(75.0)
    assert rows.loc[0, "sdr_2"] == pytest.approx(50.0)
    assert rows.loc[1, "sdr_5"] == pytest.approx(50.0)
    assert (summary["unit"] == "px").all()
    assert (summary["method"] == "model").all()


def test_summary_in_mm_when_every_annotated_row_has_mm():
    predictions = table(
        error_px=[10.0, 20.0, np.nan],
        error_mm=[1.0, 3.0, np.nan],  # the unannotated row has no mm either
        landmarks=[4, 4, 4],
    )
    summary, unit = summarise_errors(predictions, [2.0])
    assert unit == "mm"
    rows = summary.set_index("landmark")
    assert rows.loc[4, "mre"] == pytest.approx(2.0)
    assert rows.loc["all", "sdr_2"] == pytest.approx(50.0)
    assert (summary["unit"] == "mm").all()


def test_summary_falls_back_to_px_when_some_mm_missing():
    predictions = table(error_px=[10.0, 20.0], error_mm=[1.0, np.nan], landmarks=[0, 0])
    summary, unit = summarise_errors(predictions, [2.0])
    assert unit == "px"
    assert summary.set_index("landmark").loc["all", "mre"] == pytest.approx(15.0)


def test_summary_per_method_in_order():
    predictions = table(
        error_px=[1.0, 2.0, 5.0, 7.0],
        error_mm=[np.nan] * 4,
        landmarks=[0, 0, 0, 0],
        methods=["zeta", "zeta", "alpha", "alpha"],
    )
    summary, _ = summarise_errors(predictions, [2.0])
    assert summary["method"].tolist() == ["zeta", "zeta", "alpha", "alpha"]
    all_rows = summary[summary["landmark"] == "all"].set_index("method")
    assert all_rows.loc["zeta", "mre"] == pytest.approx(1.5)
    assert all_rows.loc["alpha", "mre"] == pytest.approx(6.0)
    assert all_rows.loc["alpha", "sdr_2"] == pytest.approx(0.0)


def test_summary_nothing_annotated_is_empty():
    predictions = table(error_px=[np.nan, np.nan], error_mm=[np.nan, np.nan], landmarks=[0, 1])
    summary, unit = summarise_errors(predictions, [2.0, 4.0])
    assert summary.empty
    assert unit == "px"
    assert "sdr_4" in summary.columns


def test_summary_counts_only_scored_landmarks():
    """Missing landmarks (NaN error) are not scored: n, MRE and SDR by hand; names follow."""
    table = pd.DataFrame(
        {
            "id": ["a", "a", "b", "b", "c", "c"],
            "landmark": [0, 1, 0, 1, 0, 1],
            "landmark_name": ["sella", "nasion"] * 3,
            "method": "smha",
            "error_px": [1.0, np.nan, 3.0, 4.0, 5.0, np.nan],
            "error_mm": np.nan,
        }
    )
    summary, unit = summarise_errors(table, [3.0])
    assert unit == "px"
    rows = {str(r["landmark"]): r for _, r in summary.iterrows()}
    assert rows["0"]["n"] == 3 and rows["0"]["mre"] == pytest.approx(3.0)
    assert rows["1"]["n"] == 1 and rows["1"]["mre"] == pytest.approx(4.0)
    assert rows["all"]["n"] == 4 and rows["all"]["mre"] == pytest.approx(13 / 4)
    assert rows["all"]["sdr_3"] == pytest.approx(50.0)
    assert list(summary.columns[:4]) == ["method", "landmark", "landmark_name", "n"]
    assert rows["1"]["landmark_name"] == "nasion" and rows["all"]["landmark_name"] == ""
