"""The training loop, validation, checkpoints and inference shared by every model.

A model plugs in by subclassing :class:`ModelTrainerBase` and implementing five methods:
``initialize_network``, ``initialize_label_generator``, ``initialize_optimizer_and_scheduler``,
``initialize_loss_function`` and ``get_coords_from_heatmap`` (see trainer/model_trainer_unet.py).
The config is read here, in the constructor; everything below it gets plain values.
"""

from __future__ import annotations

import logging
import math
import random
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm
from yacs.config import CfgNode

from config import auto_keys, get_value, saved_cfg
from datasets.dataset_base import DatasetBase, prepared_annotation_file, read_dataset_json
from datasets.patch_sampling import PatchSampler, balanced_landmark_weights, patch_cooccurrence
from datasets.sampling import SeededEpochSampler
from inference.coarse_to_fine import refine_around_candidates
from inference.decoding import DecodedLandmarks, heatmap_to_coords
from inference.ensemble import average_outputs
from inference.predictions import target_coords
from inference.stitching import fully_convolutional, map_tensors, patchify_and_stitch
from tracking.base import Tracker
from trainer.preemption import Preempted, received_signals, stop_requested
from transforms.dataloader_transforms import build_augmentation
from transforms.generate_labels import LabelGenerator
from utils.checkpoints import CHECKPOINT_SUFFIX, load_checkpoint, save_checkpoint
from utils.coordinates import resize_image
from utils.distributed import (
    BatchShardSampler,
    ShardedSampler,
    current_process_group,
    mean_over_ranks,
    per_rank_batch_size,
    rank_device,
    reduce_validation,
    wrap_for_training,
)
from utils.errors import CheckpointError, ConfigError, DataError, TrainingError
from utils.plotting import save_training_curves

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"TRAINER.DEVICE {name!r} is not a device; use auto, cpu or cuda"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"TRAINER.DEVICE {name!r}, but CUDA is not available on this machine")
    return device


def flip_vertically(output: Any) -> Any:
    """Every tensor of a (nested list, tuple or dict of) tensor(s) upside down (dim -2)."""
    return map_tensors(lambda tensor: tensor.flip(-2), output)


def select_sample(batch_output: Any, row: int) -> Any:
    """Row ``row`` of every tensor in a (nested list, tuple or dict of) batched tensor(s), as
    NumPy arrays."""
    return map_tensors(lambda tensor: tensor[row].float().cpu().numpy(), batch_output)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_coarse_trainer(
    checkpoint: str | Path, device: torch.device, tta_flip: bool
) -> ModelTrainerBase:
    """A trainer holding the full-image model of ``checkpoint``, built from the config saved in
    it, set to decode into the pixels of whatever size it is given (scale_heatmap_first) and to
    use flip TTA as the run that loads it does."""
    from trainer.model_trainer_index import build_trainer

    state = load_checkpoint(checkpoint, map_location=device)
    cfg = saved_cfg(state["config"], source=str(checkpoint))
    if cfg.SAMPLER.SAMPLE_MODE != "full":
        raise ConfigError(
            f"SAMPLER.PATCH.COARSE_CHECKPOINT {checkpoint} was trained on patches; give a "
            "model trained on whole resized images (SAMPLER.SAMPLE_MODE full)"
        )
    cfg.INFERENCE.EVALUATION_MODE = "scale_heatmap_first"
    cfg.INFERENCE.TTA_FLIP = tta_flip
    cfg.TRAINER.DEVICE = str(device)
    cfg.freeze()
    trainer = build_trainer(cfg)
    trainer.load_checkpoint(checkpoint, resume_training=False)
    trainer.network.eval()
    return trainer


