"""Heatmap regression with the auto-configured U-Net (the default model)."""

from __future__ import annotations

import logging

import pandas as pd

from losses.loss_index import build_heatmap_loss
from losses.losses import DeepSupervisionLoss, deep_supervision_weights
from models.learned_sigmas import NetworkWithLearnedSigmas, SigmaRegularisedLoss
from models.unet_classic import UNet, plan_unet_features
from trainer.model_trainer_base import ModelTrainerBase
from utils.errors import ConfigError

logger = logging.getLogger(__name__)

SIGMA_LR_SCALE = 20.0  # learned sigmas' learning rate, relative to SOLVER.BASE_LR


class ModelTrainerUNet(ModelTrainerBase):
    """U-Net sized from SAMPLER.INPUT_SIZE (or the patch size) and MODEL.UNET, Gaussian
    targets, the heatmap loss SOLVER.LOSS_FUNCTION with deep supervision, and optionally one
    learned target sigma per landmark (SOLVER.REGRESS_SIGMA)."""

    # Sigma regression adds the sigmas to the saved weights.
    checkpoint_config_keys = (*ModelTrainerBase.checkpoint_config_keys, "SOLVER.REGRESS_SIGMA")

    def __init__(self, cfg, dataset_class, label_generator_class) -> None:
        super().__init__(cfg, dataset_class, label_generator_class)
        self.min_feature_resolution = int(cfg.MODEL.UNET.MIN_FEATURE_RESOLUTION)
        self.init_features = int(cfg.MODEL.UNET.INIT_FEATURES)
        self.max_features = int(cfg.MODEL.UNET.MAX_FEATURES)
        self.supervised_levels = (
            int(cfg.SOLVER.NUM_RES_SUPERVISIONS) if cfg.SOLVER.DEEP_SUPERVISION else 1
        )
        self.lambda_scale = float(cfg.MODEL.HM_LAMBDA_SCALE)
        self.loss_function = cfg.SOLVER.LOSS_FUNCTION
        self.regress_sigma = bool(cfg.SOLVER.REGRESS_SIGMA)
        self.sigma_loss_weight = float(cfg.SOLVER.REGRESS_SIGMA_LOSS_WEIGHT)
        build_heatmap_loss(self.loss_function, self.lambda_scale)  # an unknown name fails now

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
        self.network = UNet(self.input_channels, self.num_landmarks, features, num_outputs)
        if self.regress_sigma:
            self.network = NetworkWithLearnedSigmas(
                self.network, self.num_landmarks, self.gauss_sigma
            )
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
            learned_sigmas=self.network.sigmas if self.regress_sigma else None,
        )

    def initialize_optimizer_and_scheduler(self) -> None:
        if not self.regress_sigma:
            self.optimizer = self.build_optimizer(self.network.parameters())
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
        weights = deep_supervision_weights(self.network.num_outputs)
        heatmap_loss = build_heatmap_loss(self.loss_function, self.lambda_scale)
        self.loss = DeepSupervisionLoss(heatmap_loss, weights)
        if self.regress_sigma:
            self.loss = SigmaRegularisedLoss(self.loss, self.network.sigmas, self.sigma_loss_weight)

    def learned_sigmas(self) -> list[float] | None:
        """Each landmark's learned sigma in network-input pixels; None without REGRESS_SIGMA."""
        if not self.regress_sigma:
            return None
        return self.network.sigmas().detach().cpu().tolist()

    def on_epoch_end(self, *args, **kwargs) -> bool:
        stop = super().on_epoch_end(*args, **kwargs)
        if self.regress_sigma and self.process_group.is_main:
            sigmas = self.learned_sigmas()
            logger.info(
                "learned sigmas (input px): %s",
                " ".join(f"{k}:{s:.2f}" for k, s in zip(self.landmark_ids, sigmas, strict=True)),
            )
            self.write_learned_sigmas(sigmas)
        return stop

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

    def output_to_average(self, output):
        """Only the finest heatmap is decoded: averaging (TTA, E-MHA) and stitching skip the
        coarser deep-supervision levels."""
        return output[:1]

    def get_coords_from_heatmap(self, output, original_sizes):
        # The finest output; with learned sigmas, each landmark's decoder window fits its sigma.
        return self.decode_heatmap_batch(output[0], original_sizes, self.learned_sigmas())
