"""MODEL.ARCHITECTURE → model-trainer class. Register your own trainer here."""

from datasets.dataset_index import get_dataset_class
from trainer.model_trainer_base import ModelTrainerBase
from trainer.model_trainer_phdnet import ModelTrainerPHDNet
from trainer.model_trainer_unet import ModelTrainerUNet
from transforms.label_generator_index import get_label_generator_class
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


def build_trainer(cfg) -> ModelTrainerBase:
    """The trainer of MODEL.ARCHITECTURE with the configured dataset and label generator."""
    return get_trainer_class(cfg.MODEL.ARCHITECTURE)(
        cfg,
        dataset_class=get_dataset_class(cfg.DATASET.DATASET_CLASS),
        label_generator_class=get_label_generator_class(cfg.MODEL.ARCHITECTURE),
    )
