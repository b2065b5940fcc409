"""The demo's dataset class: generates the synthetic data on first use, then reads it as usual."""

from __future__ import annotations

import logging
from pathlib import Path

from datasets.dataset_base import DatasetBase
from datasets.synthetic import make_synthetic_dataset

logger = logging.getLogger(__name__)


class DatasetSyntheticDemo(DatasetBase):
    """Synthetic kites (datasets/synthetic.py); carries the ``scanner`` attribute to results."""

    additional_sample_attribute_keys: list[str] = ["scanner"]

    @classmethod
    def prepare_data(cls, root: Path, annotation_file: Path) -> None:
        if not annotation_file.exists():
            logger.info("generating the synthetic demo dataset in %s", root)
            make_synthetic_dataset(root, json_name=annotation_file.name)