class ModelTrainerBase(ABC):
    """Owns data loaders, the training loop, validation, early stopping, checkpoints, inference.

    Subclasses set ``self.network``, ``self.label_generator``, ``self.optimizer`` and
    ``self.loss`` in the ``initialize_*`` methods; ``self.num_landmarks`` is known by then.
    """

    # Config keys that a checkpoint must have been trained with to be loaded (subclasses add
    # theirs, e.g. how their targets are encoded).
    checkpoint_config_keys: tuple[str, ...] = (
        "SAMPLER.INPUT_SIZE",
        "SAMPLER.SAMPLE_MODE",
        "SAMPLER.PATCH.SAMPLE_PATCH_SIZE",
        "SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM",
    )

    def __init__(
        self,
        cfg: CfgNode,
        dataset_class: type[DatasetBase],
        label_generator_class: type[LabelGenerator],
    ) -> None:
        if auto_keys(cfg):  # checkpoints and config.yaml must hold concrete values
            raise ConfigError(
                f"{', '.join(auto_keys(cfg))} still 'auto': resolve it with "
                "config_auto.prepare_config (main.py does), or use a run's config.yaml"
            )
        self.cfg = cfg  # kept for subclasses' own keys and for checkpoints; read below only
        self.architecture = cfg.MODEL.ARCHITECTURE
        self.dataset_class = dataset_class
        self.label_generator_class = label_generator_class
        self.output_dir = Path(cfg.OUTPUT.OUTPUT_DIR)
        self.process_group = current_process_group()  # torchrun's ranks, or one process
        self.device = rank_device(resolve_device(cfg.TRAINER.DEVICE), self.process_group)
        self.use_amp = bool(cfg.SOLVER.AUTO_MIXED_PRECISION) and self.device.type == "cuda"
        self.seed = int(cfg.SOLVER.SEED)

        self.dataset_root = Path(cfg.DATASET.ROOT)
        self.annotation_source = cfg.DATASET.SRC_TARGETS
        self.fold = int(cfg.TRAINER.FOLD)
        self.landmarks = list(cfg.DATASET.LANDMARKS)
        self.trainset_size = int(cfg.DATASET.TRAINSET_SIZE)
        self.default_pixel_size = tuple(cfg.DATASET.PIXEL_SIZE) or None
        self.input_size = tuple(int(s) for s in cfg.SAMPLER.INPUT_SIZE)
        self.data_aug = cfg.SAMPLER.DATA_AUG
        self.data_aug_package = cfg.SAMPLER.DATA_AUG_PACKAGE
        self.num_workers = int(cfg.SAMPLER.NUM_WORKERS)
        self.sampler_debug = bool(cfg.SAMPLER.DEBUG)
        self.cache_data = bool(cfg.TRAINER.CACHE_DATA)
        patch = cfg.SAMPLER.PATCH
        self.patch_sampling = cfg.SAMPLER.SAMPLE_MODE == "patch_bias"
        self.sample_patch_size = tuple(int(s) for s in patch.SAMPLE_PATCH_SIZE)
        self.sampler_bias = float(patch.SAMPLER_BIAS)
        self.inference_mode = patch.INFERENCE_MODE
        self.stitch_stride = tuple(int(s) for s in patch.STITCH_STRIDE) or None
        self.coarse_checkpoint = patch.COARSE_CHECKPOINT
        if self.coarse_checkpoint and not Path(self.coarse_checkpoint).is_file():
            raise CheckpointError(  # now, not after the first training epoch
                f"SAMPLER.PATCH.COARSE_CHECKPOINT not found: {self.coarse_checkpoint}"
            )
        self.coarse_trainer: ModelTrainerBase | None = None  # loaded at first use
        self.landmark_weights: tuple[float, ...] | None = None  # patch placement, per landmark
        # A patch shows too little of the image to tell alike structures apart; two channels
        # saying where the patch lies let the network rule out look-alikes far from a landmark.
        self.position_channels = self.patch_sampling and bool(patch.POSITION_CHANNELS)
        self.input_channels = 3 if self.position_channels else 1  # the image (+ x, y)
        # Images are read at INPUT_SIZE, or at their own size (None) for full-resolution patches.
        full_resolution = self.patch_sampling and patch.RESOLUTION_TO_SAMPLE_FROM == "full"
        self.image_size = None if full_resolution else self.input_size
        # What the network is trained on: the whole resized image, or a patch of it.
        self.network_input_size = self.sample_patch_size if self.patch_sampling else self.input_size
        self.input_multiple = 1  # initialize_network sets the network's total down-sampling

        self.max_epochs = int(cfg.SOLVER.MAX_EPOCHS)
        self.batches_per_epoch = int(cfg.SOLVER.MINI_BATCH_SIZE)
        self.batch_size = int(cfg.SOLVER.DATA_LOADER_BATCH_SIZE)
        self.base_lr = float(cfg.SOLVER.BASE_LR)
        self.warmup_epochs = int(cfg.SOLVER.WARMUP_EPOCHS)
        self.decay_policy = cfg.SOLVER.DECAY_POLICY
        self.optimizer_name = cfg.SOLVER.OPTIMIZER
        self.weight_decay = float(cfg.SOLVER.WEIGHT_DECAY)
        self.perform_validation = bool(cfg.TRAINER.PERFORM_VALIDATION)
        self.save_latest_only = bool(cfg.TRAINER.SAVE_LATEST_ONLY)
        self.early_stop_patience = int(cfg.TRAINER.EARLY_STOP_PATIENCE)

        self.evaluation_mode = cfg.INFERENCE.EVALUATION_MODE
        self.tta_flip = bool(cfg.INFERENCE.TTA_FLIP)
        self.decoding = cfg.INFERENCE.DECODING
        self.fit_gauss = bool(cfg.INFERENCE.FIT_GAUSS)
        self.gauss_sigma = float(cfg.MODEL.GAUSS_SIGMA)
        self.uncertainty_bins = int(cfg.INFERENCE.UNCERTAINTY_BINS)
        self.conformal_alpha = float(cfg.INFERENCE.CONFORMAL_ALPHA)
        self.sdr_thresholds = list(cfg.INFERENCE.SDR_THRESHOLDS)
        self.results_append = cfg.OUTPUT.RESULTS_CSV_APPEND or ""
        self.dataset_name = cfg.DATASET.NAME
        self.inference_debug = bool(cfg.INFERENCE.DEBUG)
        self.prediction_figures = int(cfg.OUTPUT.PREDICTION_FIGURES)
        self.tracker = Tracker()  # does nothing; main.py attaches Comet / TensorBoard (tracking/)

        self.network: torch.nn.Module | None = None
        self.train_network: torch.nn.Module | None = None  # the network, or its DDP wrapper
        self.label_generator: LabelGenerator | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.loss: torch.nn.Module | None = None
        self.num_landmarks: int | None = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.sampler_generator = torch.Generator()
        self.landmark_ids: list[int] | None = None  # JSON indices of the model's landmarks
        self.epoch = 0  # epochs completed
        self.best_metric = math.inf
        self.best_epoch = -1
        self.epochs_without_improvement = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ extension points
    @abstractmethod
    def initialize_network(self) -> None:
        """Build ``self.network`` (an nn.Module) for ``self.num_landmarks`` landmarks."""

    @abstractmethod
    def initialize_label_generator(self) -> None:
        """Build ``self.label_generator`` from ``self.label_generator_class``."""

    @abstractmethod
    def initialize_optimizer_and_scheduler(self) -> None:
        """Build ``self.optimizer`` (usually ``self.build_optimizer(params)``)."""

    @abstractmethod
    def initialize_loss_function(self) -> None:
        """Build ``self.loss(outputs, targets)`` for the network's outputs and the generator's
        targets."""

    @abstractmethod
    def get_coords_from_heatmap(
        self, output: Any, original_sizes: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Decode a batch of network outputs.

        Args:
            output: what ``self.network`` returned for a (B, C, H, W) input batch.
            original_sizes: (B, 2) H, W of each image file.
        Returns:
            coords (B, K, 2) x,y in pixels of each original image (of the input image with
            INFERENCE.EVALUATION_MODE use_input_size), an uncertainty (B, K) per landmark, and
            optionally a third item: covariances (B, K, 2, 2) in pixels² of the same image.
        """

    def decode_heatmap_batch(
        self,
        heatmaps: torch.Tensor,
        original_sizes: torch.Tensor,
        sigma: float | Sequence[float] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Decode (B, K, h, w) input-resolution heatmaps as INFERENCE.EVALUATION_MODE, DECODING
        and FIT_GAUSS say, with decoder windows for peaks of ``sigma`` input pixels (default
        MODEL.GAUSS_SIGMA; a (K,) sequence: one per landmark): a ready
        ``get_coords_from_heatmap`` body for heatmap models."""
        sigma = self.gauss_sigma if sigma is None else sigma
        per_landmark = not isinstance(sigma, int | float)
        groups = (
            [(slice(k, k + 1), float(s)) for k, s in enumerate(sigma)]
            if per_landmark
            else [(slice(None), float(sigma))]
        )
        decoded = []
        for b in range(heatmaps.shape[0]):
            parts = [
                heatmap_to_coords(
                    heatmaps[b, landmarks],
                    original_sizes[b].tolist(),
                    self.evaluation_mode,
                    method=self.decoding,
                    sigma=group_sigma,
                    fit_gauss=self.fit_gauss,
                )
                for landmarks, group_sigma in groups
            ]
            decoded.append(DecodedLandmarks.concatenate(parts))
        coords = torch.stack([d.coords for d in decoded])
        max_activation = torch.stack([d.max_activation for d in decoded])
        if self.fit_gauss:
            return coords, max_activation, torch.stack([d.covariance for d in decoded])
        return coords, max_activation

    def flip_output_back(self, output: Any) -> Any:
        """Undo a vertical flip of the input on the network's output in ``output_to_average``'s
        form (for INFERENCE.TTA_FLIP).

        The default flips every (B, K, H, W) heatmap of a tensor or list of them upside down,
        which is exact in the project's convention (y -> H - 1 - y maps pixel centres onto pixel
        centres). Override for outputs that are not heatmaps (e.g. displacements)."""
        return flip_vertically(output)

    def inference_forward(self, images: torch.Tensor, network: torch.nn.Module | None = None):
        """``network``'s (default: ``self.network``) output for a batch, in
        ``output_to_average``'s form; with TTA_FLIP, averaged with the output for the flipped
        images, flipped back."""
        network = network or self.network
        with self.autocast():
            output = self.whole_image_forward(images, network)
            if not self.tta_flip:
                return output
            flipped = self.flip_output_back(
                self.whole_image_forward(self.flip_input(images), network)
            )
        return average_outputs([output, flipped])

    def flip_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images flipped upside down for TTA_FLIP. Position channels are not
        flipped: they say where each pixel of the flipped image lies, as in training, where
        they are computed after augmentation."""
        if not self.position_channels:
            return images.flip(-2)
        return torch.cat([images[:, :1].flip(-2), images[:, 1:]], dim=1)

    def whole_image_forward(self, images: torch.Tensor, network: torch.nn.Module) -> Any:
        """``network``'s output for whole (B, C, H, W) images, in ``output_to_average``'s form;
        after patch training (one image per batch) run whole (padded to ``input_multiple``) or
        stitched from windows of the patch size, as SAMPLER.PATCH.INFERENCE_MODE says."""
        if not self.patch_sampling:
            return self.output_to_average(network(images))

        def forward(windows: torch.Tensor) -> Any:
            return self.output_to_average(network(windows))

        if self.inference_mode == "fully_convolutional":
            return fully_convolutional(forward, images, self.input_multiple)
        if self.inference_mode == "coarse_to_fine":
            return refine_around_candidates(
                forward,
                images,
                self.coarse_candidates(images),
                self.sample_patch_size,
                self.batch_size,
                self.input_multiple,
            )
        try:
            return patchify_and_stitch(
                forward,
                images,
                self.sample_patch_size,
                self.stitch_stride_pixels(),
                self.batch_size,
                self.input_multiple,
            )
        except ValueError as err:  # a stride that does not fit the network's output grid
            raise ConfigError(f"SAMPLER.PATCH.STITCH_STRIDE: {err}") from None

    @torch.no_grad()
    def check_stitch_stride(self) -> None:
        """Stitch one blank patch-sized image as inference will, so that a STITCH_STRIDE that
        does not fit the network's output grid is refused before training, not after it."""
        was_training = self.network.training
        self.network.eval()
        blank = torch.zeros(1, self.input_channels, *self.sample_patch_size, device=self.device)
        self.whole_image_forward(blank, self.network)
        self.network.train(was_training)

    def coarse_candidates(self, image: torch.Tensor) -> np.ndarray:
        """(K, 2) x,y of each landmark in pixels of the (1, 1, H, W) ``image``, predicted by the
        full-image model of SAMPLER.PATCH.COARSE_CHECKPOINT on the image resized to its input."""
        if self.coarse_trainer is None:
            self.coarse_trainer = load_coarse_trainer(
                self.coarse_checkpoint, self.device, self.tta_flip
            )
            if self.coarse_trainer.landmark_ids != self.landmark_ids:
                raise CheckpointError(
                    f"{self.coarse_checkpoint}: predicts landmarks "
                    f"{self.coarse_trainer.landmark_ids}, this model {self.landmark_ids}"
                )
        coarse = self.coarse_trainer
        small = resize_image(image[0, 0].float().cpu().numpy(), coarse.input_size)
        small = torch.from_numpy(small)[None, None].to(self.device)
        whole_size = torch.tensor([image.shape[-2:]])  # decode straight into this image's pixels
        with torch.no_grad():
            output = coarse.inference_forward(small)
            coords = coarse.get_coords_from_heatmap(output, whole_size)[0]
        return coords[0].float().cpu().numpy()

    def stitch_stride_pixels(self) -> tuple[int, int]:
        """SAMPLER.PATCH.STITCH_STRIDE, or half the patch rounded down to ``input_multiple``."""
        if self.stitch_stride:
            return self.stitch_stride
        m = self.input_multiple
        return tuple(max(m, side // 2 // m * m) for side in self.sample_patch_size)

    def whole_image_size(self, original_sizes: torch.Tensor) -> tuple[int, int]:
        """(H, W) of the images a batch was predicted on: SAMPLER.INPUT_SIZE, or at full
        resolution the original size of the batch's (single) image."""
        if self.image_size is not None:
            return self.image_size
        return tuple(int(s) for s in original_sizes[0].tolist())

    def display_heatmaps(self, output: Any) -> torch.Tensor:
        """(B, K, h, w) maps of a batch's output to show in INFERENCE.DEBUG figures: the first
        tensor of a list or tuple (the U-Net's finest level), a dict's ``heatmap``, or the
        tensor itself. Override where the decoded map is another (PHD-Net: candidate voting)."""
        if isinstance(output, dict):
            return output["heatmap"]
        if isinstance(output, list | tuple):
            return output[0]
        return output

    def output_to_average(self, output: Any) -> Any:
        """The form of a network output in which outputs are averaged (flip TTA, E-MHA); must
        still be accepted by ``get_coords_from_heatmap``. The default, the output itself, suits
        heatmaps; a model whose outputs are logits or encoded values returns them decoded
        (PHD-Net: probabilities and displacements in patches)."""
        return output

    # ------------------------------------------------------------------ set-up
    def initialize(self, num_landmarks: int) -> None:
        """Build network, label generator, optimizer and loss for ``num_landmarks``."""
        self.num_landmarks = num_landmarks
        self.landmark_ids = self.landmarks or list(range(num_landmarks))
        self.initialize_network()
        self.network.to(self.device)
        self.train_network = self.network  # train() wraps it in DDP under torchrun
        self.initialize_label_generator()
        self.initialize_optimizer_and_scheduler()
        self.initialize_loss_function()
        if self.patch_sampling and self.inference_mode == "patchify_and_stitch":
            self.check_stitch_stride()
        self.tracker.log_model(self.network)
        n_params = sum(p.numel() for p in self.network.parameters())
        logger.info(
            "%s: %d landmarks, %.2f M parameters, device %s%s",
            type(self.network).__name__,
            num_landmarks,
            n_params / 1e6,
            self.device,
            ", mixed precision" if self.use_amp else "",
        )

    def build_optimizer(self, parameters) -> torch.optim.Optimizer:
        """The optimizer named by SOLVER.OPTIMIZER at SOLVER.BASE_LR."""
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(
                parameters,
                lr=self.base_lr,
                momentum=0.99,
                nesterov=True,
                weight_decay=self.weight_decay,
            )
        optimizer_class = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        return optimizer_class(parameters, lr=self.base_lr, weight_decay=self.weight_decay)

    def annotation_file(self) -> Path:
        """The dataset JSON of this run (after letting the dataset class prepare its data)."""
        return prepared_annotation_file(
            self.dataset_class, self.dataset_root, self.annotation_source, self.fold
        )

    def make_dataset(self, split: str, augment: bool = False) -> DatasetBase:
        """One split of the annotation file at ``image_size`` (whole images; ``with_patches``
        cuts them into patches)."""
        augmentation = build_augmentation(self.data_aug, self.data_aug_package) if augment else None
        return self.dataset_class(
            json_path=self.annotation_file(),
            split=split,
            root=self.dataset_root,
            input_size=self.image_size,
            with_position=self.position_channels,
            landmarks=self.landmarks,
            augmentation=augmentation,
            cache_data=self.cache_data,
            default_pixel_size=self.default_pixel_size,
            max_samples=self.trainset_size if split == "training" else -1,
        )

    def evaluation_sets(self) -> tuple[DatasetBase, DatasetBase | None]:
        """The testing list, and the validation list (if any) to calibrate uncertainty on."""
        data = read_dataset_json(self.annotation_file())
        calibration = self.make_dataset("validation") if data.get("validation") else None
        return self.make_dataset("testing"), calibration

    def patch_sampler(self) -> PatchSampler:
        """Patches of SAMPLE_PATCH_SIZE, placed around a landmark with SAMPLER_BIAS, choosing
        landmarks by ``self.landmark_weights`` (set from the training set by ``train``)."""
        return PatchSampler(self.sample_patch_size, self.sampler_bias, self.landmark_weights)

    def balance_patch_landmarks(self, train_set: DatasetBase) -> None:
        """Set ``self.landmark_weights`` so that every landmark is inside about equally many
        patches of ``train_set`` (``datasets.patch_sampling.balanced_landmark_weights``)."""
        coords, visible = train_set.landmark_coords()
        if not len(coords):
            return
        cooccurrence = patch_cooccurrence(coords, visible, self.sample_patch_size)
        weights = balanced_landmark_weights(cooccurrence)
        self.landmark_weights = tuple(float(w) for w in weights)
        balanced = 100 * cooccurrence.T @ weights  # % of biased patches holding each landmark
        uniform = 100 * cooccurrence.T @ np.full(len(weights), 1.0 / len(weights))
        relative = " ".join(
            f"{k}:{w * len(weights):.2f}" for k, w in zip(self.landmark_ids, weights, strict=True)
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

    def make_loader(self, dataset: DatasetBase, shuffle: bool) -> DataLoader:
        """Training (``shuffle``): this rank's share of each epoch's seeded global batches.
        Validation: whole batches in order, shared out between the ranks (whole images after
        patch training one at a time: their windows are batched instead)."""
        group = self.process_group
        pin_memory = self.device.type == "cuda"
        if not shuffle:
            batch_size = self.batch_size
            if self.patch_sampling and dataset.patch_sampler is None:
                batch_size = 1
            batches = BatchShardSampler(len(dataset), batch_size, group.rank, group.world_size)
            return DataLoader(
                dataset, batch_sampler=batches, num_workers=self.num_workers, pin_memory=pin_memory
            )
        sampler = SeededEpochSampler(
            len(dataset), self.batches_per_epoch * self.batch_size, self.sampler_generator
        )
        return DataLoader(
            dataset,
            batch_size=per_rank_batch_size(self.batch_size, group),
            sampler=ShardedSampler(sampler, self.batch_size, group.rank, group.world_size),
            num_workers=self.num_workers,
            pin_memory=pin_memory,
        )

    # ------------------------------------------------------------------ training
    def learning_rate(self, epoch: int) -> float:
        """Linear warm-up over SOLVER.WARMUP_EPOCHS, then poly decay (1 - e/E)^0.9."""
        if epoch < self.warmup_epochs:
            return self.base_lr * (epoch + 1) / (self.warmup_epochs + 1)
        if self.decay_policy == "poly":
            return self.base_lr * (1 - epoch / self.max_epochs) ** 0.9
        return self.base_lr

    def maybe_update_lr(self, epoch: int) -> float:
        """Set the learning rate for ``epoch``; override for another schedule."""
        lr = self.learning_rate(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # a group may learn faster
        return lr

    def autocast(self):
        if self.use_amp:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return nullcontext()

    def make_targets(self, batch: dict[str, torch.Tensor]):
        return self.label_generator.generate_labels(
            batch["coords"].to(self.device),
            batch["visible"].to(self.device),
            self.network_input_size,
            batch["patch_corner"].to(self.device) if self.patch_sampling else None,
        )

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimisation step on a batch; returns its loss."""
        images = batch["image"].to(self.device, non_blocking=True)
        targets = self.make_targets(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            outputs = self.train_network(images)
            loss = self.loss(outputs, targets)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"training loss became {loss.item()} at epoch {self.epoch + 1}; lower "
                "SOLVER.BASE_LR or set SOLVER.AUTO_MIXED_PRECISION False"
            )
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item()

    @torch.no_grad()
    def validate(
        self, loader: DataLoader, image_loader: DataLoader | None = None
    ) -> tuple[float, float]:
        """Validation loss over ``loader``, and mean radial error (pixels of the original
        images) of the same outputs, or, after patch training, of whole images predicted from
        ``image_loader`` as at test time."""
        self.network.eval()
        losses, errors = [], []
        for batch in loader:
            images = batch["image"].to(self.device)
            with self.autocast():
                outputs = self.network(images)
                losses.append(self.loss(outputs, self.make_targets(batch)).item())
            if image_loader is None:
                errors += self.radial_errors(outputs, batch, loader.dataset)
        for batch in image_loader or []:
            with self.autocast():
                outputs = self.whole_image_forward(batch["image"].to(self.device), self.network)
            errors += self.radial_errors(outputs, batch, image_loader.dataset)
        self.network.train()
        return reduce_validation(losses, errors, self.device)  # over all ranks' batches

    def radial_errors(self, outputs: Any, batch: dict, dataset: DatasetBase) -> list[np.ndarray]:
        """(K,) radial errors per sample of a batch's outputs, in the evaluation space."""
        coords = self.get_coords_from_heatmap(outputs, batch["original_size"])[0]
        errors = []
        for row, index in enumerate(batch["index"].tolist()):
            size = tuple(batch["original_size"][row].tolist())
            target = target_coords(
                dataset.samples[index], size, self.evaluation_mode, self.image_size
            )
            errors.append(np.linalg.norm(coords[row].cpu().numpy() - target, axis=-1))
        return errors

    def train(self) -> None:
        """Train from ``self.epoch`` to SOLVER.MAX_EPOCHS (or early stop), checkpointing."""
        train_set = self.make_dataset("training", augment=True)
        if len(train_set) == 0:
            raise DataError(f"{train_set.json_path}: the training list is empty")
        val_set = self.make_dataset("validation") if self.perform_validation else None
        if val_set is not None and len(val_set) == 0:
            raise DataError(
                f"{val_set.json_path}: the validation list is empty; add samples or "
                "set TRAINER.PERFORM_VALIDATION False"
            )
        if self.network is None:
            self.initialize(train_set.num_landmarks)
        self.check_landmarks(train_set)
        if self.patch_sampling:
            self.balance_patch_landmarks(train_set)
            train_set = train_set.with_patches(self.patch_sampler())
        self.train_network = wrap_for_training(self.network, self.device, self.process_group)
        train_loader = self.make_loader(train_set, shuffle=True)
        val_loader = image_loader = None
        if val_set is not None and self.patch_sampling:  # loss on patches, error on images
            val_loader = self.make_loader(val_set.with_patches(self.patch_sampler()), False)
            image_loader = self.make_loader(val_set, shuffle=False)
        elif val_set is not None:
            val_loader = self.make_loader(val_set, shuffle=False)
        logger.info(
            "training on %d images, validating on %d; %d epochs of %d batches of %d",
            len(train_set),
            len(val_set) if val_set else 0,
            self.max_epochs,
            self.batches_per_epoch,
            self.batch_size,
        )
        if self.sampler_debug:
            self.save_debug_samples(train_loader)
        self.network.train()
        interactive = sys.stderr.isatty()
        if self.epochs_without_improvement >= self.early_stop_patience:
            logger.info(
                "the resumed run had already stopped early (best epoch %d)", self.best_epoch
            )
            return
        while self.epoch < self.max_epochs:
            epoch = self.epoch
            seed_everything(self.seed * 1000 + epoch)  # a resumed run draws the same batches
            self.sampler_generator.manual_seed(self.seed * 1000 + epoch)
            lr = self.maybe_update_lr(epoch)
            start = time.perf_counter()
            losses, landmarks_held = [], []
            bar = tqdm(
                train_loader,
                desc=f"epoch {epoch + 1}/{self.max_epochs}",
                leave=False,
                disable=None,
                mininterval=0.5 if interactive else 30,
            )
            for batch in bar:
                losses.append(self.train_step(batch))
                landmarks_held.append(batch["visible"].sum(dim=1).mean().item())
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
                if stop_requested(self.device, self.process_group):
                    raise Preempted(f"{received_signals()} signal during epoch {epoch + 1}")
            train_seconds = time.perf_counter() - start
            val_loss, val_mre = (
                self.validate(val_loader, image_loader)
                if val_loader is not None
                else (math.nan, math.nan)
            )
            self.epoch = epoch + 1
            stop = self.on_epoch_end(
                mean_over_ranks(float(np.mean(losses)), self.device),
                val_loss,
                val_mre,
                lr,
                train_seconds,
                time.perf_counter() - start,
                landmarks_per_sample=mean_over_ranks(float(np.mean(landmarks_held)), self.device),
            )
            if stop:
                break
            if stop_requested(self.device, self.process_group):
                raise Preempted(f"{received_signals()} signal in epoch {self.epoch}, now saved")

    def check_landmarks(self, dataset: DatasetBase) -> None:
        """Refuse a dataset whose landmarks (JSON indices) are not the model's."""
        ids = dataset.landmarks or list(range(dataset.num_landmarks))
        if self.landmark_ids is not None and ids != list(self.landmark_ids):
            raise DataError(
                f"{dataset.json_path}: landmarks {ids} (DATASET.LANDMARKS), but the model "
                f"predicts landmarks {list(self.landmark_ids)}"
            )

    def on_epoch_end(
        self,
        train_loss,
        val_loss,
        val_mre,
        lr,
        train_seconds,
        seconds,
        landmarks_per_sample: float = math.nan,
    ) -> bool:
        """Record the epoch, save checkpoints; True when early stopping says stop.

        ``landmarks_per_sample``: how many landmarks the epoch's training samples (patches)
        held on average."""
        samples = self.batches_per_epoch * self.batch_size
        self.history.append(
            {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_mre_px": val_mre,
                "lr": lr,
                "seconds": seconds,
                "samples_per_s": samples / train_seconds,
                "landmarks_per_sample": landmarks_per_sample,
            }
        )
        if self.patch_sampling and len(self.history) == 1:
            self.report_patch_sparsity(landmarks_per_sample)
        self.tracker.log_epoch(self.history[-1])
        metric = val_mre if self.perform_validation else train_loss
        improved = metric < self.best_metric
        if improved:
            self.best_metric, self.best_epoch = metric, self.epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        logger.info(
            "epoch %d/%d: train loss %.4g, val loss %.4g, val MRE %.2f px%s, lr %.2e, "
            "%.1f s (%.1f samples/s)",
            self.epoch,
            self.max_epochs,
            train_loss,
            val_loss,
            val_mre,
            " (best)" if improved else "",
            lr,
            seconds,
            samples / train_seconds,
        )
        self.save_checkpoint(self.checkpoint_path("latest"))
        if improved or not self.checkpoint_path("best").exists():  # e.g. resumed elsewhere
            self.save_checkpoint(self.checkpoint_path("best"))
        if not self.save_latest_only:
            self.save_checkpoint(self.checkpoint_path(f"ep{self.epoch}"))
        if self.process_group.is_main:  # the other ranks hold the same weights and history
            metrics = pd.DataFrame(self.history)
            metrics.to_csv(self.output_dir / "metrics.csv", index=False)
            save_training_curves(metrics, self.output_dir / "training_curves.png")
        if self.epochs_without_improvement >= self.early_stop_patience:
            logger.info(
                "early stopping: no better validation error for %d epochs (best %.2f at epoch %d)",
                self.early_stop_patience,
                self.best_metric,
                self.best_epoch,
            )
            return True
        return False

    def report_patch_sparsity(self, landmarks_per_sample: float) -> None:
        """Log how much rarer each landmark is as a target in patches than in whole images:
        the reason patch training needs more samples than full-image training to converge."""
        if not landmarks_per_sample > 0:
            return
        ratio = self.num_landmarks / landmarks_per_sample
        logger.log(
            logging.WARNING if ratio >= 2 else logging.INFO,
            "patches held %.2f of %d landmarks on average: each landmark is a training target "
            "%.1fx less often than in whole images, so patch training needs about %.0fx the "
            "samples of full-image training (SOLVER.MAX_EPOCHS x MINI_BATCH_SIZE x "
            "DATA_LOADER_BATCH_SIZE); a larger SAMPLE_PATCH_SIZE or SAMPLER_BIAS nearer 1 "
            "lowers the factor. Keep MODEL.GAUSS_SIGMA as wide in original pixels as for whole "
            'images ("auto" does): a thin target at full resolution may not be learned',
            landmarks_per_sample,
            self.num_landmarks,
            ratio,
            ratio,
        )

    def save_debug_samples(self, loader: DataLoader, count: int = 4) -> None:
        """SAMPLER.DEBUG: PNGs of augmented training samples with their targets."""
        folder = self.output_dir / "debug"
        folder.mkdir(parents=True, exist_ok=True)
        batch = next(iter(loader))
        labels = self.make_targets(batch)
        for row in range(min(count, len(batch["image"]))):
            self.label_generator.debug_sample(
                batch["image"][row, 0].numpy(),
                (batch["coords"][row] - batch["patch_corner"][row]).numpy(),
                select_sample(labels, row),
                folder / f"training_sample_{row}.png",
            )
        logger.info(
            "saved %d augmented training samples with their targets to %s",
            min(count, len(batch["image"])),
            folder,
        )

    # ------------------------------------------------------------------ checkpoints
    def own_checkpoints(self) -> list[Path]:
        """This fold's checkpoints in OUTPUT_DIR (best, latest, ep<N>), sorted by name."""
        pattern = re.compile(
            rf"model_(best|latest|ep\d+){self.fold_tag}{re.escape(CHECKPOINT_SUFFIX)}"
        )
        return sorted(
            p for p in self.output_dir.glob(f"*{CHECKPOINT_SUFFIX}") if pattern.fullmatch(p.name)
        )

    def checkpoint_path(self, kind: str) -> Path:
        """``model_<kind>[_fold<N>].model`` in OUTPUT_DIR (kind: best, latest, ep<N>)."""
        return self.output_dir / f"model_{kind}{self.fold_tag}{CHECKPOINT_SUFFIX}"

    @property
    def fold_tag(self) -> str:
        """``_fold<N>`` in checkpoint names when TRAINER.FOLD >= 0, else nothing."""
        return f"_fold{self.fold}" if self.fold >= 0 else ""

    def save_checkpoint(self, path: Path) -> None:
        if not self.process_group.is_main:  # rank 0 writes; every rank holds the same state
            return
        save_checkpoint(
            {
                "config": self.cfg.dump(),
                "architecture": self.architecture,
                "optimizer_name": self.optimizer_name,
                "landmark_ids": self.landmark_ids,
                "num_landmarks": self.num_landmarks,
                "input_channels": self.input_channels,
                "epoch": self.epoch,
                "network": self.network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "best_metric": self.best_metric,
                "best_epoch": self.best_epoch,
                "epochs_without_improvement": self.epochs_without_improvement,
                "history": self.history,
            },
            path,
        )

    def load_checkpoint(self, path: str | Path, resume_training: bool) -> None:
        """Load network weights (and, to resume, optimizer, scaler, epoch and history)."""
        state = load_checkpoint(path, map_location=self.device)
        if state.get("architecture") != self.architecture:
            raise CheckpointError(
                f"{path}: trained as {state.get('architecture')!r}, but "
                f"MODEL.ARCHITECTURE is {self.architecture!r}"
            )
        trained_cfg = yaml.safe_load(state["config"])
        for key in self.checkpoint_config_keys:
            current = get_value(self.cfg, key)
            try:
                trained = get_value(trained_cfg, key)
            except KeyError:
                raise CheckpointError(
                    f"{path}: saved by an older version that did not record {key}; "
                    "retrain, or load it with the version that trained it"
                ) from None
            if isinstance(current, list | tuple):  # YAML gives lists, yacs may give tuples
                trained, current = list(trained), list(current)
            if trained != current:
                raise CheckpointError(
                    f"{path}: trained with {key} {trained!r}, the config says {current!r}"
                )
        channels = int(state.get("input_channels", 1))  # saved before position channels: 1
        if channels != self.input_channels:
            raise CheckpointError(
                f"{path}: trained with {channels} input channel(s), but this config gives "
                f"{self.input_channels}: the image, plus x and y with patch sampling and "
                "SAMPLER.PATCH.POSITION_CHANNELS True"
            )
        if self.network is None:
            self.initialize(int(state["num_landmarks"]))
        elif state["num_landmarks"] != self.num_landmarks:
            raise CheckpointError(
                f"{path}: {state['num_landmarks']} landmarks, expected {self.num_landmarks}"
            )
        self.landmark_ids = state.get("landmark_ids")
        try:
            self.network.load_state_dict(state["network"])
        except RuntimeError as err:
            raise CheckpointError(
                f"{path}: does not fit the network this config builds "
                f"({str(err).splitlines()[1].strip()})"
            ) from None
        if resume_training:
            if state.get("optimizer_name", self.optimizer_name) != self.optimizer_name:
                raise CheckpointError(
                    f"{path}: trained with SOLVER.OPTIMIZER "
                    f"{state['optimizer_name']!r}, the config says "
                    f"{self.optimizer_name!r}"
                )
            self.optimizer.load_state_dict(state["optimizer"])
            if self.use_amp and state["scaler"]:  # a CPU or full-precision run has no scale
                self.scaler.load_state_dict(state["scaler"])
            self.epoch = int(state["epoch"])
            self.best_metric = float(state["best_metric"])
            self.best_epoch = int(state["best_epoch"])
            self.epochs_without_improvement = int(state["epochs_without_improvement"])
            self.history = list(state["history"])
            logger.info("resuming %s after epoch %d", path, self.epoch)

    # ------------------------------------------------------------------ inference
