"""Tests of losses/adaptive_wing.py and the loss registry (losses/loss_index.py)."""

import math

import pytest
import torch

from losses.adaptive_wing import AdaptiveWingLoss
from losses.loss_index import HEATMAP_LOSS_INDEX, build_heatmap_loss
from losses.losses import HeatmapMSELoss
from utils.errors import ConfigError


def paper_awl(y: float, y_hat: float) -> float:
    """Wang et al. (2019), eq. 7, with alpha 2.1, omega 14, epsilon 1, theta 0.5, by hand."""
    alpha, omega, epsilon, theta = 2.1, 14.0, 1.0, 0.5
    d = abs(y - y_hat)
    if d < theta:
        return omega * math.log(1 + (d / epsilon) ** (alpha - y))
    a = (
        omega
        * (1 / (1 + (theta / epsilon) ** (alpha - y)))
        * (alpha - y)
        * (theta / epsilon) ** (alpha - y - 1)
        / epsilon
    )
    c = theta * a - omega * math.log(1 + (theta / epsilon) ** (alpha - y))
    return a * d - c


@pytest.mark.parametrize(
    ("y", "y_hat", "expected"),
    [(0.0, 0.1, 0.110767), (1.0, 0.2, 8.29981), (0.5, 0.5, 0.0), (0.0, 1.0, 8.49595)],
)
def test_pixel_loss_matches_the_paper(y, y_hat, expected):
    loss = AdaptiveWingLoss().pixel_loss(torch.tensor([y_hat]), torch.tensor([y]))
    assert loss.item() == pytest.approx(paper_awl(y, y_hat), rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-4)  # the same numbers, written out


def test_weighted_loss_map_dilates_the_foreground():
    target = torch.zeros(1, 1, 7, 7)
    target[0, 0, 3, 3] = 1.0
    target[0, 0, 3, 4] = 0.1  # below the 0.2 threshold, but inside the dilation
    loss_map = AdaptiveWingLoss().loss_map(target)
    assert loss_map[0, 0, 2:5, 2:5].eq(11).all()
    assert loss_map.sum().item() == 9 * 11 + 40 * 1


def test_mean_loss_on_scaled_heatmaps_equals_unit_heatmaps():
    torch.manual_seed(0)
    target, prediction = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    unit = AdaptiveWingLoss()(prediction, target)
    scaled = AdaptiveWingLoss(heatmap_scale=100.0)(prediction * 100, target * 100)
    torch.testing.assert_close(scaled, unit)
    by_hand = torch.tensor(
        [
            paper_awl(t, p) * w
            for t, p, w in zip(
                target.flatten().tolist(),
                prediction.flatten().tolist(),
                AdaptiveWingLoss().loss_map(target).flatten().tolist(),
                strict=True,
            )
        ]
    ).mean()
    torch.testing.assert_close(unit, by_hand.float(), rtol=1e-5, atol=1e-6)


def test_gradient_is_finite_and_continuous_everywhere():
    theta = 0.5
    targets = torch.tensor([0.0, 0.3, 0.7, 1.0])
    for y in targets:
        for d in (0.0, 1e-7, theta - 1e-6, theta, theta + 1e-6, 0.9, -theta, -1e-7):
            y_hat = (y + d).clone().detach().double().requires_grad_(True)
            loss = AdaptiveWingLoss().pixel_loss(y_hat, y.double())
            (grad,) = torch.autograd.grad(loss, y_hat)
            assert torch.isfinite(loss) and torch.isfinite(grad), (float(y), d)
    # The two branches meet with the same value and slope at theta.
    for y in targets.double():
        below = torch.tensor(float(y) + theta - 1e-7, dtype=torch.float64, requires_grad=True)
        above = torch.tensor(float(y) + theta + 1e-7, dtype=torch.float64, requires_grad=True)
        loss_below = AdaptiveWingLoss().pixel_loss(below, y)
        loss_above = AdaptiveWingLoss().pixel_loss(above, y)
        assert loss_below.item() == pytest.approx(loss_above.item(), abs=1e-5)
        (g_below,) = torch.autograd.grad(loss_below, below)
        (g_above,) = torch.autograd.grad(loss_above, above)
        assert g_below.item() == pytest.approx(g_above.item(), rel=1e-4)


def test_registry_builds_each_loss_and_lists_names_for_unknown():
    assert isinstance(build_heatmap_loss("mse", 100.0), HeatmapMSELoss)
    awl = build_heatmap_loss("awl", 100.0)
    assert isinstance(awl, AdaptiveWingLoss) and awl.heatmap_scale == 100.0
    with pytest.raises(ConfigError, match="SOLVER.LOSS_FUNCTION") as info:
        build_heatmap_loss("focal", 100.0)
    assert all(name in str(info.value) for name in HEATMAP_LOSS_INDEX)
