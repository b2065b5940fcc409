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


def _masked_batch():
    """Outputs and targets of 3 landmarks, landmark 1 missing (NaN target), and the same
    batch with landmark 1 dropped."""
    generator = torch.Generator().manual_seed(0)
    outputs = [torch.randn(2, 3, 8, 12, generator=generator, requires_grad=True)]
    targets = [torch.rand(2, 3, 8, 12, generator=generator)]
    targets[0][:, 1] = float("nan")
    return outputs, targets


@pytest.mark.parametrize("name", ["mse", "awl"])
def test_masked_landmark_carries_no_loss_and_no_gradient(name):
    """Garbage in a missing landmark's output changes nothing; the loss equals the loss of
    the batch with that landmark dropped, and its output gets no gradient."""
    from losses.loss_index import build_heatmap_loss

    loss = DeepSupervisionLoss(build_heatmap_loss(name, 1.0), [1.0])
    outputs, targets = _masked_batch()
    value = loss(outputs, targets)
    value.backward()
    assert torch.isfinite(value)
    assert torch.count_nonzero(outputs[0].grad[:, 1]) == 0
    assert torch.count_nonzero(outputs[0].grad[:, [0, 2]]) > 0
    garbage = [outputs[0].detach().clone()]
    garbage[0][:, 1] = 1e6
    keep = [0, 2]
    dropped = loss([outputs[0].detach()[:, keep]], [targets[0][:, keep]])
    assert loss(garbage, targets).item() == pytest.approx(value.item(), rel=1e-6)
    assert dropped.item() == pytest.approx(value.item(), rel=1e-6)


def test_phdnet_loss_ignores_missing_landmarks():
    from losses.losses import PHDNetLoss
    from transforms.generate_labels import PHDNetLabelGenerator

    codec = PHDNetLabelGenerator(patch_size=4, sigma=1.0)
    coords = torch.tensor([[[5.0, 6.0], [float("nan"), float("nan")], [20.0, 9.0]]])
    targets = codec.generate_labels(coords, torch.tensor([[1.0, 0.0, 1.0]]), (16, 24))
    assert targets["visible"].tolist() == [[1.0, 0.0, 1.0]]
    generator = torch.Generator().manual_seed(1)
    outputs = {
        "heatmap": torch.randn(1, 3, 4, 6, generator=generator, requires_grad=True),
        "displacement": torch.randn(1, 3, 2, 4, 6, generator=generator, requires_grad=True),
    }
    loss = PHDNetLoss()(outputs, targets)
    loss.backward()
    assert torch.count_nonzero(outputs["heatmap"].grad[:, 1]) == 0
    assert torch.count_nonzero(outputs["displacement"].grad[:, 1]) == 0
    keep = [0, 2]
    dropped = PHDNetLoss()(
        {key: value.detach()[:, keep] for key, value in outputs.items()},
        codec.generate_labels(coords[:, keep], torch.ones(1, 2), (16, 24)),
    )
    assert dropped.item() == pytest.approx(loss.item(), rel=1e-6)
