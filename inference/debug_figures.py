"""INFERENCE.DEBUG: per-sample figures of the predicted heatmaps, with prediction and target.

One PNG per test image in ``OUTPUT_DIR/debug/<results folder>/<id>.png``: a panel per landmark
showing the input image, that landmark's heatmap (what the decoder saw), the prediction (red x)
and the target (green +) in input pixels, and the uncertainty and error in the panel's title.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from inference.predictions import target_coords
from utils.coordinates import resize_coords, resize_heatmaps
from utils.metrics import radial_errors
from utils.plotting import FIGURE_DPI, plt
from utils.result_figures import file_stem

if TYPE_CHECKING:
    from datasets.dataset_base import DatasetBase

PANEL_INCHES = 3.0  # width of one landmark's panel
MAX_COLUMNS = 4


def debug_figure_size(num_landmarks: int, size: Sequence[int]) -> tuple[float, float]:
    """(width, height) in inches of the figure for ``num_landmarks`` panels of an (H, W) input."""
    columns = min(num_landmarks, MAX_COLUMNS)
    rows = math.ceil(num_landmarks / columns)
    return PANEL_INCHES * columns, PANEL_INCHES * size[0] / size[1] * rows + 0.4


def save_heatmap_debug_figure(
    image: np.ndarray,
    heatmaps: np.ndarray,
    predictions: np.ndarray,
    targets: np.ndarray,
    uncertainty: np.ndarray,
    errors: np.ndarray,
    landmark_ids: Sequence[int],
    title: str,
    path: Path,
) -> None:
    """Save one sample's figure.

    Args:
        image: (H, W) input image.
        heatmaps: (K, H, W) predicted maps at input size.
        predictions, targets: (K, 2) x,y in input pixels; NaN rows are not drawn.
        uncertainty, errors: (K,) as in predictions.csv (errors NaN when unannotated).
    """
    num = len(landmark_ids)
    columns = min(num, MAX_COLUMNS)
    fig, axes = plt.subplots(
        math.ceil(num / columns),
        columns,
        figsize=debug_figure_size(num, image.shape),
        squeeze=False,
    )
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= num:
            continue
        ax.imshow(image, cmap="gray", interpolation="nearest")
        ax.imshow(heatmaps[k], cmap="hot", alpha=0.5, interpolation="nearest")
        ax.scatter(*targets[k], s=80, c="lime", marker="+", linewidths=2)
        ax.scatter(*predictions[k], s=60, c="red", marker="x", linewidths=2)
        error = "" if np.isnan(errors[k]) else f", err {errors[k]:.2f}"
        ax.set_title(f"L{landmark_ids[k]}: unc {uncertainty[k]:.3g}{error}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05, hspace=0.2)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def save_debug_batch(
    maps: torch.Tensor,
    dataset: DatasetBase,
    batch: dict[str, torch.Tensor],
    decoded: tuple[torch.Tensor, torch.Tensor, Any],
    evaluation_mode: str,
    landmark_ids: Sequence[int],
    folder: Path,
) -> None:
    """Figures for every sample of a predicted batch.

    Args:
        maps: (B, K, h, w) maps to show (the label generator's ``display_maps``).
        decoded: (coords (B, K, 2) in the evaluation mode's pixels, uncertainty (B, K), ...).
        evaluation_mode: INFERENCE.EVALUATION_MODE of ``decoded``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shown = tuple(batch["image"].shape[-2:])  # the image the network saw: figures use its pixels
    heatmaps = maps.float()[..., : shown[0], : shown[1]]
    if tuple(heatmaps.shape[-2:]) != shown:  # a coarser map: show it at image size
        heatmaps = resize_heatmaps(heatmaps, shown)
    coords, uncertainty = decoded[0].float().cpu().numpy(), decoded[1].float().cpu().numpy()
    in_input = evaluation_mode == "use_input_size"
    for row, index in enumerate(batch["index"].tolist()):
        sample = dataset.samples[index]
        size = tuple(batch["original_size"][row].tolist())
        predictions = coords[row] if in_input else resize_coords(coords[row], size, shown)
        errors = np.full(len(predictions), np.nan)
        targets = np.full_like(predictions, np.nan)
        if sample.has_annotation:
            target = target_coords(sample, size, evaluation_mode, dataset.input_size)
            errors = radial_errors(coords[row], target)
            targets = batch["coords"][row].numpy()
        save_heatmap_debug_figure(
            batch["image"][row, 0].numpy(),
            heatmaps[row].cpu().numpy(),
            predictions,
            targets,
            uncertainty[row],
            errors,
            landmark_ids or list(range(len(predictions))),
            f"{sample.id} (errors in px of the {'input' if in_input else 'original'} image)",
            folder / f"{file_stem(sample.id)}.png",
        )
