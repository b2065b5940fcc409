"""The training sampler: permutations first, a seed per draw, reproducible from the generator."""

import torch

from datasets.sampling import SeededEpochSampler


def draws(seed, size=5, count=12):
    return list(SeededEpochSampler(size, count, torch.Generator().manual_seed(seed)))


def test_every_sample_once_before_repeats():
    indices = [index for index, _ in draws(0)]
    assert len(indices) == 12
    assert sorted(indices[:5]) == list(range(5)) and sorted(indices[5:10]) == list(range(5))


def test_same_generator_seed_same_draws_and_seeds_differ():
    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    assert len({seed for _, seed in draws(3)}) == 12
