"""Adaptive Wing loss (Wang, Bo and Fuxin, ICCV 2019) for heatmap regression.

The paper's loss assumes targets in [0, 1]: its exponent ``alpha - y`` lies in [1.1, 2.1], so
near the target the loss is steeper than L2 on foreground pixels (they keep being pulled to
their peak) and L2-like on the background. The original LaNNU-Net applied it to heatmaps
scaled by HM_LAMBDA_SCALE = 100: there ``alpha - y`` reaches -98 at a peak, and the loss of that
pixel falls without bound as the error grows (3156 at an error of 0.1, -421 at 1, -11385 at 5),
so gradient descent pushed the peaks down. This implementation divides predictions and targets
by ``heatmap_scale`` first, so it is the paper's loss whatever the target peak.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from losses.losses import known_maps


class AdaptiveWingLoss(nn.Module):
    """Mean Adaptive Wing loss over (B, K, H, W) heatmaps, with the paper's weighted loss map.

    Args:
        heatmap_scale: the target peak (MODEL.HM_LAMBDA_SCALE); heatmaps are divided by it.
        alpha, omega, epsilon, theta: the paper's parameters (2.1, 14, 1, 0.5).
        foreground_weight: W of the loss map ``W * M + 1``; M = target > ``threshold``
            (0.2 of the peak), dilated by a 3x3 square, so pixels around each landmark count
            ``W + 1`` times.
    """

    def __init__(
        self,
        heatmap_scale: float = 1.0,
        alpha: float = 2.1,
        omega: float = 14.0,
        epsilon: float = 1.0,
        theta: float = 0.5,
        foreground_weight: float = 10.0,
        threshold: float = 0.2,
    ) -> None:
        super().__init__()
        self.heatmap_scale = float(heatmap_scale)
        self.alpha, self.omega, self.epsilon, self.theta = alpha, omega, epsilon, theta
        self.foreground_weight = foreground_weight
        self.threshold = threshold

    def pixel_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unweighted per-pixel loss of heatmaps in [0, 1] (targets), any shape."""
        difference = (prediction - target).abs()
        power = self.alpha - target
        ratio = self.theta / self.epsilon
        # A and C make the linear part meet the log part with equal value and slope at theta.
        a = self.omega / (1 + ratio**power) * power * ratio ** (power - 1) / self.epsilon
        c = self.theta * a - self.omega * torch.log1p(ratio**power)
        near = self.omega * torch.log1p((difference / self.epsilon) ** power)
        far = a * difference - c
        return torch.where(difference < self.theta, near, far)

    def loss_map(self, target: torch.Tensor) -> torch.Tensor:
        """``W * M + 1`` for (B, K, H, W) or (M, H, W) targets in [0, 1]."""
        foreground = (target > self.threshold).float()
        dilated = F.max_pool2d(foreground, kernel_size=3, stride=1, padding=1)
        return self.foreground_weight * dilated + 1

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over the maps of the landmarks that are not missing (``known_maps``)."""
        prediction, target = known_maps(prediction, target)
        if target.numel() == 0:
            return prediction.sum() * 0.0
        prediction = prediction / self.heatmap_scale
        target = target / self.heatmap_scale
        return torch.mean(self.pixel_loss(prediction, target) * self.loss_map(target))
