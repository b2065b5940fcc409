"""PHD-Net: patch heatmap + displacement multi-task learning, combined by candidate smoothing.

Its label generator (transforms/generate_labels.PHDNetLabelGenerator) owns the patch grid's
targets and their decoding; this trainer builds the network and the loss, and knows the
architecture's rules: inputs divisible by the patch, its own loss, sigma in patches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from yacs.config import CfgNode

from config import get_value, is_auto
from losses.losses import PHDNetLoss
from models.phdnet import PHDNet
from trainer.model_trainer_base import ModelTrainerBase
from trainer.planning import network_input_key, network_input_size
from trainer.settings import Settings, key
from transforms.generate_labels import PHDNetLabelGenerator
from utils.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PHDNetSettings(Settings):
    """MODEL.PHDNET's network and loss keys (its target keys are the label generator's)."""

    branch_scheme: str = key("MODEL.PHDNET.BRANCH_SCHEME", "multi")
    maxpool_factor: int = key("MODEL.PHDNET.MAXPOOL_FACTOR", 3, int)
    class_label_scheme: str = key("MODEL.PHDNET.CLASS_LABEL_SCHEME", "gaussian")
    weight_disp_by_heatmap: bool = key("MODEL.PHDNET.WEIGHT_DISP_LOSS_BY_HEATMAP", True, bool)


class ModelTrainerPHDNet(ModelTrainerBase):
    """MODEL.PHDNET keys; MODEL.GAUSS_SIGMA is the heatmap target's sigma in patches."""

    label_generator_class = PHDNetLabelGenerator
    model_settings_class = PHDNetSettings
    unused_config_keys = (
        "MODEL.UNET",
        "MODEL.HM_LAMBDA_SCALE",
        "SOLVER.DEEP_SUPERVISION",
        "SOLVER.NUM_RES_SUPERVISIONS",
    )
    checkpoint_config_keys = (
        *ModelTrainerBase.checkpoint_config_keys,
        "MODEL.PHDNET.CLASS_LABEL_SCHEME",
        "MODEL.PHDNET.LOG_TRANSFORM_DISPLACEMENTS",
        "MODEL.PHDNET.CLAMP_DIST",
    )

    # ------------------------------------------------------------------ planning
    @classmethod
    def check_config(cls, cfg: CfgNode) -> None:
        for name, default in (("LOSS_FUNCTION", "mse"), ("REGRESS_SIGMA", False)):
            if cfg.SOLVER[name] != default:  # its targets are patch classes and displacements
                raise ConfigError(
                    f"SOLVER.{name} {cfg.SOLVER[name]!r} is for U-Net; PHD-Net "
                    "trains with its own heatmap and displacement loss"
                )
        patch = cls.planned_input_multiple(cfg)
        if is_auto(get_value(cfg, network_input_key(cfg))):  # planned divisible
            return
        if any(s % patch for s in network_input_size(cfg)):
            raise ConfigError(
                f"{network_input_key(cfg)} {list(network_input_size(cfg))} must be divisible "
                f"by the PHD-Net patch size {patch} (2^MODEL.PHDNET.MAXPOOL_FACTOR)"
            )

    @classmethod
    def planned_input_multiple(cls, cfg: CfgNode) -> int:
        return 2 ** int(cfg.MODEL.PHDNET.MAXPOOL_FACTOR)

    @classmethod
    def plan_sigma(cls, cfg, median_size, whole_input_size, landmarks_rel) -> tuple[float, str]:
        return 1.0, "PHD-Net: one patch, the Gaussian the patch-grid targets were designed for"

    # ------------------------------------------------------------------ extension points
    def initialize_network(self) -> None:
        settings: PHDNetSettings = self.model_settings
        self.network = PHDNet(
            self.sampling.input_channels,
            self.num_landmarks,
            settings.branch_scheme,
            settings.maxpool_factor,
        )
        grid = [s // self.network.patch_size for s in self.sampling.network_input_size]
        logger.info(
            "PHD-Net: %s patches of %d px, branches: %s",
            grid,
            self.network.patch_size,
            settings.branch_scheme,
        )

    def initialize_loss_function(self) -> None:
        settings: PHDNetSettings = self.model_settings
        self.loss = PHDNetLoss(settings.class_label_scheme, settings.weight_disp_by_heatmap)
