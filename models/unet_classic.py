"""The auto-configured classic U-Net for heatmap regression, with deep supervision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def plan_unet_features(
    input_size: Sequence[int], min_feature_resolution: int, init_features: int, max_features: int
) -> list[int]:
    """Features per resolution level, finest first.

    Levels are added while halving the input (H, W) keeps both sides even-divisible and at least
    ``min_feature_resolution``; features start at ``init_features`` and double per level up to
    ``max_features``. E.g. (256, 256), 8, 16, 128 -> [16, 32, 64, 128, 128, 128] (256 ... 8 px).
    """
    height, width = int(input_size[0]), int(input_size[1])
    features = [init_features]
    while height % 2 == 0 and width % 2 == 0 and min(height, width) // 2 >= min_feature_resolution:
        height, width = height // 2, width // 2
        features.append(min(features[-1] * 2, max_features))
    if len(features) < 2:
        raise ValueError(
            f"input size {tuple(input_size)} cannot be halved even once with "
            f"MIN_FEATURE_RESOLUTION {min_feature_resolution}: use an even size at least twice it"
        )
    return features


class ConvBlock(nn.Sequential):
    """Two 3x3 conv → InstanceNorm → LeakyReLU(0.01); the first conv may downsample (stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        layers = []
        for i in range(2):
            layers += [
                nn.Conv2d(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    3,
                    stride=stride if i == 0 else 1,
                    padding=1,
                ),
                nn.InstanceNorm2d(out_channels, affine=True),
                nn.LeakyReLU(0.01, inplace=True),
            ]
        super().__init__(*layers)


class UNet(nn.Module):
    """Encoder-decoder with skip connections; one heatmap per landmark.

    Args:
        in_channels: image channels (1 for grayscale).
        out_channels: landmarks K.
        features: features per level, finest first (see :func:`plan_unet_features`).
        num_outputs: decoder levels that output heatmaps, finest first (1 = no deep supervision);
            at most ``len(features) - 1``.

    ``forward`` takes (B, in_channels, H, W), H and W divisible by ``2 ** (len(features) - 1)``,
    and returns a list of ``num_outputs`` heatmaps (B, K, H / 2^l, W / 2^l), finest first.
    """

    def __init__(
        self, in_channels: int, out_channels: int, features: Sequence[int], num_outputs: int = 1
    ) -> None:
        super().__init__()
        if not 1 <= num_outputs <= len(features) - 1:
            raise ValueError(f"num_outputs must be in 1..{len(features) - 1}, got {num_outputs}")
        self.features = list(features)
        self.num_outputs = num_outputs
        self.encoder = nn.ModuleList(
            [ConvBlock(in_channels, features[0])]
            + [ConvBlock(features[i - 1], features[i], stride=2) for i in range(1, len(features))]
        )
        self.upsample = nn.ModuleList(
            [
                nn.ConvTranspose2d(features[i + 1], features[i], 2, stride=2)
                for i in range(len(features) - 1)
            ]
        )
        self.decoder = nn.ModuleList(
            [ConvBlock(2 * features[i], features[i]) for i in range(len(features) - 1)]
        )
        self.heads = nn.ModuleList(
            [nn.Conv2d(features[i], out_channels, 1) for i in range(num_outputs)]
        )

    @property
    def input_multiple(self) -> int:
        """The total down-sampling: whole-image inputs are padded to sides divisible by it."""
        return 2 ** (len(self.features) - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for level in reversed(range(len(self.decoder))):
            x = self.upsample[level](x)
            x = self.decoder[level](torch.cat([skips[level], x], dim=1))
            if level < self.num_outputs:
                outputs.append(self.heads[level](x))
        return outputs[::-1]
