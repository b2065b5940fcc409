"""Example of a dataset subclass that carries extra JSON keys into the results.

The ASPIRE cardiac MRI data stores a patient id and the scan's study UID with each sample, so that
clinicians can match every prediction to their records. Copy this file for your own attributes.
"""

from datasets.dataset_base import DatasetBase


class DatasetAspire(DatasetBase):
    """Samples must carry ``patient_id`` and ``suid``; both appear in predictions.csv."""

    additional_sample_attribute_keys: list[str] = ["patient_id", "suid"]
