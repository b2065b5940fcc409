"""MODEL.ARCHITECTURE → model-trainer class. Register your own trainer here."""

from trainer.model_trainer_base import ModelTrainerBase
from trainer.model_trainer_phdnet import ModelTrainerPHDNet
from trainer.model_trainer_unet import ModelTrainerUNet
from utils.errors import ConfigError

MODEL_TRAINER_INDEX: dict[str, type[ModelTrainerBase]] = {
    "U-Net": ModelTrainerUNet,
    "PHD-Net": ModelTrainerPHDNet,
}

# Architectures of the original design that a later version adds.
NOT_BUILT_YET: set[str] = set()


def get_trainer_class(architecture: str) -> type[ModelTrainerBase]:
    """The trainer registered under ``architecture``; an unknown key lists the valid ones."""
    if architecture in MODEL_TRAINER_INDEX:
        return MODEL_TRAINER_INDEX[architecture]
    if architecture in NOT_BUILT_YET:
        raise ConfigError(
            f"MODEL.ARCHITECTURE {architecture!r} is not implemented yet; "
            f"available: {sorted(MODEL_TRAINER_INDEX)}"
        )
    raise ConfigError(
        f"Unknown MODEL.ARCHITECTURE {architecture!r}; available: {sorted(MODEL_TRAINER_INDEX)} "
        "(register new ones in trainer/model_trainer_index.py)"
    )
