"""The dataset class for any JSON in the documented format."""

from datasets.dataset_base import DatasetBase


class DatasetGeneric(DatasetBase):
    """A dataset JSON with no extra per-sample attributes."""

    additional_sample_attribute_keys: list[str] = []
