"""DATASET.DATASET_CLASS → dataset class. Register your own subclass here."""

from datasets.dataset_aspire import DatasetAspire
from datasets.dataset_base import DatasetBase
from datasets.dataset_generic import DatasetGeneric
from datasets.dataset_synthetic import DatasetSyntheticDemo
from utils.errors import ConfigError

DATASET_INDEX: dict[str, type[DatasetBase]] = {
    "generic": DatasetGeneric,
    "aspire": DatasetAspire,
    "synthetic_demo": DatasetSyntheticDemo,
}


def get_dataset_class(name: str) -> type[DatasetBase]:
    """The class registered under ``name``; an unknown name lists the valid ones."""
    if name not in DATASET_INDEX:
        raise ConfigError(
            f"Unknown DATASET.DATASET_CLASS {name!r}; available: {sorted(DATASET_INDEX)} "
            "(register new ones in datasets/dataset_index.py)"
        )
    return DATASET_INDEX[name]
