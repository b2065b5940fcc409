"""Tests of inference/predictions.py and utils/results.py: the predictions table and its files."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import HAND_COORDS, HAND_SIZE

from datasets.dataset_aspire import DatasetAspire
from datasets.dataset_generic import DatasetGeneric
from inference.predictions import Predictions, prediction_table
from utils.coordinates import resize_coords
from utils.metrics import summarise_errors
from utils.results import PREDICTION_COLUMNS, format_summary, unique_results_dir, write_results

INPUT_SIZE = (16, 24)  # H, W; the hand images are 30x40
BASE_COLUMNS = [
    "id",
    "landmark",
    "method",
    "pred_x",
    "pred_y",
    "uncertainty",
    "target_x",
    "target_y",
    "error_px",
    "error_mm",
]
OFFSET = np.array([3.0, 4.0])  # every prediction = target + (3, 4): 5 px away


def test_prediction_columns_constant():
    assert PREDICTION_COLUMNS == BASE_COLUMNS


def make_predictions(dataset, coords_t1, index=(0, 1)):
    """Predictions for the hand testing split: t1 (annotated, 0.5 x 0.25 mm) and t2 (none)."""
    k = dataset.num_landmarks
    coords = np.stack([coords_t1, np.full((k, 2), 7.0)])
    order = list(index)
    return Predictions(
        coords=coords[order],
        uncertainty=np.arange(2 * k, dtype=float).reshape(2, k)[order],
        index=np.array(order),
        original_size=np.array([HAND_SIZE, HAND_SIZE]),
        pixel_size=np.array([[0.5, 0.25], [np.nan, np.nan]])[order],
    )


def test_table_original_pixels(hand_dataset):
    json_path, root = hand_dataset
    dataset = DatasetAspire(json_path, "testing", root, INPUT_SIZE)
    target = np.array(HAND_COORDS["t1"])
    preds = make_predictions(dataset, target + OFFSET)
    table = prediction_table(dataset, preds, "model", "scale_heatmap_first", INPUT_SIZE)
    assert list(table.columns) == BASE_COLUMNS + ["patient_id", "suid"]
    assert len(table) == 6
    assert table["id"].tolist() == ["t1"] * 3 + ["t2"] * 3
    assert table["landmark"].tolist() == [0, 1, 2, 0, 1, 2]
    assert (table["method"] == "model").all()
    t1 = table[table["id"] == "t1"]
    np.testing.assert_allclose(t1[["target_x", "target_y"]].to_numpy(), target)
    np.testing.assert_allclose(t1[["pred_x", "pred_y"]].to_numpy(), target + OFFSET)
    np.testing.assert_allclose(t1["error_px"], 5.0)
    np.testing.assert_allclose(t1["error_mm"], math.hypot(3 * 0.5, 4 * 0.25))
    np.testing.assert_allclose(t1["uncertainty"], [0.0, 1.0, 2.0])
    assert t1["patient_id"].tolist() == ["p4"] * 3
    assert t1["suid"].tolist() == ["s4"] * 3


def test_unannotated_sample_has_nan_targets_and_errors(hand_dataset):
    json_path, root = hand_dataset
    dataset = DatasetAspire(json_path, "testing", root, INPUT_SIZE)
    preds = make_predictions(dataset, np.array(HAND_COORDS["t1"]))
    table = prediction_table(dataset, preds, "model", "scale_pred_coords", INPUT_SIZE)
    t2 = table[table["id"] == "t2"]
    assert len(t2) == 3
    for column in ("target_x", "target_y", "error_px", "error_mm"):
        assert t2[column].isna().all(), column
    np.testing.assert_allclose(t2["pred_x"], 7.0)
    np.testing.assert_allclose(t2["uncertainty"], [3.0, 4.0, 5.0])
    assert t2["patient_id"].tolist() == ["p5"] * 3
    t1 = table[table["id"] == "t1"]  # predicted exactly on target
    np.testing.assert_allclose(t1["error_px"], 0.0)
    np.testing.assert_allclose(t1["error_mm"], 0.0)


def table_without_pixel_size(hand_dataset):
    """The hand testing split's table, predictions 5 px off, pixel size unknown."""
    json_path, root = hand_dataset
    dataset = DatasetGeneric(json_path, "testing", root, INPUT_SIZE)
    preds = make_predictions(dataset, np.array(HAND_COORDS["t1"]) + OFFSET)
    preds.pixel_size[:] = np.nan
    return prediction_table(dataset, preds, "model", "scale_heatmap_first", INPUT_SIZE)


def test_error_mm_empty_without_pixel_size(hand_dataset):
    table = table_without_pixel_size(hand_dataset)
    assert list(table.columns) == BASE_COLUMNS
    t1 = table[table["id"] == "t1"]
    np.testing.assert_allclose(t1["error_px"], 5.0)
    assert t1["error_mm"].isna().all()


def test_rows_follow_prediction_index(hand_dataset):
    json_path, root = hand_dataset
    dataset = DatasetGeneric(json_path, "testing", root, INPUT_SIZE)
    preds = make_predictions(dataset, np.array(HAND_COORDS["t1"]) + OFFSET, index=(1, 0))
    table = prediction_table(dataset, preds, "model", "scale_heatmap_first", INPUT_SIZE)
    assert table["id"].tolist() == ["t2"] * 3 + ["t1"] * 3
    np.testing.assert_allclose(table[table["id"] == "t1"]["error_px"], 5.0)
    assert table[table["id"] == "t2"]["error_px"].isna().all()


