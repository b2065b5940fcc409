"""Small frozen settings objects: what the trainer reads from the config, read once.

Each field names its config key (``key(...)``), so :meth:`Settings.from_config` reads a config
and :meth:`Settings.write_to` writes the values back into one (a trainer built from literals
still saves a complete config in its checkpoints). A test builds them from literals:
``SolverSettings(max_epochs=2, batches_per_epoch=3, batch_size=2)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from yacs.config import CfgNode

from config import AUTO, get_cfg_defaults, get_value, is_auto, set_value


def key(config_key: str, default: Any, convert: Callable[[Any], Any] | None = None) -> Any:
    """A settings field read from ``config_key``, converted by ``convert`` (default: none)."""
    if isinstance(default, list | dict):
        return field(
            default_factory=lambda: default, metadata={"key": config_key, "convert": convert}
        )
    return field(default=default, metadata={"key": config_key, "convert": convert})


def size(value) -> tuple[int, ...]:
    """A ``[height, width]`` (or any list) config value as a tuple of ints."""
    return tuple(int(s) for s in value)


def whole_image_size(value) -> tuple[int, ...] | None:
    """SAMPLER.INPUT_SIZE as a tuple of ints; None for "auto", which only patches cut from
    full-resolution images keep (they never resize, see config.auto_keys)."""
    return None if value is None or is_auto(value) else size(value)


def floats(value) -> tuple[float, ...]:
    return tuple(float(s) for s in value)


def optional_float(value) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Settings:
    """Base of the settings objects; fields made with :func:`key`."""

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):  # literals get the same types as the config's
            convert = item.metadata.get("convert")
            if convert is not None:
                object.__setattr__(self, item.name, convert(getattr(self, item.name)))

    @classmethod
    def from_config(cls, cfg: CfgNode):
        """The settings of ``cfg`` (a loaded, resolved config)."""
        return cls(
            **{item.name: get_value(cfg, item.metadata["key"]) for item in dataclasses.fields(cls)}
        )

    def write_to(self, cfg: CfgNode) -> None:
        """Write these values into a mutable ``cfg`` under their keys."""
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None and item.metadata.get("convert") is whole_image_size:
                value = AUTO  # full-resolution patches: the size is not used
            set_value(cfg, item.metadata["key"], list(value) if isinstance(value, tuple) else value)


@dataclass(frozen=True)
class DataSettings(Settings):
    """Where the data is and how it is read (DATASET, SAMPLER)."""

    root: str = key("DATASET.ROOT", "")
    annotation_source: str = key("DATASET.SRC_TARGETS", "")
    dataset_name: str = key("DATASET.NAME", "")
    fold: int = key("TRAINER.FOLD", -1, int)
    landmarks: tuple[int, ...] = key("DATASET.LANDMARKS", (), size)
    trainset_size: int = key("DATASET.TRAINSET_SIZE", -1, int)
    pixel_size: tuple[float, ...] = key("DATASET.PIXEL_SIZE", (), floats)
    input_size: tuple[int, ...] | None = key("SAMPLER.INPUT_SIZE", (512, 512), whole_image_size)
    data_aug: str | None = key("SAMPLER.DATA_AUG", "AffineComplex")
    data_aug_package: str = key("SAMPLER.DATA_AUG_PACKAGE", "albumentations")
    num_workers: int = key("SAMPLER.NUM_WORKERS", 0, int)
    sampler_debug: bool = key("SAMPLER.DEBUG", False, bool)
    cache_data: bool = key("TRAINER.CACHE_DATA", True, bool)


@dataclass(frozen=True)
class PatchSettings(Settings):
    """SAMPLER.SAMPLE_MODE and SAMPLER.PATCH: whole images, or patches of them."""

    sample_mode: str = key("SAMPLER.SAMPLE_MODE", "full")
    resolution: str = key("SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM", "full")
    patch_size: tuple[int, ...] = key("SAMPLER.PATCH.SAMPLE_PATCH_SIZE", (512, 512), size)
    bias: float = key("SAMPLER.PATCH.SAMPLER_BIAS", 0.66, float)
    inference_mode: str = key("SAMPLER.PATCH.INFERENCE_MODE", "fully_convolutional")
    coarse_checkpoint: str | None = key("SAMPLER.PATCH.COARSE_CHECKPOINT", None)
    position_channels: bool = key("SAMPLER.PATCH.POSITION_CHANNELS", True, bool)
    stitch_stride: tuple[int, ...] = key("SAMPLER.PATCH.STITCH_STRIDE", (), size)

    @property
    def enabled(self) -> bool:
        return self.sample_mode == "patch_bias"


@dataclass(frozen=True)
class SolverSettings(Settings):
    """The optimisation (SOLVER)."""

    seed: int = key("SOLVER.SEED", 42, int)
    optimizer_name: str = key("SOLVER.OPTIMIZER", "adamw")
    base_lr: float = key("SOLVER.BASE_LR", 0.001, float)
    weight_decay: float = key("SOLVER.WEIGHT_DECAY", 0.00003, float)
    warmup_epochs: int = key("SOLVER.WARMUP_EPOCHS", 1, int)
    decay_policy: str | None = key("SOLVER.DECAY_POLICY", "poly")
    max_epochs: int = key("SOLVER.MAX_EPOCHS", 1000, int)
    batches_per_epoch: int = key("SOLVER.MINI_BATCH_SIZE", 150, int)
    batch_size: int = key("SOLVER.DATA_LOADER_BATCH_SIZE", 12, int)
    mixed_precision: bool = key("SOLVER.AUTO_MIXED_PRECISION", True, bool)
    grad_clip_norm: float = key("SOLVER.GRAD_CLIP_NORM", 0.0, float)

    @property
    def samples_per_epoch(self) -> int:
        return self.batches_per_epoch * self.batch_size


@dataclass(frozen=True)
class RunSettings(Settings):
    """Where a run writes and when it stops (OUTPUT, TRAINER)."""

    output_dir: str = key("OUTPUT.OUTPUT_DIR", "output")
    device: str = key("TRAINER.DEVICE", "auto")
    perform_validation: bool = key("TRAINER.PERFORM_VALIDATION", True, bool)
    save_latest_only: bool = key("TRAINER.SAVE_LATEST_ONLY", True, bool)
    early_stop_patience: int = key("TRAINER.EARLY_STOP_PATIENCE", 150, int)


@dataclass(frozen=True)
class InferenceSettings(Settings):
    """How predictions are made, decoded and evaluated (INFERENCE, OUTPUT)."""

    evaluation_mode: str = key("INFERENCE.EVALUATION_MODE", "scale_heatmap_first")
    tta_flip: bool = key("INFERENCE.TTA_FLIP", False, bool)
    precision: str = key("INFERENCE.PRECISION", "float32")
    decoding: str = key("INFERENCE.DECODING", "dark")
    fit_gauss: bool = key("INFERENCE.FIT_GAUSS", False, bool)
    uncertainty_bins: int = key("INFERENCE.UNCERTAINTY_BINS", 5, int)
    conformal_alpha: float = key("INFERENCE.CONFORMAL_ALPHA", 0.1, float)
    sdr_thresholds: tuple[float, ...] = key(
        "INFERENCE.SDR_THRESHOLDS", (2.0, 2.5, 3.0, 4.0), floats
    )
    debug: bool = key("INFERENCE.DEBUG", False, bool)
    results_append: str | None = key("OUTPUT.RESULTS_CSV_APPEND", None)
    prediction_figures: int = key("OUTPUT.PREDICTION_FIGURES", 3, int)
    consistent_decoding: bool = key("INFERENCE.CONSISTENT_DECODING", False, bool)
    shape_uncertainty: bool = key("INFERENCE.SHAPE_UNCERTAINTY", False, bool)
    num_candidates: int = key("INFERENCE.NUM_CANDIDATES", 5, int)
    shape_outlier_p: float = key("INFERENCE.SHAPE_OUTLIER_P", 0.001, float)
    shape_noise_px: float = key("INFERENCE.SHAPE_NOISE_PX", 0.0, float)


@dataclass(frozen=True)
class TrainerSettings:
    """Everything the trainer base reads, plus the model's own settings (``model``: the
    trainer class's ``model_settings_class``, or None)."""

    data: DataSettings = field(default_factory=DataSettings)
    patch: PatchSettings = field(default_factory=PatchSettings)
    solver: SolverSettings = field(default_factory=SolverSettings)
    run: RunSettings = field(default_factory=RunSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    gauss_sigma: float = 4.0  # MODEL.GAUSS_SIGMA, read by every codec
    model: Settings | None = None

    parts: ClassVar[tuple[str, ...]] = ("data", "patch", "solver", "run", "inference", "model")

    @classmethod
    def from_config(cls, cfg: CfgNode, model_settings_class: type[Settings] | None = None):
        return cls(
            data=DataSettings.from_config(cfg),
            patch=PatchSettings.from_config(cfg),
            solver=SolverSettings.from_config(cfg),
            run=RunSettings.from_config(cfg),
            inference=InferenceSettings.from_config(cfg),
            gauss_sigma=float(cfg.MODEL.GAUSS_SIGMA),
            model=model_settings_class.from_config(cfg) if model_settings_class else None,
        )

    def to_config(self, architecture: str) -> CfgNode:
        """The defaults with these settings written in: the config a trainer built from literals
        saves in its checkpoints."""
        cfg = get_cfg_defaults()
        cfg.MODEL.ARCHITECTURE = architecture
        cfg.MODEL.GAUSS_SIGMA = float(self.gauss_sigma)
        for part in self.parts:
            settings = getattr(self, part)
            if settings is not None:
                settings.write_to(cfg)
        cfg.freeze()
        return cfg
