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
        *ModelTrainerBase.checkpoint_config_keys,
        "MODEL.PHDNET.CLASS_LABEL_SCHEME",
        "MODEL.PHDNET.LOG_TRANSFORM_DISPLACEMENTS",
        "MODEL.PHDNET.CLAMP_DIST",
    )

    def __init__(self, cfg, dataset_class, label_generator_class) -> None:
        super().__init__(cfg, dataset_class, label_generator_class)
        for key, default in (("LOSS_FUNCTION", "mse"), ("REGRESS_SIGMA", False)):
            if cfg.SOLVER[key] != default:  # its targets are patch classes and displacements
                raise ConfigError(
                    f"SOLVER.{key} {cfg.SOLVER[key]!r} is for U-Net; PHD-Net "
                    "trains with its own heatmap and displacement loss"
                )
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
        if any(s % self.patch_size for s in self.network_input_size):
            raise ConfigError(
                f"the network input {list(self.network_input_size)} must be divisible by "
                f"the PHD-Net patch size {self.patch_size} (2^MAXPOOL_FACTOR)"
            )
        self.network = PHDNet(
            self.input_channels, self.num_landmarks, self.branch_scheme, self.maxpool_factor
        )
        self.input_multiple = self.patch_size
        grid = [s // self.patch_size for s in self.network_input_size]
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
        if "offset" in flipped:  # and a downward offset becomes an upward one
            sign = torch.tensor([1.0, -1.0], device=flipped["offset"].device)[:, None, None]
            flipped["offset"] = flipped["offset"] * sign
        return flipped

    def output_to_average(self, output):
        """Probabilities and displacements in patches: averaging logits or log-displacements
        would bias the mean (log-displacements 2 and 4 patches average to 2.9)."""
        if "probability" in output or "offset" in output:
            return output
        decoded = {}
        if "heatmap" in output:
            logits = output["heatmap"].float()
            decoded["probability"] = (
                logits.clamp_min(0)
                if self.class_label_scheme == "gaussian"
                else torch.sigmoid(logits)
            )
        if "displacement" in output:
            decoded["offset"] = decode_displacement(
                output["displacement"].float(), self.log_transform
            )
        return decoded

    def display_heatmaps(self, output):
        """The candidate-smoothed maps (B, K, H, W) at input size: what is decoded."""
        decoded = self.output_to_average(output)
        grid = next(iter(decoded.values())).shape[-2:]
        return candidate_smoothing(
            decoded.get("probability"),
            decoded.get("offset"),
            [side * self.patch_size for side in grid],
            self.vote_sigma,
            weight_votes_by_heatmap=self.class_label_scheme != "gaussian",  # one-hot heatmaps
            max_displacement=self.clamp_dist,
        )

    def get_coords_from_heatmap(self, output, original_sizes):
        smoothed = self.display_heatmaps(output)
        height, width = self.whole_image_size(original_sizes)  # the grid may cover padding
        return self.decode_heatmap_batch(
            smoothed[..., :height, :width], original_sizes, sigma=self.vote_sigma
        )
