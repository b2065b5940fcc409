"""The batch-size measurement: its random batch trains a real trainer; on CUDA, the search."""

import pytest
import torch

from config import load_cfg
from tests.test_main import DEMO_CFG, tiny_opts
from trainer.auto_batch_size import cuda_batch_probe, synthetic_batch
from trainer.auto_rules import search_batch_size
from trainer.model_trainer_index import build_trainer


def test_synthetic_batch_fits_the_training_step(tmp_path):
    cfg = load_cfg(DEMO_CFG, [*tiny_opts(tmp_path, tmp_path / "out"), "TRAINER.DEVICE", "cpu"])
    trainer = build_trainer(cfg)
    trainer.initialize(num_landmarks=3)
    batch = synthetic_batch(5, trainer.sampling.network_input_size, 3)
    assert batch["image"].shape == (5, 1, 32, 40) and batch["coords"].shape == (5, 3, 2)
    assert (batch["coords"][..., 0] <= 39).all() and (batch["coords"][..., 1] <= 31).all()
    before = [p.detach().clone() for p in trainer.network.parameters()]
    loss = trainer.train_step(batch)
    assert loss > 0
    after = list(trainer.network.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_search_measures_growing_peaks(tmp_path):
    cfg = load_cfg(
        DEMO_CFG,
        [
            *tiny_opts(tmp_path, tmp_path / "out"),
            "SAMPLER.INPUT_SIZE",
            "[256, 320]",
            "TRAINER.DEVICE",
            "cuda",
        ],
    )
    probe, limit = cuda_batch_probe(cfg, num_landmarks=4, device=torch.device("cuda"))
    peaks = [probe(batch) for batch in (1, 2, 4)]
    assert peaks[0] < peaks[1] < peaks[2] < limit
    # A fake limit just above the measured batch 2: the search must stop at 2 (or 3).
    size, notes = search_batch_size(probe, int(peaks[1] / 0.85) + 1, cap=64)
    assert size in (2, 3), notes
