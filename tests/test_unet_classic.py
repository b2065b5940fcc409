"""Tests of models/unet_classic.py: the feature plan and the deep-supervision outputs."""

import pytest
import torch

from models.unet_classic import UNet, plan_unet_features


@pytest.mark.parametrize(
    ("size", "min_res", "init", "max_features", "expected"),
    [
        ((256, 256), 8, 16, 128, [16, 32, 64, 128, 128, 128]),  # 256 -> 8 px: 6 levels
        ((64, 80), 4, 8, 64, [8, 16, 32, 64, 64]),  # 64x80 -> 4x5: 5 levels
        ((512, 512), 4, 32, 512, [32, 64, 128, 256, 512, 512, 512, 512]),
        ((32, 48), 4, 4, 16, [4, 8, 16, 16]),  # 32x48 -> 4x6
        ((96, 64), 8, 8, 1000, [8, 16, 32, 64]),  # 96x64 -> 12x8
    ],
)
def test_plan_features(size, min_res, init, max_features, expected):
    assert plan_unet_features(size, min_res, init, max_features) == expected


def test_plan_stops_at_odd_size():
    # 40x48 -> 20x24 -> 10x12 -> 5x6: 5 is odd, so no further halving despite min_res 2
    assert plan_unet_features((40, 48), 2, 8, 512) == [8, 16, 32, 64]
    # odd width from the start of the second halving
    assert plan_unet_features((64, 6), 1, 4, 64) == [4, 8]


def test_plan_limited_by_smaller_side():
    # min(32, 128): 32 -> 16 -> 8 -> 4 (min_res 4); the long side alone would allow more
    assert len(plan_unet_features((32, 128), 4, 8, 64)) == 4


@pytest.mark.parametrize(
    ("size", "min_res"), [((8, 8), 8), ((7, 64), 2), ((64, 63), 2), ((6, 6), 4)]
)
def test_plan_too_small_raises(size, min_res):
    with pytest.raises(ValueError, match="MIN_FEATURE_RESOLUTION"):
        plan_unet_features(size, min_res, 8, 64)


def test_unet_output_shapes_non_square():
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=3, features=[4, 8, 16], num_outputs=2)
    outputs = model(torch.randn(2, 1, 32, 48))
    assert isinstance(outputs, list)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32, 48), (2, 3, 16, 24)]
    assert model.input_multiple == 4


def test_unet_single_output_and_deepest_level():
    torch.manual_seed(0)
    model = UNet(in_channels=2, out_channels=1, features=[2, 4, 8, 8], num_outputs=1)
    outputs = model(torch.randn(1, 2, 16, 40))
    assert [tuple(o.shape) for o in outputs] == [(1, 1, 16, 40)]
    deep = UNet(in_channels=1, out_channels=2, features=[2, 4, 8, 8], num_outputs=3)
    shapes = [tuple(o.shape) for o in deep(torch.randn(1, 1, 16, 40))]
    assert shapes == [(1, 2, 16, 40), (1, 2, 8, 20), (1, 2, 4, 10)]
    assert deep.input_multiple == 8


def test_unet_gradients_reach_first_layer():
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=2, features=[4, 8, 16], num_outputs=2)
    outputs = model(torch.randn(2, 1, 16, 24))
    sum(o.square().mean() for o in outputs).backward()
    first_conv = model.encoder[0][0]
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0
    assert all(head.weight.grad is not None for head in model.heads)


def test_unet_deterministic_in_eval():
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=2, features=[4, 8, 16]).eval()
    x = torch.randn(1, 1, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], model(x)[0])


@pytest.mark.parametrize("num_outputs", [0, 3, -1])
def test_num_outputs_out_of_range(num_outputs):
    with pytest.raises(ValueError, match="num_outputs"):
        UNet(in_channels=1, out_channels=3, features=[4, 8, 16], num_outputs=num_outputs)
