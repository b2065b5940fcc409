"""Heatmap losses, and the deep-supervision wrapper that applies one to every output level."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class HeatmapMSELoss(nn.Module):
    """Mean squared error between predicted and target heatmaps of the same shape."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.mean((prediction.float() - target.float()) ** 2)


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
