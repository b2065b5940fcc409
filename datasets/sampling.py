"""Which training samples an epoch draws, and the augmentation seed of each draw."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class SeededEpochSampler(Sampler[tuple[int, int]]):
    """``num_samples`` draws of ``(index, augmentation seed)`` per epoch.

    Indices run through random permutations of the dataset (every sample once before any repeats);
    each draw carries its own seed, so a sample's augmentation depends only on ``generator``'s
    state (seeded per epoch by the trainer), not on how many worker processes load the data.
    """

    def __init__(self, dataset_size: int, num_samples: int, generator: torch.Generator) -> None:
        self.dataset_size = dataset_size
        self.num_samples = num_samples
        self.generator = generator

    def __iter__(self) -> Iterator[tuple[int, int]]:
        repeats = -(-self.num_samples // self.dataset_size)
        order = torch.cat(
            [torch.randperm(self.dataset_size, generator=self.generator) for _ in range(repeats)]
        )[: self.num_samples]
        seeds = torch.randint(0, 2**31 - 1, (self.num_samples,), generator=self.generator)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))

    def __len__(self) -> int:
        return self.num_samples
