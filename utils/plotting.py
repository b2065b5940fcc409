"""Figures saved as PNG files (headless: the Agg backend, never a window)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from utils.metrics import uncertainty_score  # noqa: E402

FIGURE_DPI = 100
IMAGE_FIGURE_LONG_SIDE = 800  # pixels of an image figure's longer side


def save_training_curves(metrics: pd.DataFrame, path: Path) -> None:
    """Training and validation loss (log scale) and validation MRE per epoch."""
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(metrics["epoch"], metrics["train_loss"], label="training")
    if metrics["val_loss"].notna().any():
        ax_loss.plot(metrics["epoch"], metrics["val_loss"], label="validation")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    if metrics["val_mre_px"].notna().any():
        ax_err.plot(metrics["epoch"], metrics["val_mre_px"], color="tab:red")
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("validation MRE (px of the original image)")
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def image_figure(size: tuple[int, int]):
    """A figure whose one axes is exactly an (H, W) image, scaled by
    ``IMAGE_FIGURE_LONG_SIDE / max(H, W)``.

    Point (x, y) of the image lands on figure pixel ((x + 0.5)·s, (y + 0.5)·s) of the saved PNG
    (save with ``fig.savefig(path, dpi=FIGURE_DPI)``, no tight bounding box), so a figure can be
    checked pixel by pixel. Returns (fig, ax) with the image's limits set and the axis hidden.
    """
    height, width = int(size[0]), int(size[1])
    scale = IMAGE_FIGURE_LONG_SIDE / max(height, width)
    fig = plt.figure(figsize=(width * scale / FIGURE_DPI, height * scale / FIGURE_DPI))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_axis_off()
    return fig, ax


def save_sample_figure(
    image: np.ndarray, landmarks: np.ndarray, heatmap: np.ndarray, path: Path
) -> None:
    """An (H, W) image with its (K, 2) x,y landmarks (input pixels; cyan, numbered; NaN = not
    drawn) and an (H, W) heatmap overlaid, drawn by :func:`image_figure`."""
    fig, ax = image_figure(image.shape)
    ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.imshow(heatmap, cmap="hot", alpha=0.4, interpolation="nearest")
    ax.scatter(landmarks[:, 0], landmarks[:, 1], s=120, c="cyan", marker="+", linewidths=3)
    for k, (x, y) in enumerate(landmarks):
        if np.isfinite(x) and np.isfinite(y):
            ax.annotate(str(k), (x, y), xytext=(6, 6), textcoords="offset points", color="cyan")
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def save_uncertainty_curves(table: pd.DataFrame, path: Path, num_bins: int = 10) -> None:
    """Mean error per uncertainty decile (most certain first), one line per method."""
    fig, ax = plt.subplots(figsize=(6, 4))
    annotated = table[table["error_px"].notna()]
    for method, group in annotated.groupby("method", sort=False):
        scores = uncertainty_score(method, group["uncertainty"].to_numpy())
        ranks = pd.Series(scores).rank(method="first").to_numpy() - 1
        decile = np.minimum((ranks * num_bins / len(scores)).astype(int), num_bins - 1)
        errors = group["error_px"].to_numpy(float)
        means = [errors[decile == d].mean() for d in range(num_bins) if (decile == d).any()]
        ax.plot(np.arange(1, len(means) + 1) * 100 / num_bins, means, marker="o", label=method)
    ax.set_xlabel("uncertainty quantile (%), most certain first")
    ax.set_ylabel("mean radial error (px)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
