"""DATASET.DATASET_CLASS → dataset class. Register your own subclass here."""

from datasets.dataset_aspire import DatasetAspire
from datasets.dataset_base import DatasetBase
from datasets.dataset_generic import DatasetGeneric
from datasets.dataset_synthetic import DatasetSyntheticDemo
from utils.registry import look_up

DATASET_INDEX: dict[str, type[DatasetBase]] = {
    "generic": DatasetGeneric,
    "aspire": DatasetAspire,
    "synthetic_demo": DatasetSyntheticDemo,
}


def get_dataset_class(name: str) -> type[DatasetBase]:
    """The class registered under ``name``; an unknown name lists the valid ones."""
    return look_up(DATASET_INDEX, name, "DATASET.DATASET_CLASS", "datasets/dataset_index.py")
