"""The training loop, as named steps, shared by every model.

A model plugs in by subclassing :class:`ModelTrainerBase`: it names its label generator
(``label_generator_class``), builds its network in ``initialize_network`` and its loss in
``initialize_loss_function`` (and may override any other step); see docs/extending.md. The
base calls the extension points from one place, :meth:`initialize`, in this order:

1. ``initialize_network``: set ``self.network`` for ``self.num_landmarks`` landmarks;
2. ``initialize_label_generator``: set ``self.label_generator`` (default: the class's
   ``label_generator_class.from_config(cfg, network)``);
3. ``initialize_optimizer_and_scheduler``: set ``self.optimizer`` (default: SOLVER.OPTIMIZER
   over all parameters; the schedule is ``learning_rate(epoch)``); not for a predicting model;
4. ``initialize_loss_function``: set ``self.loss(outputs, targets)``.

Training (:meth:`run_training`) is ``on_train_start``, then per epoch ``on_epoch_start``,
``train_step`` per batch, ``validation_step`` per validation batch and ``on_epoch_end``, then
``on_train_end``, which runs however the loop ends. Settings are read from the config once
(trainer/settings.py), so a trainer can also be built from literals.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm
from yacs.config import CfgNode

from config import auto_keys
from datasets.dataset_base import DatasetBase
from datasets.dataset_generic import DatasetGeneric
from inference.predictions import target_coords
from inference.shape_model import ShapeModel, fit_dataset_shape_model
from inference.whole_image import CoarseModel, tta_flip_axis
from tracking.base import Tracker
from trainer import planning
from trainer.checkpointing import CheckpointMixin
from trainer.data_loading import DataMixin
from trainer.preemption import Preempted, received_signals, stop_requested
from trainer.sampling_mode import WholeImages, sampling_mode
from trainer.settings import Settings, TrainerSettings
from trainer.whole_image_access import WholeImageMixin
from transforms.generate_labels import LabelGenerator
from utils.devices import resolve_device, seed_everything
from utils.distributed import (
    current_process_group,
    mean_over_ranks,
    rank_device,
    reduce_validation,
    wrap_for_training,
)
from utils.errors import ConfigError, DataError, TrainingError
from utils.nested import select_sample
from utils.plotting import save_training_curves

logger = logging.getLogger(__name__)


@dataclass
class EpochLog:
    """What one epoch measured so far; ``on_epoch_end`` reports it."""

    lr: float = math.nan
    start: float = field(default_factory=time.perf_counter)
    train_losses: list[float] = field(default_factory=list)
    landmarks_held: list[float] = field(default_factory=list)  # per batch, per sample
    train_seconds: float = math.nan
    val_losses: list[float] = field(default_factory=list)
    val_errors: list[np.ndarray] = field(default_factory=list)  # (K,) per validation sample


class ModelTrainerBase(
    CheckpointMixin, DataMixin, WholeImageMixin, planning.ArchitecturePlanning, ABC
):
    """Owns data loaders, the training loop, validation, early stopping and checkpoints.

    Attributes set by :meth:`initialize`: ``network``, ``label_generator``, ``optimizer``,
    ``loss``, ``num_landmarks``, ``landmark_ids``; ``sampling`` says whether the network sees
    whole images or patches (trainer/sampling_mode.py).
    """

    label_generator_class: type[LabelGenerator]  # the codec of this model's targets
    model_settings_class: type[Settings] | None = None  # the model's own keys, if any

    def __init__(
        self,
        settings: TrainerSettings,
        dataset_class: type[DatasetBase] = DatasetGeneric,
        architecture: str | None = None,
        cfg: CfgNode | None = None,
        coarse_model_loader: Callable[[], CoarseModel] | None = None,
    ) -> None:
        """Build from settings objects (literals in a test, or :meth:`from_config`).

        Args:
            settings: everything the trainer reads.
            dataset_class: the dataset class of DATASET.DATASET_CLASS.
            architecture: MODEL.ARCHITECTURE (saved in and checked against checkpoints);
                default: the class name.
            cfg: the run's resolved config, saved in checkpoints; default: the defaults with
                ``settings`` written in.
            coarse_model_loader: returns the coarse model of SAMPLER.PATCH coarse_to_fine
                (trainer/model_trainer_index.py gives it).
        """
        self.settings = settings
        self.data, self.solver, self.run = settings.data, settings.solver, settings.run
        self.inference = settings.inference
        self.model_settings = settings.model
        self.architecture = architecture or type(self).__name__
        self.cfg = cfg if cfg is not None else settings.to_config(self.architecture)
        self.dataset_class = dataset_class
        self.output_dir = Path(self.run.output_dir)
        self.process_group = current_process_group()  # torchrun's ranks, or one process
        self.device = rank_device(resolve_device(self.run.device), self.process_group)
        self.use_amp = self.solver.mixed_precision and self.device.type == "cuda"
        self.sampling: WholeImages = sampling_mode(settings.patch, self.data.input_size)
        self.coarse_model_loader = coarse_model_loader
        self.coarse_model: CoarseModel | None = None  # loaded at first use
        self.tracker = Tracker()  # does nothing; main.py attaches Comet / TensorBoard

        self.network: torch.nn.Module | None = None
        self.train_network: torch.nn.Module | None = None  # the network, or its DDP wrapper
        self.label_generator: LabelGenerator | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.loss: torch.nn.Module | None = None
        self.num_landmarks: int | None = None
        self.landmark_ids: list[int] | None = None  # JSON indices of the model's landmarks
        self.flip_pairs: list[tuple[int, int]] = []  # left/right pairs (positions), and
        self.trained_augmentation = self.data.data_aug  # the scheme (a loaded checkpoint's)
        self.shape_model: ShapeModel | None = None  # fitted in on_train_start, checkpointed
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.sampler_generator = torch.Generator()
        self.epoch = 0  # epochs completed
        self.best_metric = math.inf
        self.best_epoch = -1
        self.epochs_without_improvement = 0
        self.history: list[dict[str, float]] = []
        self.epoch_log = EpochLog()
        self.stop_training = False
        self.train_loader: DataLoader | None = None
        self.val_loader: DataLoader | None = None
        self.image_loader: DataLoader | None = None  # whole validation images after patches

    @classmethod
    def from_config(
        cls, cfg: CfgNode, dataset_class: type[DatasetBase] = DatasetGeneric, **kwargs: Any
    ) -> ModelTrainerBase:
        """The trainer of a resolved config (no "auto" values left)."""
        if auto_keys(cfg):  # checkpoints and config.yaml must hold concrete values
            raise ConfigError(
                f"{', '.join(auto_keys(cfg))} still 'auto': resolve it with "
                "config_auto.prepare_config (main.py does), or use a run's config.yaml"
            )
        cls.check_config(cfg)
        tta_flip_axis(cfg.INFERENCE.TTA_FLIP, cfg.SAMPLER.DATA_AUG)  # refused now, not later
        settings = TrainerSettings.from_config(cfg, cls.model_settings_class)
        return cls(settings, dataset_class, cfg.MODEL.ARCHITECTURE, cfg, **kwargs)

    # ------------------------------------------------------------------ extension points
    @abstractmethod
    def initialize_network(self) -> None:
        """Set ``self.network``, an nn.Module mapping (B, ``self.sampling.input_channels``,
        H, W) images of ``self.sampling.network_input_size`` to outputs for
        ``self.num_landmarks`` landmarks. If it down-samples, give it an ``input_multiple``
        attribute (sides of whole images are padded to it at inference)."""

    def initialize_label_generator(self) -> None:
        """Set ``self.label_generator``; the default builds ``label_generator_class`` from the
        config and the network."""
        self.label_generator = self.label_generator_class.from_config(self.cfg, self.network)

    def initialize_optimizer_and_scheduler(self) -> None:
        """Set ``self.optimizer``; the default: SOLVER.OPTIMIZER over all parameters. The
        schedule is :meth:`learning_rate`, applied at each epoch's start."""
        self.optimizer = self.build_optimizer(self.network.parameters())

    @abstractmethod
    def initialize_loss_function(self) -> None:
        """Set ``self.loss(outputs, targets)``: a scalar tensor for the network's outputs and
        the label generator's targets."""

    def get_coords_from_heatmap(
        self, output: Any, original_image_size: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Decode a batch of network outputs (in the label generator's ``to_average`` form).

        Args:
            output: the output for a (B, C, H, W) batch of whole images.
            original_image_size: (B, 2) H, W of each image file.
        Returns:
            coords (B, K, 2) x,y in pixels of each original image (of the input image with
            INFERENCE.EVALUATION_MODE use_input_size), an uncertainty (B, K) per landmark, and
            optionally (B, K, 2, 2) covariances in pixels² of the same image. The default asks
            the label generator (``decode``).
        """
        return self.label_generator.decode(output, original_image_size)

    @property
    def input_multiple(self) -> int:
        """The network's total down-sampling (its ``input_multiple``; 1 if it has none)."""
        return int(getattr(self.network, "input_multiple", 1))

    # ------------------------------------------------------------------ set-up
    def initialize(self, num_landmarks: int, for_training: bool = True) -> None:
        """Build network, label generator, optimizer and loss for ``num_landmarks``, in the
        documented order; ``for_training`` False (a loaded model that only predicts): no
        optimizer, whose first construction costs seconds (torch's compile imports)."""
        self.num_landmarks = num_landmarks
        self.landmark_ids = list(self.data.landmarks) or list(range(num_landmarks))
        self.initialize_network()
        self.network.to(self.device)
        self.train_network = self.network  # on_train_start wraps it in DDP under torchrun
        self.initialize_label_generator()
        if for_training:
            self.initialize_optimizer_and_scheduler()
        self.initialize_loss_function()
        if self.sampling.inference_mode == "patchify_and_stitch":
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
        solver = self.solver
        if solver.optimizer_name == "sgd":
            return torch.optim.SGD(
                parameters,
                lr=solver.base_lr,
                momentum=0.99,
                nesterov=True,
                weight_decay=solver.weight_decay,
            )
        optimizer_class = (
            torch.optim.AdamW if solver.optimizer_name == "adamw" else torch.optim.Adam
        )
        return optimizer_class(parameters, lr=solver.base_lr, weight_decay=solver.weight_decay)

    # ------------------------------------------------------------------ the loop
    def run_training(self) -> None:
        """Train from ``self.epoch`` to SOLVER.MAX_EPOCHS (or an early stop), checkpointing
        after every epoch. ``on_train_end`` runs however the loop ends; after an error or a
        stop signal, ``model_latest`` holds the last completed epoch."""
        self.on_train_start()
        failed = True
        try:
            while self.epoch < self.solver.max_epochs and not self.stop_training:
                self.on_epoch_start()
                self.train_epoch()
                if self.val_loader is not None:
                    self.validate()
                self.on_epoch_end()
                if not self.stop_training and stop_requested(self.device, self.process_group):
                    raise Preempted(f"{received_signals()} signal in epoch {self.epoch}, now saved")
            failed = False
        finally:
            self.on_train_end(failed)

    def on_train_start(self) -> None:
        """Datasets, network (unless resumed), loaders, debug samples; a resumed run that had
        already stopped early does not train again."""
        train_set = self.make_dataset("training", augment=True)
        if len(train_set) == 0:
            raise DataError(f"{train_set.json_path}: the training list is empty")
        val_set = self.make_dataset("validation") if self.run.perform_validation else None
        if val_set is not None and len(val_set) == 0:
            raise DataError(
                f"{val_set.json_path}: the validation list is empty; add samples or "
                "set TRAINER.PERFORM_VALIDATION False"
            )
        if self.network is None:
            self.initialize(train_set.num_landmarks)
        self.check_landmarks(train_set)
        self.flip_pairs = list(train_set.flip_pairs)
        self.shape_model = fit_dataset_shape_model(train_set)  # stored in checkpoints
        train_set = self.sampling.training_set(train_set, self.landmark_ids)
        self.train_network = wrap_for_training(self.network, self.device, self.process_group)
        self.train_loader = self.make_loader(train_set, shuffle=True)
        if val_set is not None:
            loss_set, image_set = self.sampling.validation_sets(val_set)
            self.val_loader = self.make_loader(loss_set, shuffle=False)
            self.image_loader = image_set and self.make_loader(image_set, shuffle=False)
        logger.info(
            "training on %d images, validating on %d; %d epochs of %d batches of %d",
            len(train_set),
            len(val_set) if val_set else 0,
            self.solver.max_epochs,
            self.solver.batches_per_epoch,
            self.solver.batch_size,
        )
        if self.data.sampler_debug:
            self.save_debug_samples(self.train_loader)
        self.network.train()
        if self.epochs_without_improvement >= self.run.early_stop_patience:
            logger.info(
                "the resumed run had already stopped early (best epoch %d)", self.best_epoch
            )
            self.stop_training = True

    def on_epoch_start(self) -> None:
        """Seed the epoch (a resumed run draws the same batches) and set its learning rate."""
        seed = self.solver.seed * 1000 + self.epoch
        seed_everything(seed)
        self.sampler_generator.manual_seed(seed)
        self.epoch_log = EpochLog(lr=self.maybe_update_lr(self.epoch))

    def train_epoch(self) -> None:
        """``train_step`` on every batch of the epoch, with a progress bar."""
        log = self.epoch_log
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {self.epoch + 1}/{self.solver.max_epochs}",
            leave=False,
            disable=None,
            mininterval=0.5 if sys.stderr.isatty() else 30,
        )
        for batch in bar:
            log.train_losses.append(self.train_step(batch))
            log.landmarks_held.append(batch["visible"].sum(dim=1).mean().item())
            bar.set_postfix(loss=f"{log.train_losses[-1]:.4g}")
            if stop_requested(self.device, self.process_group):
                raise Preempted(f"{received_signals()} signal during epoch {self.epoch + 1}")
        log.train_seconds = time.perf_counter() - log.start

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimisation step on a batch; returns its loss. With SOLVER.GRAD_CLIP_NORM, the
        gradients' global norm is clipped first (after unscaling under AMP)."""
        images = batch["image"].to(self.device, non_blocking=True)
        targets = self.make_targets(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            outputs = self.train_network(images)
            loss = self.loss(outputs, targets)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"training loss became {loss.item()} at epoch {self.epoch + 1}; lower "
                "SOLVER.BASE_LR, set SOLVER.GRAD_CLIP_NORM, or set "
                "SOLVER.AUTO_MIXED_PRECISION False"
            )
        self.scaler.scale(loss).backward()
        if self.solver.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.solver.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item()

    @torch.no_grad()
    def validate(self) -> None:
        """``validation_step`` on every validation batch; after patch training, the errors
        come from whole validation images predicted as at test time."""
        self.network.eval()
        for batch in self.val_loader:
            self.validation_step(batch)
        for batch in self.image_loader or []:
            with self.autocast():
                images = batch["image"].to(self.device)
                output = self.whole_image_runner().whole(self.network, images)
            self.epoch_log.val_errors += self.radial_errors(output, batch, self.image_loader)
        self.network.train()

    def validation_step(self, batch: dict[str, torch.Tensor]) -> None:
        """The loss of one validation batch, and (whole images) its radial errors, added to
        ``self.epoch_log``."""
        with self.autocast():
            outputs = self.network(batch["image"].to(self.device))
            self.epoch_log.val_losses.append(self.loss(outputs, self.make_targets(batch)).item())
        if self.image_loader is None:
            output = self.label_generator.to_average(outputs)
            self.epoch_log.val_errors += self.radial_errors(output, batch, self.val_loader)

    def radial_errors(self, output: Any, batch: dict, loader: DataLoader) -> list[np.ndarray]:
        """(K,) radial errors per sample of a batch's outputs, in the evaluation space."""
        coords = self.get_coords_from_heatmap(output, batch["original_size"])[0]
        errors = []
        for row, index in enumerate(batch["index"].tolist()):
            size = tuple(batch["original_size"][row].tolist())
            target = target_coords(
                loader.dataset.samples[index],
                size,
                self.inference.evaluation_mode,
                self.sampling.image_size,
            )
            errors.append(np.linalg.norm(coords[row].cpu().numpy() - target, axis=-1))
        return errors

    def on_epoch_end(self) -> None:
        """Record the epoch in the history, metrics.csv and the tracker, save checkpoints, and
        set ``stop_training`` when early stopping says stop."""
        log = self.epoch_log
        val_loss, val_mre = math.nan, math.nan
        if self.run.perform_validation:  # the same on every rank: each joins the reduction
            val_loss, val_mre = reduce_validation(log.val_losses, log.val_errors, self.device)
        train_loss = mean_over_ranks(float(np.mean(log.train_losses)), self.device)
        self.epoch += 1
        samples_per_s = self.solver.samples_per_epoch / log.train_seconds
        self.history.append(
            {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_mre_px": val_mre,
                "lr": log.lr,
                "seconds": time.perf_counter() - log.start,
                "samples_per_s": samples_per_s,
                "landmarks_per_sample": mean_over_ranks(
                    float(np.mean(log.landmarks_held)), self.device
                ),
            }
        )
        row = self.history[-1]
        if len(self.history) == 1:
            self.sampling.after_first_epoch(row["landmarks_per_sample"], self.num_landmarks)
        self.tracker.log_epoch(row)
        metric = val_mre if self.run.perform_validation else train_loss
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
            self.solver.max_epochs,
            train_loss,
            val_loss,
            val_mre,
            " (best)" if improved else "",
            log.lr,
            row["seconds"],
            samples_per_s,
        )
        self.save_checkpoint(self.checkpoint_path("latest"))
        if improved or not self.checkpoint_path("best").exists():  # e.g. resumed elsewhere
            self.save_checkpoint(self.checkpoint_path("best"))
        if not self.run.save_latest_only:
            self.save_checkpoint(self.checkpoint_path(f"ep{self.epoch}"))
        if self.process_group.is_main:  # the other ranks hold the same weights and history
            metrics = pd.DataFrame(self.history)
            metrics.to_csv(self.output_dir / "metrics.csv", index=False)
            save_training_curves(metrics, self.output_dir / "training_curves.png")
        if self.epochs_without_improvement >= self.run.early_stop_patience:
            logger.info(
                "early stopping: no better validation error for %d epochs (best %.2f at epoch %d)",
                self.run.early_stop_patience,
                self.best_metric,
                self.best_epoch,
            )
            self.stop_training = True

    def on_train_end(self, failed: bool) -> None:
        """After the last epoch, an early stop, an error or a stop signal (``failed``): say how
        training ended; after a failure, close the tracker (no testing follows)."""
        if failed:
            self.tracker.close()
            logger.info("training stopped after %d completed epoch(s)", self.epoch)
        elif self.best_epoch >= 0:
            logger.info(
                "training done: %d epochs, best %.4g at epoch %d",
                self.epoch,
                self.best_metric,
                self.best_epoch,
            )

    # ------------------------------------------------------------------ loop helpers
    def learning_rate(self, epoch: int) -> float:
        """Linear warm-up over SOLVER.WARMUP_EPOCHS, then poly decay (1 - e/E)^0.9; override
        for another schedule."""
        solver = self.solver
        if epoch < solver.warmup_epochs:
            return solver.base_lr * (epoch + 1) / (solver.warmup_epochs + 1)
        if solver.decay_policy == "poly":
            return solver.base_lr * (1 - epoch / solver.max_epochs) ** 0.9
        return solver.base_lr

    def maybe_update_lr(self, epoch: int) -> float:
        """Set the learning rate of ``epoch`` (each group's ``lr_scale`` times it)."""
        lr = self.learning_rate(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # a group may learn faster
        return lr

    def autocast(self):
        if self.use_amp:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return nullcontext()

    def make_targets(self, batch: dict[str, torch.Tensor]) -> Any:
        corners = self.sampling.patch_corners(batch)
        return self.label_generator.generate_labels(
            batch["coords"].to(self.device),
            batch["visible"].to(self.device),
            self.sampling.network_input_size,
            None if corners is None else corners.to(self.device),
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
