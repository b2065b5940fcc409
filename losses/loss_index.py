"""SOLVER.LOSS_FUNCTION keys: heatmap losses, each ``loss(prediction, target)`` on (B, K, H, W)
heatmaps whose target peak is ``heatmap_scale``. Deep supervision wraps whichever is chosen."""

from __future__ import annotations

from torch import nn

from losses.adaptive_wing import AdaptiveWingLoss
from losses.losses import HeatmapMSELoss
from utils.registry import look_up

HEATMAP_LOSS_INDEX: dict[str, type[nn.Module]] = {
    "mse": HeatmapMSELoss,
    "awl": AdaptiveWingLoss,
}


def build_heatmap_loss(name: str, heatmap_scale: float) -> nn.Module:
    """The loss registered as ``name``, for targets that peak at ``heatmap_scale``."""
    loss_class = look_up(HEATMAP_LOSS_INDEX, name, "SOLVER.LOSS_FUNCTION", "losses/loss_index.py")
    if loss_class is HeatmapMSELoss:
        return HeatmapMSELoss()
    return loss_class(heatmap_scale=heatmap_scale)
