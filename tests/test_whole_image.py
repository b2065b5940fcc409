"""WholeImageRunner's precision: bfloat16 autocast returns float32 outputs close to float32's;
an unknown precision is refused."""

from __future__ import annotations

import pytest
import torch

from inference.whole_image import WholeImageRunner
from models.unet_classic import UNet
from transforms.generate_labels import UNetLabelGenerator


def test_bfloat16_forward_returns_float32_close_to_float32():
    torch.manual_seed(0)
    network = UNet(1, 3, [8, 16, 16], num_outputs=1).eval()
    codec = UNetLabelGenerator(sigma=2.0, num_levels=1)
    images = torch.randn(2, 1, 24, 40)  # non-square
    with torch.no_grad():
        full = WholeImageRunner(codec)(network, images)
        half = WholeImageRunner(codec, precision="bfloat16")(network, images)
        flipped = WholeImageRunner(codec, tta_flip=True, precision="bfloat16")(network, images)
    assert full[0].dtype == torch.float32 and half[0].dtype == torch.float32
    assert flipped[0].dtype == torch.float32
    scale = full[0].abs().max()
    difference = (half[0] - full[0]).abs().max()
    # bfloat16 keeps 8 bits of mantissa: close, and not bit-identical (it did run in bfloat16)
    assert 0 < difference < 0.05 * scale


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        WholeImageRunner(UNetLabelGenerator(sigma=2.0, num_levels=1), precision="float16")
