"""Tests of losses/losses.py: heatmap MSE and the deep-supervision weighting."""

import pytest
import torch

from losses.losses import DeepSupervisionLoss, HeatmapMSELoss, deep_supervision_weights


def test_deep_supervision_weights():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert deep_supervision_weights(1) == [1.0]
    weights = deep_supervision_weights(5)
    assert sum(weights) == pytest.approx(1.0)
    assert weights == pytest.approx([16 / 31, 8 / 31, 4 / 31, 2 / 31, 1 / 31])


def test_heatmap_mse_hand_values():
    prediction = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [3.0, 8.0]]]])
    # squared errors 0, 4, 0, 16 -> mean 5
    assert HeatmapMSELoss()(prediction, target).item() == pytest.approx(5.0)


def test_heatmap_mse_half_precision_computed_in_float():
    prediction = torch.full((1, 1, 2, 2), 300.0, dtype=torch.float16)
    target = torch.zeros(1, 1, 2, 2, dtype=torch.float16)
    loss = HeatmapMSELoss()(prediction, target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(90000.0)  # would overflow float16 (max 65504)


def test_deep_supervision_weighted_sum():
    outputs = [torch.full((1, 1, 4, 6), 3.0), torch.full((1, 1, 2, 3), 1.0)]
    targets = [torch.full((1, 1, 4, 6), 1.0), torch.zeros(1, 1, 2, 3)]
    # level losses: (3 - 1)^2 = 4 and 1^2 = 1 -> 0.75 * 4 + 0.25 * 1 = 3.25
    loss = DeepSupervisionLoss(HeatmapMSELoss(), [0.75, 0.25])(outputs, targets)
    assert loss.item() == pytest.approx(3.25)
    default = DeepSupervisionLoss(HeatmapMSELoss(), deep_supervision_weights(2))
    assert default(outputs, targets).item() == pytest.approx(2 / 3 * 4 + 1 / 3 * 1)


def test_deep_supervision_gradient():
    output = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss = DeepSupervisionLoss(HeatmapMSELoss(), [0.5])([output], [torch.ones(1, 1, 2, 2)])
    loss.backward()
    # d/dp 0.5 * mean((p - 1)^2) = 0.5 * 2 * (p - 1) / 4 = -0.25
    torch.testing.assert_close(output.grad, torch.full((1, 1, 2, 2), -0.25))


@pytest.mark.parametrize(("n_outputs", "n_targets"), [(2, 3), (3, 2), (2, 2)])
def test_mismatched_level_count_raises(n_outputs, n_targets):
    loss = DeepSupervisionLoss(HeatmapMSELoss(), deep_supervision_weights(3))
    outputs = [torch.zeros(1, 1, 2, 2)] * n_outputs
    targets = [torch.zeros(1, 1, 2, 2)] * n_targets
    with pytest.raises(ValueError, match="expected 3 levels"):
        loss(outputs, targets)
