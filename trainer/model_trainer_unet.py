"""Heatmap regression with the auto-configured U-Net (the default model)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
from yacs.config import CfgNode

from config import is_auto
from losses.loss_index import build_heatmap_loss
from losses.losses import DeepSupervisionLoss, deep_supervision_weights
from models.learned_sigmas import NetworkWithLearnedSigmas, SigmaRegularisedLoss
from models.unet_classic import UNet, plan_unet_features
from trainer.auto_rules import (
    MIN_AUTO_FEATURES,
    auto_init_features,
    auto_input_size,
    supervised_levels_for_sigma,
)
from trainer.model_trainer_base import ModelTrainerBase
from trainer.planning import network_input_key, network_input_size
from trainer.settings import Settings, key
from transforms.generate_labels import UNetLabelGenerator
from utils.errors import ConfigError

logger = logging.getLogger(__name__)

SIGMA_LR_SCALE = 20.0  # learned sigmas' learning rate, relative to SOLVER.BASE_LR
MAX_AUTO_SUPERVISIONS = 5  # SOLVER.NUM_RES_SUPERVISIONS "auto": at most as many as before


@dataclass(frozen=True)
class UNetSettings(Settings):
    """MODEL.UNET, the heatmap loss and its deep supervision, and sigma regression."""

    min_feature_resolution: int = key("MODEL.UNET.MIN_FEATURE_RESOLUTION", 4, int)
    init_features: int = key("MODEL.UNET.INIT_FEATURES", 32, int)
    max_features: int = key("MODEL.UNET.MAX_FEATURES", 512, int)
    deep_supervision: bool = key("SOLVER.DEEP_SUPERVISION", True, bool)
    num_res_supervisions: int = key("SOLVER.NUM_RES_SUPERVISIONS", 5, int)
    lambda_scale: float = key("MODEL.HM_LAMBDA_SCALE", 100.0, float)
    loss_function: str = key("SOLVER.LOSS_FUNCTION", "mse")
    regress_sigma: bool = key("SOLVER.REGRESS_SIGMA", False, bool)
    sigma_loss_weight: float = key("SOLVER.REGRESS_SIGMA_LOSS_WEIGHT", 0.05, float)

    @property
    def supervised_levels(self) -> int:
        """Decoder levels asked to get a loss (at most as many as the U-Net has)."""
        return self.num_res_supervisions if self.deep_supervision else 1


def unet_features(settings: UNetSettings, input_size: tuple[int, int], size_key: str) -> list[int]:
    """The U-Net's features per level for ``input_size`` (H, W); a size that cannot be halved is
    a ConfigError naming ``size_key``."""
    try:
        return plan_unet_features(
            input_size,
            settings.min_feature_resolution,
            settings.init_features,
            settings.max_features,
        )
    except ValueError as err:
        raise ConfigError(f"{size_key}: {err}") from None


class ModelTrainerUNet(ModelTrainerBase):
    """U-Net sized from SAMPLER.INPUT_SIZE (or the patch size) and MODEL.UNET, Gaussian
    targets, the heatmap loss SOLVER.LOSS_FUNCTION with deep supervision, and optionally one
    learned target sigma per landmark (SOLVER.REGRESS_SIGMA)."""

    label_generator_class = UNetLabelGenerator
    model_settings_class = UNetSettings
    unused_config_keys = ("MODEL.PHDNET",)
    # Sigma regression adds the sigmas to the saved weights.
    checkpoint_config_keys = (*ModelTrainerBase.checkpoint_config_keys, "SOLVER.REGRESS_SIGMA")

    # ------------------------------------------------------------------ planning
    @classmethod
    def check_config(cls, cfg: CfgNode) -> None:
        build_heatmap_loss(cfg.SOLVER.LOSS_FUNCTION, float(cfg.MODEL.HM_LAMBDA_SCALE))

    @classmethod
    def plan_input_size(cls, cfg: CfgNode, median_size: tuple[float, float]) -> tuple[int, int]:
        """The median image within SAMPLER.MAX_INPUT_PIXELS, sides rounded to the U-Net's
        levels (trainer/auto_rules.auto_input_size)."""
        return auto_input_size(
            median_size,
            int(cfg.SAMPLER.MAX_INPUT_PIXELS),
            int(cfg.MODEL.UNET.MIN_FEATURE_RESOLUTION),
        )

    @classmethod
    def plan_init_features(cls, cfg: CfgNode, num_landmarks: int) -> tuple[int, str]:
        """One first-level feature per two landmarks, a power of two, within MIN_AUTO_FEATURES and
        MODEL.UNET.MAX_FEATURES (trainer/auto_rules.auto_init_features)."""
        most = int(cfg.MODEL.UNET.MAX_FEATURES)
        features = auto_init_features(num_landmarks, most)
        return features, (
            f"{num_landmarks} landmarks read from the finest level's features: one per two "
            f"landmarks as a power of two, at least {MIN_AUTO_FEATURES}, at most "
            f"MODEL.UNET.MAX_FEATURES {most}"
        )

    @classmethod
    def decoder_levels(cls, cfg: CfgNode) -> int:
        """The decoder levels of the U-Net this config builds (each may get a loss)."""
        unet = cfg.MODEL.UNET
        settings = UNetSettings(
            int(unet.MIN_FEATURE_RESOLUTION), int(unet.INIT_FEATURES), int(unet.MAX_FEATURES)
        )
        return len(unet_features(settings, network_input_size(cfg), network_input_key(cfg))) - 1

    @classmethod
    def supervised_levels(cls, cfg: CfgNode) -> int:
        if not cfg.SOLVER.DEEP_SUPERVISION:
            return 1
        most = min(MAX_AUTO_SUPERVISIONS, cls.decoder_levels(cfg))
        requested = cfg.SOLVER.NUM_RES_SUPERVISIONS
        if not is_auto(requested):
            return min(int(requested), cls.decoder_levels(cfg))
        if is_auto(cfg.MODEL.GAUSS_SIGMA):
            return most
        return supervised_levels_for_sigma(float(cfg.MODEL.GAUSS_SIGMA), most)

    @classmethod
    def plan_supervised_levels(cls, cfg: CfgNode) -> tuple[int, str]:
        """Every decoder level (at most MAX_AUTO_SUPERVISIONS) whose target Gaussian stays at
        least 0.5 px wide: sigma / 2^(L-1) >= 0.5."""
        if not cfg.SOLVER.DEEP_SUPERVISION:
            return 1, "SOLVER.DEEP_SUPERVISION False: the finest output alone"
        levels = cls.supervised_levels(cfg)
        sigma = float(cfg.MODEL.GAUSS_SIGMA)
        return levels, (
            f"of {cls.decoder_levels(cfg)} decoder levels (at most {MAX_AUTO_SUPERVISIONS}), "
            f"those whose Gaussian of sigma {sigma:g} px stays >= 0.5 px: "
            f"{sigma / 2 ** (levels - 1):g} px at the coarsest"
        )

    # ------------------------------------------------------------------ extension points
    def initialize_network(self) -> None:
        settings: UNetSettings = self.model_settings
        size = self.sampling.network_input_size
        features = unet_features(settings, size, network_input_key(self.cfg))
        requested = settings.supervised_levels
        num_outputs = min(requested, len(features) - 1)
        if num_outputs < requested:
            logger.warning(
                "SOLVER.NUM_RES_SUPERVISIONS %d > the %d decoder levels of this U-Net; "
                "supervising all %d",
                requested,
                len(features) - 1,
                num_outputs,
            )
        channels = self.sampling.input_channels
        self.network = UNet(channels, self.num_landmarks, features, num_outputs)
        if settings.regress_sigma:
            self.network = NetworkWithLearnedSigmas(
                self.network, self.num_landmarks, self.settings.gauss_sigma
            )
        smallest = [s // self.network.input_multiple for s in size]
        logger.info(
            "U-Net plan: %d levels (input %s down to %s), features %s, %d supervised outputs",
            len(features),
            list(size),
            smallest,
            features,
            num_outputs,
        )

    def initialize_optimizer_and_scheduler(self) -> None:
        if not self.model_settings.regress_sigma:
            super().initialize_optimizer_and_scheduler()
            return
        # Weight decay would pull log(sigma) towards 0, i.e. every sigma towards 1 pixel; and
        # Adam moves a parameter by about the learning rate per step, so at the network's rate
        # log(sigma) could change by only ~0.1 in a short run.
        self.optimizer = self.build_optimizer(
            [
                {"params": self.network.network.parameters()},
                {
                    "params": self.network.sigmas.parameters(),
                    "weight_decay": 0.0,
                    "lr_scale": SIGMA_LR_SCALE,
                },
            ]
        )

    def initialize_loss_function(self) -> None:
        settings: UNetSettings = self.model_settings
        weights = deep_supervision_weights(self.network.num_outputs)
        heatmap_loss = build_heatmap_loss(settings.loss_function, settings.lambda_scale)
        self.loss = DeepSupervisionLoss(heatmap_loss, weights)
        if settings.regress_sigma:
            self.loss = SigmaRegularisedLoss(
                self.loss, self.network.sigmas, settings.sigma_loss_weight
            )

    # ------------------------------------------------------------------ learned sigmas
    def learned_sigmas(self) -> list[float] | None:
        """Each landmark's learned sigma in network-input pixels; None without REGRESS_SIGMA."""
        if not self.model_settings.regress_sigma:
            return None
        return self.network.sigmas().detach().cpu().tolist()

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if self.model_settings.regress_sigma and self.process_group.is_main:
            sigmas = self.learned_sigmas()
            logger.info(
                "learned sigmas (input px): %s",
                " ".join(f"{k}:{s:.2f}" for k, s in zip(self.landmark_ids, sigmas, strict=True)),
            )
            self.write_learned_sigmas(sigmas)

    def write_learned_sigmas(self, sigmas: list[float]) -> None:
        """OUTPUT_DIR/learned_sigmas.csv: landmark, ``sigmas`` (K,) in network-input pixels,
        epoch."""
        table = pd.DataFrame(
            {
                "landmark": self.landmark_ids,
                "sigma_input_px": sigmas,
                "epoch": self.epoch,
            }
        )
        table.to_csv(self.output_dir / f"learned_sigmas{self.fold_tag}.csv", index=False)
