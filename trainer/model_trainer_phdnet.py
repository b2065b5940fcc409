"""PHD-Net: patch heatmap + displacement multi-task learning, combined by candidate smoothing.

Trains on whole images resized to SAMPLER.INPUT_SIZE (the network is fully convolutional);
patch sampling is a separate, later feature.
"""

from __future__ import annotations

import logging

import torch

from inference.candidate_smoothing import candidate_smoothing
from losses.losses import PHDNetLoss
from models.phdnet import PHDNet
from trainer.model_trainer_base import ModelTrainerBase
from transforms.generate_labels import decode_displacement
from utils.errors import ConfigError

logger = logging.getLogger(__name__)


class ModelTrainerPHDNet(ModelTrainerBase):
    """MODEL.PHDNET keys; MODEL.GAUSS_SIGMA is the heatmap target's sigma in patches."""

    checkpoint_config_keys = (
        "SAMPLER.INPUT_SIZE",
        "MODEL.PHDNET.CLASS_LABEL_SCHEME",
        "MODEL.PHDNET.LOG_TRANSFORM_DISPLACEMENTS",
        "MODEL.PHDNET.CLAMP_DIST",
    )

    def __init__(self, cfg, dataset_class, label_generator_class) -> None:
        super().__init__(cfg, dataset_class, label_generator_class)
        phdnet = cfg.MODEL.PHDNET
        self.branch_scheme = phdnet.BRANCH_SCHEME
        self.maxpool_factor = int(phdnet.MAXPOOL_FACTOR)
        self.class_label_scheme = phdnet.CLASS_LABEL_SCHEME
        self.weight_disp_by_heatmap = bool(phdnet.WEIGHT_DISP_LOSS_BY_HEATMAP)
        self.log_transform = bool(phdnet.LOG_TRANSFORM_DISPLACEMENTS)
        self.clamp_dist = None if phdnet.CLAMP_DIST is None else float(phdnet.CLAMP_DIST)
        self.patch_size = 2**self.maxpool_factor
        self.vote_sigma = self.patch_size / 2  # blur of each displacement vote, input pixels

    def initialize_network(self) -> None:
        if any(s % self.patch_size for s in self.input_size):
            raise ConfigError(
                f"SAMPLER.INPUT_SIZE {list(self.input_size)} must be divisible by "
                f"the PHD-Net patch size {self.patch_size} (2^MAXPOOL_FACTOR)"
            )
        self.network = PHDNet(1, self.num_landmarks, self.branch_scheme, self.maxpool_factor)
        grid = [s // self.patch_size for s in self.input_size]
        logger.info(
            "PHD-Net: %s patches of %d px, branches: %s", grid, self.patch_size, self.branch_scheme
        )

    def initialize_label_generator(self) -> None:
        self.label_generator = self.label_generator_class(
            patch_size=self.patch_size,
            sigma=self.gauss_sigma,
            class_label_scheme=self.class_label_scheme,
            log_transform=self.log_transform,
            clamp_dist=self.clamp_dist,
        )

    def initialize_optimizer_and_scheduler(self) -> None:
        self.optimizer = self.build_optimizer(self.network.parameters())

    def initialize_loss_function(self) -> None:
        self.loss = PHDNetLoss(self.class_label_scheme, self.weight_disp_by_heatmap)

    def flip_output_back(self, output):
        flipped = super().flip_output_back(output)  # every map upside down
        if "displacement" in flipped:  # and a downward offset becomes an upward one
            flipped["displacement"] = (
                flipped["displacement"]
                * torch.tensor([1.0, -1.0], device=flipped["displacement"].device)[:, None, None]
            )
        return flipped

    def get_coords_from_heatmap(self, output, original_sizes):
        heatmap = output.get("heatmap")
        if heatmap is not None:
            heatmap = heatmap.float()
            heatmap = (
                heatmap.clamp_min(0)
                if self.class_label_scheme == "gaussian"
                else torch.sigmoid(heatmap)
            )
        displacement = output.get("displacement")
        if displacement is not None:
            displacement = decode_displacement(displacement.float(), self.log_transform)
        smoothed = candidate_smoothing(
            heatmap,
            displacement,
            self.input_size,
            self.vote_sigma,
            weight_votes_by_heatmap=self.class_label_scheme != "gaussian",  # one-hot heatmaps
            max_displacement=self.clamp_dist,
        )
        return self.decode_heatmap_batch(smoothed, original_sizes, sigma=self.vote_sigma)
