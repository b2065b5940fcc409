"""One learnable Gaussian target width per landmark, trained with the network (sigma regression).

Following Payer et al. (2019, "Integrating spatial configuration into heatmap regression based
CNNs") and Thaler et al. (2021), the targets of landmark k are Gaussians of width sigma_k whose
*mass* is fixed, ``peak = HM_LAMBDA_SCALE * (sigma_0 / sigma_k)^2`` (HM_LAMBDA_SCALE at the
initial sigma_0), made on the fly from the current sigma_k every step, so the heatmap loss is
differentiable in sigma_k. A wider, flatter target is always easier to fit, so the loss also
carries ``weight * mean_k sigma_k^2``; the balance leaves a larger sigma where the network cannot
place a landmark precisely (annotation noise, ambiguous anatomy) and a smaller one elsewhere.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedSigmas(nn.Module):
    """``forward()`` -> (K,) sigmas in pixels of the network input, kept positive as exp(log)."""

    def __init__(self, num_landmarks: int, initial_sigma: float) -> None:
        super().__init__()
        self.log_sigma = nn.Parameter(torch.full((num_landmarks,), math.log(initial_sigma)))

    def forward(self) -> torch.Tensor:
        return self.log_sigma.exp()


class NetworkWithLearnedSigmas(nn.Module):
    """A heatmap network and its landmarks' learned sigmas, saved and loaded together.

    ``forward`` is the network's; ``sigmas`` is the :class:`LearnedSigmas`."""

    def __init__(self, network: nn.Module, num_landmarks: int, initial_sigma: float) -> None:
        super().__init__()
        self.network = network
        self.sigmas = LearnedSigmas(num_landmarks, initial_sigma)

    @property
    def num_outputs(self) -> int:
        return self.network.num_outputs

    @property
    def input_multiple(self) -> int:
        return self.network.input_multiple

    def forward(self, x: torch.Tensor):
        return self.network(x)


class SigmaRegularisedLoss(nn.Module):
    """``loss(outputs, targets) + weight * mean(sigmas()^2)``: keeps sigmas from growing."""

    def __init__(self, loss: nn.Module, sigmas: LearnedSigmas, weight: float) -> None:
        super().__init__()
        self.loss = loss
        self.sigmas = sigmas
        self.weight = float(weight)

    def forward(self, outputs, targets) -> torch.Tensor:
        return self.loss(outputs, targets) + self.weight * torch.mean(self.sigmas() ** 2)
