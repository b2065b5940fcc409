"""The figures of a results folder: predictions on the image, error box plot, success curve.

Written next to predictions.csv after inference (headless, Agg backend):

- ``predictions/<id>.png``: the image with predicted (red, numbered) and true (green) landmarks
  and a yellow line for each error, for the worst and best few test images by mean error, or all;
- ``error_boxplot.png``: the distribution of errors per landmark;
- ``sdr_curve.png``: success detection rate (% of errors within r) against the radius r.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from utils.metrics import error_column
from utils.plotting import FIGURE_DPI, image_figure, plt

logger = logging.getLogger(__name__)


def file_stem(sample_id: str) -> str:
    """A sample id as a file name: characters other than letters, digits, ``.-_`` become ``_``."""
    return re.sub(r"[^\w.-]", "_", sample_id)


def select_samples(table: pd.DataFrame, count: int) -> list[str]:
    """Sample ids to draw: every sample when ``count`` is -1, else the ``count`` annotated samples
    with the largest and the ``count`` with the smallest mean error (worst first)."""
    ids = list(dict.fromkeys(table["id"]))
    if count < 0:
        return ids
    per_sample = table[table["error_px"].notna()].groupby("id", sort=False)["error_px"].mean()
    ranked = list(per_sample.sort_values(ascending=False, kind="stable").index)
    if len(ranked) <= 2 * count:
        return ranked
    return ranked[:count] + ranked[-count:]


def save_prediction_figure(
    image: np.ndarray,
    predictions: np.ndarray,
    targets: np.ndarray | None,
    landmark_ids: Sequence[int],
    title: str,
    path: Path,
) -> None:
    """One (H, W) image with (K, 2) x,y predictions and targets (pixels of that image; targets
    None or NaN rows when unannotated), each landmark numbered by its JSON index."""
    fig, ax = image_figure(image.shape)
    ax.imshow(image, cmap="gray", interpolation="nearest")
    if targets is not None:
        for (px, py), (tx, ty) in zip(predictions, targets, strict=True):
            ax.plot([px, tx], [py, ty], color="yellow", linewidth=1.5)
        ax.scatter(targets[:, 0], targets[:, 1], s=60, c="lime", marker="+", linewidths=2, zorder=3)
    ax.scatter(
        predictions[:, 0], predictions[:, 1], s=60, c="red", marker="x", linewidths=2, zorder=4
    )
    for landmark, (x, y) in zip(landmark_ids, predictions, strict=True):
        ax.annotate(str(landmark), (x, y), xytext=(5, 5), textcoords="offset points", color="red")
    ax.text(
        0.01,
        0.99,
        title,
        transform=ax.transAxes,
        va="top",
        color="white",
        bbox={"facecolor": "black", "alpha": 0.6, "linewidth": 0},
    )
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def save_error_boxplot(table: pd.DataFrame, unit: str, path: Path) -> None:
    """Errors per landmark (annotated predictions), one box per landmark and method."""
    annotated = table[table["error_px"].notna()]
    column = error_column(unit)
    landmarks = sorted(annotated["landmark"].unique())
    methods = list(dict.fromkeys(annotated["method"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(landmarks) * len(methods)), 4))
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        rows = annotated[annotated["method"] == method]
        data = [rows.loc[rows["landmark"] == lm, column].to_numpy(float) for lm in landmarks]
        positions = np.arange(len(landmarks)) + (m - (len(methods) - 1) / 2) * width
        boxes = ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.9,
            patch_artist=True,
            medianprops={"color": "black"},
        )
        for box in boxes["boxes"]:
            box.set_facecolor(f"C{m}")
        ax.plot([], [], color=f"C{m}", linewidth=8, label=method)
    names = {}
    if "landmark_name" in annotated.columns:  # the JSON's landmark_names
        names = dict(zip(annotated["landmark"], annotated["landmark_name"], strict=True))
    ticks = [f"{lm} {names[lm]}" if lm in names else str(lm) for lm in landmarks]
    ax.set_xticks(np.arange(len(landmarks)), ticks, rotation=90 if names else 0)
    ax.set_xlabel("landmark")
    ax.set_ylabel(f"radial error ({unit})")
    if len(methods) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def save_sdr_curve(table: pd.DataFrame, unit: str, thresholds: Sequence[float], path: Path) -> None:
    """Success detection rate (% of errors <= r) against r, one line per method; the
    INFERENCE.SDR_THRESHOLDS radii are marked."""
    annotated = table[table["error_px"].notna()]
    column = error_column(unit)
    largest = max(float(annotated[column].max()), max(thresholds))
    radii = np.linspace(0, largest * 1.05, 200)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, group in annotated.groupby("method", sort=False):
        errors = np.sort(group[column].to_numpy(float))
        rate = 100.0 * np.searchsorted(errors, radii, side="right") / len(errors)
        ax.plot(radii, rate, label=method)
    for t in thresholds:
        ax.axvline(t, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel(f"radius ({unit})")
    ax.set_ylabel("success detection rate (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def save_result_figures(
    table: pd.DataFrame,
    unit: str,
    folder: Path,
    load_image: Callable[[str], np.ndarray],
    count: int,
    thresholds: Sequence[float],
) -> list[Path]:
    """Write the figures of a results folder; return their paths.

    Args:
        table: predictions.csv's rows; coordinates in pixels of the images ``load_image`` gives.
        unit: 'mm' or 'px', the unit of summary.csv (which error column to plot).
        load_image: sample id -> (H, W) image the coordinates refer to.
        count: OUTPUT.PREDICTION_FIGURES: N worst and N best samples, -1 = all, 0 = none.
    """
    figures = []
    if count != 0:
        (folder / "predictions").mkdir(exist_ok=True)
        method = table["method"].iloc[0]  # an ensemble's first method
        rows = table[table["method"] == method]
        for sample_id in select_samples(rows, count):
            sample = rows[rows["id"] == sample_id].sort_values("landmark")
            predictions = sample[["pred_x", "pred_y"]].to_numpy(float)
            annotated = sample["error_px"].notna().any()
            targets = sample[["target_x", "target_y"]].to_numpy(float) if annotated else None
            title = f"{sample_id} ({method})"
            if annotated:
                title += f": MRE {sample[error_column(unit)].mean():.2f} {unit}"
            path = folder / "predictions" / f"{file_stem(sample_id)}.png"
            save_prediction_figure(
                load_image(sample_id), predictions, targets, list(sample["landmark"]), title, path
            )
            figures.append(path)
    if table["error_px"].notna().any():
        save_error_boxplot(table, unit, folder / "error_boxplot.png")
        save_sdr_curve(table, unit, thresholds, folder / "sdr_curve.png")
        figures += [folder / "error_boxplot.png", folder / "sdr_curve.png"]
    logger.info("saved %d figures to %s", len(figures), folder)
    return figures
