"""Multi-process training: the samplers' sharding, and a 2-process Gloo run under torchrun."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import SequentialSampler

from datasets.sampling import SeededEpochSampler
from datasets.synthetic import make_synthetic_dataset
from tests.test_main import DEMO_CFG, REPO, run_main, tiny_opts
from utils.distributed import BatchShardSampler, ProcessGroup, ShardedSampler, per_rank_batch_size
from utils.errors import ConfigError


def test_ranks_together_draw_the_single_process_batches():
    generator = torch.Generator()
    generator.manual_seed(7)
    draws = list(SeededEpochSampler(5, 12, generator))
    shards = []
    for rank in range(2):
        generator.manual_seed(7)  # every rank seeds the epoch alike
        shards.append(list(ShardedSampler(SeededEpochSampler(5, 12, generator), 4, rank, 2)))
    assert [len(s) for s in shards] == [6, 6]
    for batch in range(3):  # each global batch of 4 = rank 0's 2 draws, then rank 1's 2
        rows = slice(2 * batch, 2 * batch + 2)
        assert shards[0][rows] + shards[1][rows] == draws[4 * batch : 4 * batch + 4]


def test_sharded_length_with_a_partial_last_batch():
    sampler = SequentialSampler(range(10))  # batches [0-3], [4-7], [8, 9]
    shards = [list(ShardedSampler(sampler, 4, rank, 2)) for rank in range(2)]
    assert shards == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7]]
    assert [len(ShardedSampler(sampler, 4, rank, 2)) for rank in range(2)] == [6, 4]


def test_validation_batches_stay_whole():
    assert list(BatchShardSampler(7, 3, 0, 2)) == [[0, 1, 2], [6]]
    assert list(BatchShardSampler(7, 3, 1, 2)) == [[3, 4, 5]]
    assert list(BatchShardSampler(7, 3, 0, 1)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_global_batch_must_divide_between_ranks():
    assert per_rank_batch_size(12, ProcessGroup(0, 4)) == 3
    with pytest.raises(ConfigError, match="DATA_LOADER_BATCH_SIZE 6 .* 4 torchrun"):
        per_rank_batch_size(6, ProcessGroup(0, 4))


def test_two_gloo_processes_match_one(tmp_path, capsys):
    """torchrun --nproc_per_node 2 trains the same model as one process with the same global
    batch: the same losses and validation error per epoch; only rank 0 writes."""
    data = tmp_path / "data"
    make_synthetic_dataset(data, counts=(8, 6, 2), size_range=((40, 48), (50, 60)), seed=3)
    single, multi = tmp_path / "single", tmp_path / "multi"
    cpu = ["TRAINER.DEVICE", "cpu"]  # Gloo; also where a GPU would give both ranks cuda:0
    assert run_main(["--cfg", DEMO_CFG, *tiny_opts(data, single), *cpu], capsys)[0] == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    result = subprocess.run(
        [*torchrun, "2", str(REPO / "main.py"), "--cfg", DEMO_CFG, *tiny_opts(data, multi), *cpu],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = pd.read_csv(single / "metrics.csv"), pd.read_csv(multi / "metrics.csv")
    assert list(b["epoch"]) == [1, 2]
    for column in ("train_loss", "val_loss", "val_mre_px"):
        assert b[column].tolist() == pytest.approx(a[column].tolist(), rel=1e-5), column
    assert len(list(multi.glob("log_*.txt"))) == 1
    assert sorted(p.name for p in multi.glob("*.model")) == [
        "model_best.model",
        "model_latest.model",
    ]
    assert (multi / "results" / "model_best" / "predictions.csv").is_file()
    assert not (multi / "results" / "model_best_2").exists()  # tested once, by rank 0
    assert not Path(tmp_path / "output").exists()
