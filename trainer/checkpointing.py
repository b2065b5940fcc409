"""Checkpoint files of a trainer: their names, what they hold, and loading them back.

A mixin of :class:`~trainer.model_trainer_base.ModelTrainerBase`: it reads the trainer's
network, optimizer, scaler, history and settings, and refuses a checkpoint that does not fit
them (another architecture, input, target encoding or number of input channels).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import yaml

from config import get_value
from inference.shape_model import ShapeModel
from utils.checkpoints import CHECKPOINT_SUFFIX, load_checkpoint, save_checkpoint
from utils.errors import CheckpointError

logger = logging.getLogger(__name__)


class CheckpointMixin:
    """``model_<kind>[_fold<N>].model`` files in OUTPUT_DIR: saving, resuming, loading."""

    # Config keys that a checkpoint must have been trained with to be loaded (subclasses add
    # theirs, e.g. how their targets are encoded).
    checkpoint_config_keys: tuple[str, ...] = (
        "SAMPLER.INPUT_SIZE",
        "SAMPLER.SAMPLE_MODE",
        "SAMPLER.PATCH.SAMPLE_PATCH_SIZE",
        "SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM",
    )

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
        return f"_fold{self.data.fold}" if self.data.fold >= 0 else ""

    def save_checkpoint(self, path: Path) -> None:
        if not self.process_group.is_main:  # rank 0 writes; every rank holds the same state
            return
        save_checkpoint(
            {
                "config": self.cfg.dump(),
                "architecture": self.architecture,
                "optimizer_name": self.solver.optimizer_name,
                "landmark_ids": self.landmark_ids,
                "flip_pairs": [list(pair) for pair in self.flip_pairs],
                "num_landmarks": self.num_landmarks,
                "input_channels": self.sampling.input_channels,
                "epoch": self.epoch,
                "network": self.network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "best_metric": self.best_metric,
                "best_epoch": self.best_epoch,
                "epochs_without_improvement": self.epochs_without_improvement,
                "history": self.history,
                **(
                    {"shape_model": self.shape_model.to_state()}
                    if self.shape_model is not None
                    else {}
                ),
            },
            path,
        )

    def load_checkpoint(self, path: str | Path, resume_training: bool) -> None:
        """Load network weights (and, to resume, optimizer, scaler, epoch and history)."""
        self.load_state(load_checkpoint(path, map_location=self.device), path, resume_training)

    def load_state(self, state: dict, path: str | Path, resume_training: bool) -> None:
        """Load a checkpoint's ``state`` (read from ``path``, which errors name, or a model
        bundle's member): network weights, and to resume the training state too."""
        self.check_checkpoint(path, state)
        if self.network is None:  # without resuming, the trainer only predicts: no optimizer
            self.initialize(int(state["num_landmarks"]), for_training=resume_training)
        elif state["num_landmarks"] != self.num_landmarks:
            raise CheckpointError(
                f"{path}: {state['num_landmarks']} landmarks, expected {self.num_landmarks}"
            )
        self.landmark_ids = state.get("landmark_ids")
        self.flip_pairs = [tuple(pair) for pair in state.get("flip_pairs", [])]  # older: none
        self.trained_augmentation = yaml.safe_load(state["config"])["SAMPLER"]["DATA_AUG"]
        self.shape_model = None  # checkpoints saved before shape models have none
        if "shape_model" in state:
            self.shape_model = ShapeModel.from_state(state["shape_model"], str(path))
            if self.shape_model.num_landmarks != self.num_landmarks:
                raise CheckpointError(
                    f"{path}: shape_model has {self.shape_model.num_landmarks} landmarks, the "
                    f"network {self.num_landmarks}"
                )
        try:
            self.network.load_state_dict(state["network"])
        except RuntimeError as err:
            raise CheckpointError(
                f"{path}: does not fit the network this config builds "
                f"({str(err).splitlines()[1].strip()})"
            ) from None
        if not resume_training:
            return
        if state.get("optimizer_name", self.solver.optimizer_name) != self.solver.optimizer_name:
            raise CheckpointError(
                f"{path}: trained with SOLVER.OPTIMIZER {state['optimizer_name']!r}, the "
                f"config says {self.solver.optimizer_name!r}"
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

    def check_checkpoint(self, path: str | Path, state: dict) -> None:
        """Refuse a checkpoint of another architecture, input or target encoding
        (``checkpoint_config_keys``), or number of input channels."""
        if state.get("architecture") != self.architecture:
            raise CheckpointError(
                f"{path}: trained as {state.get('architecture')!r}, but "
                f"MODEL.ARCHITECTURE is {self.architecture!r}"
            )
        trained_cfg = yaml.safe_load(state["config"])
        for key in self.checkpoint_config_keys:
            if key == "SAMPLER.INPUT_SIZE" and self.sampling.image_size is None:
                continue  # patches of full-resolution images: nothing is resized
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
        if channels != self.sampling.input_channels:
            raise CheckpointError(
                f"{path}: trained with {channels} input channel(s), but this config gives "
                f"{self.sampling.input_channels}: the image, plus x and y with patch sampling "
                "and SAMPLER.PATCH.POSITION_CHANNELS True"
            )
