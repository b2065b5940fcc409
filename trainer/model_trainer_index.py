"""MODEL.ARCHITECTURE → model-trainer class, and building or loading trainers.

Register your own trainer here: one line in ``MODEL_TRAINER_INDEX`` (its label generator is
named by the class). Nothing below this module needs the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from yacs.config import CfgNode

from config import saved_cfg
from datasets.dataset_index import get_dataset_class
from inference.predictor import Predictor
from inference.whole_image import CoarseModel
from trainer.model_trainer_base import ModelTrainerBase
from trainer.model_trainer_phdnet import ModelTrainerPHDNet
from trainer.model_trainer_unet import ModelTrainerUNet
from utils.checkpoints import load_checkpoint
from utils.errors import CheckpointError, ConfigError
from utils.registry import look_up

MODEL_TRAINER_INDEX: dict[str, type[ModelTrainerBase]] = {
    "U-Net": ModelTrainerUNet,
    "PHD-Net": ModelTrainerPHDNet,
}


def get_trainer_class(architecture: str) -> type[ModelTrainerBase]:
    """The trainer registered under ``architecture``; an unknown key lists the valid ones."""
    return look_up(
        MODEL_TRAINER_INDEX, architecture, "MODEL.ARCHITECTURE", "trainer/model_trainer_index.py"
    )


def build_trainer(cfg: CfgNode) -> ModelTrainerBase:
    """The trainer of MODEL.ARCHITECTURE with the configured dataset class; with
    SAMPLER.PATCH.COARSE_CHECKPOINT, it loads that coarse model when it first needs it."""
    coarse = cfg.SAMPLER.PATCH.COARSE_CHECKPOINT
    if coarse and not Path(coarse).is_file():
        raise CheckpointError(  # now, not after the first training epoch
            f"SAMPLER.PATCH.COARSE_CHECKPOINT not found: {coarse}"
        )
    return get_trainer_class(cfg.MODEL.ARCHITECTURE).from_config(
        cfg,
        dataset_class=get_dataset_class(cfg.DATASET.DATASET_CLASS),
        coarse_model_loader=(
            (lambda: load_coarse_model(coarse, cfg.TRAINER.DEVICE, cfg.INFERENCE.TTA_FLIP))
            if coarse
            else None
        ),
    )


def load_trainer(checkpoint: str | Path, cfg: CfgNode | None = None) -> ModelTrainerBase:
    """A trainer holding ``checkpoint``'s network in eval mode, built from ``cfg`` (a run's
    config, whose inference keys then apply; the checkpoint must fit it) or from the config
    saved in the checkpoint."""
    if cfg is None:
        state = load_checkpoint(checkpoint, map_location="cpu")
        cfg = saved_cfg(state["config"], source=str(checkpoint))
        cfg.freeze()
    trainer = build_trainer(cfg)
    trainer.load_checkpoint(checkpoint, resume_training=False)
    trainer.network.eval()
    return trainer


def load_predictor(checkpoints: Sequence[str | Path], cfg: CfgNode | None = None) -> Predictor:
    """A predictor of ``checkpoints`` (one model, or an ensemble of the same architecture),
    each loaded once with :func:`load_trainer` from ``cfg`` or its own saved config."""
    trainers = [load_trainer(path, cfg) for path in checkpoints]
    return predictor_of(trainers, [str(path) for path in checkpoints])


def predictor_of(
    trainers: Sequence[ModelTrainerBase],
    sources: Sequence[str],
    batch_size: int | None = None,
    num_workers: int | None = None,
) -> Predictor:
    """A predictor of loaded ``trainers`` (named by ``sources`` in errors), batched and loaded
    as the first one's run does unless ``batch_size`` / ``num_workers`` are given."""
    first = trainers[0]
    return Predictor(
        [
            trainer.inference_model(source)
            for trainer, source in zip(trainers, sources, strict=True)
        ],
        batch_size=first.solver.batch_size if batch_size is None else batch_size,
        num_workers=first.data.num_workers if num_workers is None else num_workers,
    )


def load_coarse_model(checkpoint: str | Path, device: str, tta_flip: bool) -> CoarseModel:
    """The full-image model of ``checkpoint``, built from the config saved in it, decoding into
    the pixels of whatever size it is given (scale_heatmap_first) and using flip TTA as the run
    that loads it does."""
    state = load_checkpoint(checkpoint, map_location="cpu")
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
    trainer = load_trainer(checkpoint, cfg)
    return CoarseModel(
        network=trainer.network,
        runner=trainer.whole_image_runner(),
        decode=trainer.get_coords_from_heatmap,
        input_size=tuple(trainer.data.input_size),
        landmark_ids=trainer.landmark_ids,
    )