def test_use_input_size_maps_targets_and_pixel_size(hand_dataset):
    json_path, root = hand_dataset
    dataset = DatasetGeneric(json_path, "testing", root, INPUT_SIZE)
    target_input = resize_coords(np.array(HAND_COORDS["t1"]), HAND_SIZE, INPUT_SIZE)
    # (7 + 0.5) * 24 / 40 - 0.5 = 4.0 and (8 + 0.5) * 16 / 30 - 0.5 = 4.0333...
    np.testing.assert_allclose(target_input[0], [4.0, 8.5 * 16 / 30 - 0.5])
    preds = make_predictions(dataset, target_input + OFFSET)
    table = prediction_table(dataset, preds, "model", "use_input_size", INPUT_SIZE)
    t1 = table[table["id"] == "t1"]
    np.testing.assert_allclose(t1[["target_x", "target_y"]].to_numpy(), target_input)
    np.testing.assert_allclose(t1["error_px"], 5.0)
    # one input pixel spans 40 / 24 original columns and 30 / 16 original rows
    mm_x, mm_y = 0.5 * 40 / 24, 0.25 * 30 / 16
    np.testing.assert_allclose(t1["error_mm"], math.hypot(3 * mm_x, 4 * mm_y))
    assert table[table["id"] == "t2"]["target_x"].isna().all()


def test_landmark_column_uses_selected_json_indices(hand_dataset):
    json_path, root = hand_dataset
    dataset = DatasetGeneric(json_path, "testing", root, INPUT_SIZE, landmarks=[2, 0])
    target = np.array(HAND_COORDS["t1"])[[2, 0]]
    preds = make_predictions(dataset, target + OFFSET)
    table = prediction_table(dataset, preds, "model", "scale_heatmap_first", INPUT_SIZE)
    assert table["landmark"].tolist() == [2, 0, 2, 0]
    t1 = table[table["id"] == "t1"].set_index("landmark")
    assert t1.loc[2, "target_x"] == HAND_COORDS["t1"][2][0]
    assert t1.loc[0, "target_y"] == HAND_COORDS["t1"][0][1]
    np.testing.assert_allclose(t1["error_px"], 5.0)


def test_unique_results_dir_never_reuses_non_empty(tmp_path):
    first = unique_results_dir(tmp_path, "results")
    assert first == tmp_path / "results"
    assert first.is_dir()
    assert unique_results_dir(tmp_path, "results") == first  # still empty: reused
    (first / "predictions.csv").write_text("x")
    second = unique_results_dir(tmp_path, "results")
    assert second == tmp_path / "results_2"
    assert second.is_dir()
    (second / "summary.csv").write_text("y")
    assert unique_results_dir(tmp_path, "results") == tmp_path / "results_3"
    assert (first / "predictions.csv").read_text() == "x"


def test_unique_results_dir_creates_parents(tmp_path):
    folder = unique_results_dir(tmp_path / "a" / "b", "run")
    assert folder == tmp_path / "a" / "b" / "run"
    assert folder.is_dir()


def test_write_results_files(hand_dataset, tmp_path):
    json_path, root = hand_dataset
    dataset = DatasetAspire(json_path, "testing", root, INPUT_SIZE)
    preds = make_predictions(dataset, np.array(HAND_COORDS["t1"]) + OFFSET)
    table = prediction_table(dataset, preds, "model", "scale_heatmap_first", INPUT_SIZE)
    summary, unit = summarise_errors(table, [2.0, 4.0])
    assert unit == "mm"
    folder = unique_results_dir(tmp_path / "out", "test")
    write_results(table, summary, folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "predictions.csv",
        "results.xlsx",
        "summary.csv",
    ]
    csv = pd.read_csv(folder / "predictions.csv")
    assert list(csv.columns) == list(table.columns)
    assert len(csv) == 6
    np.testing.assert_allclose(csv["error_px"].to_numpy(), table["error_px"].to_numpy())
    summary_csv = pd.read_csv(folder / "summary.csv")
    assert summary_csv["landmark"].astype(str).tolist() == ["0", "1", "2", "all"]
    sheets = pd.read_excel(folder / "results.xlsx", sheet_name=None)
    assert list(sheets) == ["predictions", "summary"]
    assert list(sheets["predictions"].columns) == list(table.columns)
    assert len(sheets["predictions"]) == 6
    assert len(sheets["summary"]) == 4
    assert sheets["summary"]["mre"].iloc[-1] == pytest.approx(math.hypot(1.5, 1.0))


def test_format_summary(hand_dataset):
    table = table_without_pixel_size(hand_dataset)
    summary, _ = summarise_errors(table, [2.0])
    text = format_summary(summary, "Test set")
    assert text.startswith("Test set (errors in px")
    assert "5.00" in text
    assert "MRE per landmark" in text
    empty = format_summary(summary.iloc[0:0], "Test set")
    assert "no annotated" in empty
