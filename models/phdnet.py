"""PHD-Net: patch-wise heatmap and displacement regression (Schobs et al., ISBI 2021)."""

from __future__ import annotations

import torch
from torch import nn

BRANCH_SCHEMES = ("multi", "heatmap", "displacement")


def _conv_block(in_channels: int, out_channels: int, pool: bool) -> list[nn.Module]:
    layers = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    return layers + [nn.MaxPool2d(2)] if pool else layers


def _branch(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 96, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(96, out_channels, 1),
    )


class PHDNet(nn.Module):
    """Patch-wise multi-task network; one output cell per (2^maxpool_factor)² input patch.

    Args:
        in_channels: image channels.
        num_landmarks: K; every landmark has its own heatmap channel and displacement pair, so
            one model localises all landmarks (the original trained one model per landmark).
        branch_scheme: ``multi`` (both branches), ``heatmap`` or ``displacement``.
        maxpool_factor: number of 2x2 max-pools.
        features: filters of the first three (pooling) conv blocks; the three after have twice.

    ``forward`` maps (B, C, H, W), H and W divisible by 2^maxpool_factor, to a dict with
    ``heatmap`` (B, K, h, w) logits and/or ``displacement`` (B, K, 2, h, w) x,y offsets from each
    patch centre to the landmark (in patches, possibly log-transformed), h = H / 2^maxpool_factor.
    """

    def __init__(
        self,
        in_channels: int,
        num_landmarks: int,
        branch_scheme: str = "multi",
        maxpool_factor: int = 3,
        features: int = 32,
    ) -> None:
        super().__init__()
        if branch_scheme not in BRANCH_SCHEMES:
            raise ValueError(f"branch_scheme must be one of {BRANCH_SCHEMES}")
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(maxpool_factor):
            layers += _conv_block(channels, features, pool=True)
            channels = features
        for _ in range(3):
            layers += _conv_block(channels, 2 * features, pool=False)
            channels = 2 * features
        self.trunk = nn.Sequential(*layers)
        self.num_landmarks = num_landmarks
        self.patch_size = 2**maxpool_factor
        self.input_multiple = self.patch_size  # one output cell per patch
        self.heatmap = _branch(channels, num_landmarks) if branch_scheme != "displacement" else None
        self.displacement = (
            _branch(channels, 2 * num_landmarks) if branch_scheme != "heatmap" else None
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        output = {}
        if self.heatmap is not None:
            output["heatmap"] = self.heatmap(features)
        if self.displacement is not None:
            d = self.displacement(features)
            output["displacement"] = d.view(d.shape[0], self.num_landmarks, 2, *d.shape[-2:])
        return output
