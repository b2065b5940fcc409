"""Heatmap losses, and the deep-supervision wrapper that applies one to every output level."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def known_maps(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) as float, without the maps of missing landmarks: a missing
    landmark's target maps are NaN (transforms/generate_labels.py), and it carries no loss and
    no gradient. (B, K, H, W) stay as they are when every map is finite; else (M, H, W), the M
    finite maps (a mean over them is the mean with the missing landmarks dropped)."""
    prediction, target = prediction.float(), target.float()
    finite = torch.isfinite(target.sum(dim=(-2, -1)))  # (B, K): a NaN pixel makes its sum NaN
    if bool(finite.all()):
        return prediction, target
    return prediction[finite], target[finite]


class HeatmapMSELoss(nn.Module):
    """Mean squared error between predicted and target heatmaps of the same shape, over the
    maps of the landmarks that are not missing (:func:`known_maps`); 0 if all are."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prediction, target = known_maps(prediction, target)
        if target.numel() == 0:
            return prediction.sum() * 0.0
        return torch.mean((prediction - target) ** 2)


def deep_supervision_weights(num_levels: int) -> list[float]:
    """Weights halving from the finest level down, normalised to sum to 1."""
    raw = [0.5**level for level in range(num_levels)]
    return [w / sum(raw) for w in raw]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss(outputs[l], targets[l])`` over levels (finest first)."""

    def __init__(self, loss: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        self.loss = loss
        self.weights = list(weights)

    def forward(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]):
        if len(outputs) != len(self.weights) or len(targets) != len(self.weights):
            raise ValueError(
                f"expected {len(self.weights)} levels, got {len(outputs)} outputs and "
                f"{len(targets)} targets"
            )
        return sum(
            w * self.loss(o, t) for w, o, t in zip(self.weights, outputs, targets, strict=True)
        )


class PHDNetLoss(nn.Module):
    """Heatmap loss plus displacement MSE, for PHD-Net's dict outputs and targets.

    Heatmap: MSE on the raw output for ``gaussian`` targets; BCE-with-logits for ``binary``, and
    for ``binary_weighted`` with the one positive patch weighted by the number of negatives.
    Displacement: squared error of both components per patch, averaged with weights that are
    the Gaussian around the landmark (``weight_by_heatmap``; a one-hot binary target would leave
    one patch) or uniform, over visible landmarks only.
    Branches missing from the output are skipped.
    """

    def __init__(self, class_label_scheme: str = "gaussian", weight_by_heatmap: bool = True):
        super().__init__()
        self.class_label_scheme = class_label_scheme
        self.weight_by_heatmap = weight_by_heatmap

    def heatmap_loss(self, logits: torch.Tensor, target: torch.Tensor, visible: torch.Tensor):
        mask = visible[..., None, None].expand_as(target)
        if self.class_label_scheme == "gaussian":
            return (((logits.float() - target) ** 2) * mask).sum() / mask.sum().clamp_min(1)
        pos_weight = None
        if self.class_label_scheme == "binary_weighted":
            pos_weight = torch.tensor(
                target.shape[-2] * target.shape[-1] - 1.0, device=target.device
            )
        losses = nn.functional.binary_cross_entropy_with_logits(
            logits.float(), target, pos_weight=pos_weight, reduction="none"
        )
        return (losses * mask).sum() / mask.sum().clamp_min(1)

    def displacement_loss(self, predicted, target, heatmap, visible):
        squared = ((predicted.float() - target) ** 2).sum(dim=2)  # (B, K, h, w)
        weights = heatmap if self.weight_by_heatmap else torch.ones_like(heatmap)
        weights = weights * visible[..., None, None]
        return (squared * weights).sum() / weights.sum().clamp_min(1e-6)

    def forward(self, outputs: dict, targets: dict) -> torch.Tensor:
        loss = torch.zeros((), device=targets["heatmap"].device)
        if "heatmap" in outputs:
            loss = loss + self.heatmap_loss(
                outputs["heatmap"], targets["heatmap"], targets["visible"]
            )
        if "displacement" in outputs:
            loss = loss + self.displacement_loss(
                outputs["displacement"],
                targets["displacement"],
                targets["displacement_weight"],
                targets["visible"],
            )
        return loss
