"""MODEL.ARCHITECTURE → model-trainer class. Register your own trainer here."""

from trainer.model_trainer_base import ModelTrainerBase
from trainer.model_trainer_phdnet import ModelTrainerPHDNet
from trainer.model_trainer_unet import ModelTrainerUNet
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
