"""Tests of utils/result_figures.py and the figure helpers: sizes, selection, pixel positions."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from inference.debug_figures import debug_figure_size, save_heatmap_debug_figure
from transforms.generate_labels import UNetLabelGenerator
from utils.plotting import IMAGE_FIGURE_LONG_SIDE
from utils.result_figures import save_result_figures, select_samples

SIZE = (30, 50)  # (H, W) of the test images: non-square on purpose


def table(errors_per_sample: dict[str, float | None]) -> pd.DataFrame:
    """predictions.csv-style rows, two landmarks per sample, the given mean error (None =
    unannotated)."""
    rows = []
    for n, (sample_id, error) in enumerate(errors_per_sample.items()):
        for landmark in (0, 1):
            pred = (10.0 + 5 * landmark + n, 12.0)
            rows.append(
                {
                    "id": sample_id,
                    "landmark": landmark,
                    "method": "smha",
                    "pred_x": pred[0],
                    "pred_y": pred[1],
                    "uncertainty": 50.0,
                    "target_x": np.nan if error is None else pred[0] + error,
                    "target_y": np.nan if error is None else pred[1],
                    "error_px": np.nan if error is None else error,
                    "error_mm": np.nan,
                }
            )
    return pd.DataFrame(rows)


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.height, image.width


def rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def figure_pixel(x: float, y: float, size=SIZE) -> tuple[int, int]:
    """(row, column) of the PNG pixel under image point (x, y) in an image_figure."""
    scale = IMAGE_FIGURE_LONG_SIDE / max(size)
    return int((y + 0.5) * scale), int((x + 0.5) * scale)


def test_worst_and_best_samples_are_selected():
    errors = {"a": 1.0, "b": 9.0, "c": 5.0, "d": 3.0, "e": 7.0, "u": None}
    assert select_samples(table(errors), 2) == ["b", "e", "d", "a"]
    assert select_samples(table(errors), 3) == ["b", "e", "c", "d", "a"]  # all annotated
    assert select_samples(table(errors), -1) == ["a", "b", "c", "d", "e", "u"]


def test_result_figures_have_the_expected_files_and_sizes(tmp_path):
    predictions = table({"a": 1.0, "b": 9.0, "c": 5.0, "u": None})
    figures = save_result_figures(
        predictions, "px", tmp_path, lambda _: np.zeros(SIZE), count=1, thresholds=[2.0, 4.0]
    )
    names = sorted(p.relative_to(tmp_path).as_posix() for p in figures)
    assert names == ["error_boxplot.png", "predictions/a.png", "predictions/b.png", "sdr_curve.png"]
    scale = IMAGE_FIGURE_LONG_SIDE / max(SIZE)
    assert png_size(tmp_path / "predictions" / "b.png") == (SIZE[0] * scale, SIZE[1] * scale)
    assert png_size(tmp_path / "sdr_curve.png") == (400, 600)
    assert png_size(tmp_path / "error_boxplot.png")[0] == 400
    # sample b: the prediction (red) and the target (green) 9 px to its right, where drawn
    first = predictions[(predictions["id"] == "b") & (predictions["landmark"] == 0)].iloc[0]
    red = rgb(tmp_path / "predictions" / "b.png")[figure_pixel(first.pred_x, first.pred_y)]
    green = rgb(tmp_path / "predictions" / "b.png")[figure_pixel(first.target_x, first.target_y)]
    assert red[0] > 200 and red[1] < 80, red
    assert green[1] > 200 and green[0] < 80, green


def test_all_figures_including_unannotated_and_none(tmp_path):
    predictions = table({"a": 1.0, "u": None})
    figures = save_result_figures(predictions, "px", tmp_path, lambda _: np.zeros(SIZE), -1, [2.0])
    assert (tmp_path / "predictions" / "u.png").is_file() and len(figures) == 4
    (tmp_path / "x").mkdir()
    only_plots = save_result_figures(predictions, "px", tmp_path / "x", lambda _: 0, 0, [2.0])
    assert [p.name for p in only_plots] == ["error_boxplot.png", "sdr_curve.png"]


def test_sampler_debug_figure_draws_the_landmark_on_the_heatmap_peak(tmp_path):
    """The label generator's heatmap peak and the drawn landmark are the same pixel."""
    landmarks = torch.tensor([[[41.0, 7.0], [6.0, 22.0]]])  # x, y in a (30, 50) input
    generator = UNetLabelGenerator(sigma=2.0, num_levels=1)
    labels = generator.generate_labels(landmarks, torch.ones(1, 2), SIZE)
    heatmaps = labels[0][0].numpy()
    path = tmp_path / "sample.png"
    generator.debug_sample(np.zeros(SIZE), landmarks[0].numpy(), [heatmaps], path)
    picture = rgb(path)
    assert picture.shape[:2] == (SIZE[0] * 16, SIZE[1] * 16)
    for k in range(2):
        row, column = np.unravel_index(heatmaps[k].argmax(), SIZE)  # the generator's peak
        colour = picture[figure_pixel(column, row)]
        assert colour[0] < 80 and colour[1] > 180 and colour[2] > 180, (k, colour)  # cyan
    elsewhere = picture[figure_pixel(22, 6)]  # landmark 1 with x and y swapped: no marker
    assert not (elsewhere[0] < 80 and elsewhere[1] > 180 and elsewhere[2] > 180)


@pytest.mark.parametrize("num_landmarks", [3, 6])
def test_inference_debug_figure_size(tmp_path, num_landmarks):
    k = num_landmarks
    path = tmp_path / "debug.png"
    points = np.tile([[10.0, 12.0]], (k, 1))
    save_heatmap_debug_figure(
        np.zeros(SIZE),
        np.random.rand(k, *SIZE),
        points,
        points + 1,
        np.ones(k),
        np.full(k, np.nan),
        list(range(k)),
        "sample",
        path,
    )
    width, height = debug_figure_size(k, SIZE)
    assert png_size(path) == (round(height * 100), round(width * 100))
    assert width == 3.0 * min(k, 4)
