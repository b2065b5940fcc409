"""The datasets and data loaders of a trainer.

A mixin of :class:`~trainer.model_trainer_base.ModelTrainerBase`: datasets are read at the
sampling mode's image size; training loaders draw each epoch's seeded global batches and share
them out between the ranks of a distributed run.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from datasets.dataset_base import DatasetBase, prepared_annotation_file, read_dataset_json
from datasets.sampling import SeededEpochSampler
from transforms.dataloader_transforms import build_augmentation
from utils.distributed import BatchShardSampler, ShardedSampler, per_rank_batch_size
from utils.errors import DataError


class DataMixin:
    """Reading the run's dataset JSON into datasets and loaders (``make_dataset`` is the step a
    researcher overrides to feed other data)."""

    def annotation_file(self) -> Path:
        """The dataset JSON of this run (after letting the dataset class prepare its data)."""
        data = self.data
        return prepared_annotation_file(
            self.dataset_class, data.root, data.annotation_source, data.fold
        )

    def make_dataset(self, split: str, augment: bool = False) -> DatasetBase:
        """One split of the annotation file at the sampling mode's image size (whole images;
        the sampling mode cuts training and validation sets into patches); ``augment`` adds
        SAMPLER.DATA_AUG, whose horizontal flips swap the dataset's flip pairs."""
        data = self.data
        dataset = self.dataset_class(
            json_path=self.annotation_file(),
            split=split,
            root=data.root,
            input_size=self.sampling.image_size,
            with_position=self.sampling.input_channels == 3,
            landmarks=list(data.landmarks),
            cache_data=data.cache_data,
            default_pixel_size=data.pixel_size or None,
            max_samples=data.trainset_size if split == "training" else -1,
        )
        if augment:
            dataset.augmentation = build_augmentation(
                data.data_aug, data.data_aug_package, dataset.flip_pairs
            )
        return dataset

    def evaluation_sets(self) -> tuple[DatasetBase, DatasetBase | None]:
        """The testing list, and the validation list (if any) to calibrate uncertainty on."""
        data = read_dataset_json(self.annotation_file())
        calibration = self.make_dataset("validation") if data.get("validation") else None
        return self.make_dataset("testing"), calibration

    def check_landmarks(self, dataset: DatasetBase) -> None:
        """Refuse a dataset whose landmarks (JSON indices) are not the model's."""
        ids = dataset.landmarks or list(range(dataset.num_landmarks))
        if self.landmark_ids is not None and ids != list(self.landmark_ids):
            raise DataError(
                f"{dataset.json_path}: landmarks {ids} (DATASET.LANDMARKS), but the model "
                f"predicts landmarks {list(self.landmark_ids)}"
            )

    def make_loader(self, dataset: DatasetBase, shuffle: bool) -> DataLoader:
        """Training (``shuffle``): this rank's share of each epoch's seeded global batches.
        Validation: whole batches in order, shared out between the ranks (whole images after
        patch training one at a time: their windows are batched instead)."""
        group, solver = self.process_group, self.solver
        pin_memory = self.device.type == "cuda"
        workers = self.data.num_workers
        if not shuffle:
            batch_size = solver.batch_size
            if self.sampling.patches and dataset.patch_sampler is None:
                batch_size = 1
            batches = BatchShardSampler(len(dataset), batch_size, group.rank, group.world_size)
            return DataLoader(
                dataset, batch_sampler=batches, num_workers=workers, pin_memory=pin_memory
            )
        sampler = SeededEpochSampler(len(dataset), solver.samples_per_epoch, self.sampler_generator)
        return DataLoader(
            dataset,
            batch_size=per_rank_batch_size(solver.batch_size, group),
            sampler=ShardedSampler(sampler, solver.batch_size, group.rank, group.world_size),
            num_workers=workers,
            pin_memory=pin_memory,
        )
