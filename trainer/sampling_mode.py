"""What the network is trained on: whole resized images, or patches of them (SAMPLER.SAMPLE_MODE).

The trainer holds one of these two objects and asks it, instead of testing for patch mode in
every method: what size the network sees, how many input channels it has, how the training and
validation sets are sampled, and how whole images are predicted afterwards.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from config import full_resolution_patches
from datasets.dataset_base import DatasetBase
from datasets.patch_sampling import PatchSampler, balanced_landmark_weights, patch_cooccurrence
from trainer.settings import PatchSettings

logger = logging.getLogger(__name__)


class WholeImages:
    """Whole images resized to ``input_size`` (H, W)."""

    patches = False
    input_channels = 1  # the image
    inference_mode = "resized"  # inference/whole_image.py

    def __init__(self, input_size: tuple[int, int] | None) -> None:
        # None only for patches of full-resolution images (Patches), which never resize
        self.input_size = None if input_size is None else tuple(input_size)

    @property
    def network_input_size(self) -> tuple[int, int]:
        """(H, W) of what the network is trained on."""
        return self.input_size

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) images are read at; None = their own size."""
        return self.input_size

    def training_set(self, train_set: DatasetBase, landmark_ids: list[int]) -> DatasetBase:
        """The set the training loader draws from."""
        return train_set

    def validation_sets(self, val_set: DatasetBase) -> tuple[DatasetBase, DatasetBase | None]:
        """(the set validation losses are computed on, the set of whole images whose errors
        are measured separately, or None when the first gives them)."""
        return val_set, None

    def patch_corners(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(B, 2) x,y of each input's top-left pixel in its image; None for whole images."""
        return None

    def after_first_epoch(self, landmarks_per_sample: float, num_landmarks: int) -> None:
        """Called once with what the first epoch's samples held on average."""


class Patches(WholeImages):
    """Patches of ``settings.patch_size`` cut from images at ``input_size`` or full resolution,
    placed around a landmark with probability ``settings.bias``, each landmark chosen so that
    all lie in about equally many patches."""

    patches = True

    def __init__(self, settings: PatchSettings, input_size: tuple[int, int]) -> None:
        super().__init__(input_size)
        self.settings = settings
        self.full_resolution = full_resolution_patches(settings.sample_mode, settings.resolution)
        self.landmark_weights: tuple[float, ...] | None = None  # set from the training set
        # A patch shows too little of the image to tell alike structures apart; two channels
        # saying where the patch lies let the network rule out look-alikes far from a landmark.
        self.input_channels = 3 if settings.position_channels else 1
        self.inference_mode = settings.inference_mode

    @property
    def network_input_size(self) -> tuple[int, int]:
        return tuple(self.settings.patch_size)

    @property
    def image_size(self) -> tuple[int, int] | None:
        return None if self.full_resolution else self.input_size

    def sampler(self) -> PatchSampler:
        return PatchSampler(self.settings.patch_size, self.settings.bias, self.landmark_weights)

    def training_set(self, train_set: DatasetBase, landmark_ids: list[int]) -> DatasetBase:
        self.balance_landmarks(train_set, landmark_ids)
        return train_set.with_patches(self.sampler())

    def validation_sets(self, val_set: DatasetBase) -> tuple[DatasetBase, DatasetBase | None]:
        return val_set.with_patches(self.sampler()), val_set  # loss on patches, error on images

    def patch_corners(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return batch["patch_corner"]

    def balance_landmarks(self, train_set: DatasetBase, landmark_ids: list[int]) -> None:
        """Set ``landmark_weights`` so that every landmark is inside about equally many
        patches of ``train_set`` (``datasets.patch_sampling.balanced_landmark_weights``)."""
        coords, visible = train_set.landmark_coords()
        if not len(coords):
            return
        cooccurrence = patch_cooccurrence(coords, visible, self.settings.patch_size)
        weights = balanced_landmark_weights(cooccurrence)
        self.landmark_weights = tuple(float(w) for w in weights)
        balanced = 100 * cooccurrence.T @ weights  # % of biased patches holding each landmark
        uniform = 100 * cooccurrence.T @ np.full(len(weights), 1.0 / len(weights))
        labels = [str(k) for k in landmark_ids]
        if train_set.landmark_names:  # the JSON's names, after the index
            labels = [
                f"{k} {name}" for k, name in zip(labels, train_set.landmark_names, strict=True)
            ]
        relative = " ".join(
            f"{k}:{w * len(weights):.2f}" for k, w in zip(labels, weights, strict=True)
        )
        logger.info(
            "patch placement: landmarks chosen with relative weights %s, so that each lies "
            "inside %.1f-%.1f%% of the patches placed around a landmark (uniform choice: "
            "%.1f-%.1f%%)",
            relative,
            balanced.min(),
            balanced.max(),
            uniform.min(),
            uniform.max(),
        )

    def after_first_epoch(self, landmarks_per_sample: float, num_landmarks: int) -> None:
        """Log how much rarer each landmark is as a target in patches than in whole images:
        the reason patch training needs more samples than full-image training to converge."""
        if not landmarks_per_sample > 0:
            return
        ratio = num_landmarks / landmarks_per_sample
        logger.log(
            logging.WARNING if ratio >= 2 else logging.INFO,
            "patches held %.2f of %d landmarks on average: each landmark is a training target "
            "%.1fx less often than in whole images, so patch training needs about %.0fx the "
            "samples of full-image training (SOLVER.MAX_EPOCHS x MINI_BATCH_SIZE x "
            "DATA_LOADER_BATCH_SIZE); a larger SAMPLE_PATCH_SIZE or SAMPLER_BIAS nearer 1 "
            "lowers the factor. Keep MODEL.GAUSS_SIGMA as wide in original pixels as for whole "
            'images ("auto" does): a thin target at full resolution may not be learned',
            landmarks_per_sample,
            num_landmarks,
            ratio,
            ratio,
        )


def sampling_mode(settings: PatchSettings, input_size: tuple[int, int]) -> WholeImages:
    """:class:`Patches` with SAMPLER.SAMPLE_MODE patch_bias, else :class:`WholeImages`."""
    return Patches(settings, input_size) if settings.enabled else WholeImages(input_size)
