"""Heatmap regression with the auto-configured U-Net (the default model)."""

from __future__ import annotations

import logging

from losses.losses import DeepSupervisionLoss, HeatmapMSELoss, deep_supervision_weights
from models.unet_classic import UNet, plan_unet_features
from trainer.model_trainer_base import ModelTrainerBase
from utils.errors import ConfigError

logger = logging.getLogger(__name__)


class ModelTrainerUNet(ModelTrainerBase):
    """U-Net sized from SAMPLER.INPUT_SIZE and MODEL.UNET, Gaussian targets, MSE loss."""

    def __init__(self, cfg, dataset_class, label_generator_class) -> None:
        super().__init__(cfg, dataset_class, label_generator_class)
        self.min_feature_resolution = int(cfg.MODEL.UNET.MIN_FEATURE_RESOLUTION)
        self.init_features = int(cfg.MODEL.UNET.INIT_FEATURES)
        self.max_features = int(cfg.MODEL.UNET.MAX_FEATURES)
        self.supervised_levels = (
            int(cfg.SOLVER.NUM_RES_SUPERVISIONS) if cfg.SOLVER.DEEP_SUPERVISION else 1
        )
        self.lambda_scale = float(cfg.MODEL.HM_LAMBDA_SCALE)

    def initialize_network(self) -> None:
        try:
            features = plan_unet_features(
                self.network_input_size,
                self.min_feature_resolution,
                self.init_features,
                self.max_features,
            )
        except ValueError as err:
            key = "SAMPLE_PATCH_SIZE" if self.patch_sampling else "INPUT_SIZE"
            raise ConfigError(f"SAMPLER.{key}: {err}") from None
        requested = self.supervised_levels
        num_outputs = min(requested, len(features) - 1)
        if num_outputs < requested:
            logger.warning(
                "SOLVER.NUM_RES_SUPERVISIONS %d > the %d decoder levels of this U-Net; "
                "supervising all %d",
                requested,
                len(features) - 1,
                num_outputs,
            )
        self.network = UNet(1, self.num_landmarks, features, num_outputs)
        self.input_multiple = 2 ** (len(features) - 1)
        smallest = [s // self.input_multiple for s in self.network_input_size]
        logger.info(
            "U-Net plan: %d levels (input %s down to %s), features %s, %d supervised outputs",
            len(features),
            list(self.network_input_size),
            smallest,
            features,
            num_outputs,
        )

    def initialize_label_generator(self) -> None:
        self.label_generator = self.label_generator_class(
            sigma=self.gauss_sigma,
            num_levels=self.network.num_outputs,
            lambda_scale=self.lambda_scale,
        )

    def initialize_optimizer_and_scheduler(self) -> None:
        self.optimizer = self.build_optimizer(self.network.parameters())

    def initialize_loss_function(self) -> None:
        weights = deep_supervision_weights(self.network.num_outputs)
        self.loss = DeepSupervisionLoss(HeatmapMSELoss(), weights)

    def output_to_average(self, output):
        """Only the finest heatmap is decoded: averaging (TTA, E-MHA) and stitching skip the
        coarser deep-supervision levels."""
        return output[:1]

    def get_coords_from_heatmap(self, output, original_sizes):
        return self.decode_heatmap_batch(output[0], original_sizes)  # the finest output
