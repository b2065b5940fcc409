"""Tests of sigma regression: models/learned_sigmas.py, the targets it makes, and a U-Net run
that learns wider targets for noisier landmarks, saves them and predicts with them."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_json, write_png
from test_main import DEMO_CFG, run_main, tiny_opts

from models.learned_sigmas import LearnedSigmas, SigmaRegularisedLoss
from transforms.decoding import HeatmapDecoder
from transforms.generate_labels import UNetLabelGenerator
from utils.checkpoints import load_checkpoint


def test_targets_follow_the_learned_sigmas_with_constant_mass():
    sigmas = LearnedSigmas(2, initial_sigma=2.0)
    with torch.no_grad():
        sigmas.log_sigma[1] = np.log(4.0)
    generator = UNetLabelGenerator(
        sigma=2.0, num_levels=1, lambda_scale=100.0, learned_sigmas=sigmas
    )
    coords = torch.tensor([[[20.0, 20.0], [20.0, 20.0]]])
    heatmaps = generator.generate_labels(coords, torch.ones(1, 2), (41, 41))[0][0]
    assert heatmaps[0].max().item() == pytest.approx(100.0)
    assert heatmaps[1].max().item() == pytest.approx(25.0)  # 100 * (2 / 4)^2
    assert heatmaps[1].sum().item() == pytest.approx(heatmaps[0].sum().item(), rel=1e-3)
    heatmaps.sum().backward()
    assert sigmas.log_sigma.grad is not None and torch.isfinite(sigmas.log_sigma.grad).all()


def test_regulariser_grows_with_sigma():
    sigmas = LearnedSigmas(3, initial_sigma=2.0)
    loss = SigmaRegularisedLoss(lambda outputs, targets: torch.zeros(()), sigmas, weight=0.5)
    assert loss(None, None).item() == pytest.approx(0.5 * 4.0)
    loss(None, None).backward()
    assert (sigmas.log_sigma.grad > 0).all()  # gradient descent shrinks sigma


@pytest.fixture(scope="module")
def noisy_data(tmp_path_factory):
    """32 x 40 images, all alike, with landmarks at fixed places: 0 and 1 annotated exactly,
    2 and 3 with 2.5 px of annotation noise (testing is exact). The best a network can do is
    the mean target, which is wider for 2 and 3, so their learned sigmas must come out wider."""
    root = tmp_path_factory.mktemp("noisy")
    (root / "img").mkdir()
    image = (np.indices((32, 40)).sum(0) * 7 % 255).astype(np.uint8)
    truth = np.array([[10.0, 8.0], [30.0, 8.0], [10.0, 24.0], [30.0, 24.0]])
    rng = np.random.default_rng(0)
    data, number = {}, 0
    for split, count in (("training", 24), ("validation", 4), ("testing", 2)):
        data[split] = []
        for _ in range(count):
            coords = truth.copy()
            if split != "testing":
                coords[2:] += rng.normal(0, 2.5, (2, 2))
            write_png(root / "img" / f"{number}.png", image)
            data[split].append(
                {"id": str(number), "image": f"img/{number}.png", "coordinates": coords.tolist()}
            )
            number += 1
    write_json(root / "demo.json", data)
    return root


SIGMA_OPTS = ["SOLVER.REGRESS_SIGMA", "True", "SOLVER.REGRESS_SIGMA_LOSS_WEIGHT", "0.5"]
SIGMA_OPTS += ["DATASET.DATASET_CLASS", "generic", "SAMPLER.DATA_AUG", "None"]


def test_noisier_landmarks_learn_wider_targets(noisy_data, tmp_path, capsys):
    out = tmp_path / "sigma"
    opts = [*tiny_opts(noisy_data, out, epochs=20), *SIGMA_OPTS, "SOLVER.SEED", "1"]
    opts += ["SOLVER.MINI_BATCH_SIZE", "10", "SOLVER.BASE_LR", "0.01", "MODEL.GAUSS_SIGMA", "1.5"]
    code, err = run_main(["--cfg", DEMO_CFG, *opts], capsys)
    assert code == 0, err
    sigmas = pd.read_csv(out / "learned_sigmas.csv")
    assert list(sigmas["landmark"]) == [0, 1, 2, 3] and (sigmas["epoch"] == 20).all()
    clean, noisy = sigmas["sigma_input_px"][:2], sigmas["sigma_input_px"][2:]
    assert noisy.min() > clean.max() + 0.5, sigmas  # measured: 2.36, 2.07 vs 3.41, 3.79


def test_learned_sigmas_are_saved_resumed_and_used_to_decode(
    noisy_data, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "sigma"
    opts = [*tiny_opts(noisy_data, out), *SIGMA_OPTS]
    assert run_main(["--cfg", DEMO_CFG, *opts], capsys)[0] == 0
    saved = load_checkpoint(out / "model_latest.model")["network"]["sigmas.log_sigma"].exp()
    assert not torch.allclose(
        saved, torch.full_like(saved, 2.0)
    )  # they moved from MODEL.GAUSS_SIGMA
    used = []
    decode = HeatmapDecoder.decode

    def spy(self, heatmaps, original_sizes, sigma):
        used.append(sigma)
        return decode(self, heatmaps, original_sizes, sigma)

    monkeypatch.setattr(HeatmapDecoder, "decode", spy)
    predict = [
        *opts,
        "TRAINER.INFERENCE_ONLY",
        "True",
        "MODEL.CHECKPOINT",
        str(out / "model_latest.model"),
    ]
    assert run_main(["--cfg", DEMO_CFG, *predict], capsys)[0] == 0
    assert used and all(s == pytest.approx(saved.tolist()) for s in used)
    resumed = tmp_path / "resumed"
    more = [*tiny_opts(noisy_data, resumed, epochs=3), *SIGMA_OPTS]
    more += ["MODEL.CHECKPOINT", str(out / "model_latest.model")]
    assert run_main(["--cfg", DEMO_CFG, *more], capsys)[0] == 0
    assert list(pd.read_csv(resumed / "metrics.csv")["epoch"]) == [1, 2, 3]
    assert pd.read_csv(resumed / "learned_sigmas.csv")["epoch"].eq(3).all()
    # A checkpoint without learned sigmas is refused by a sigma-regression config, and back.
    plain = [*tiny_opts(noisy_data, tmp_path / "p"), "DATASET.DATASET_CLASS", "generic"]
    plain += ["TRAINER.INFERENCE_ONLY", "True", "MODEL.CHECKPOINT", str(out / "model_latest.model")]
    code, err = run_main(["--cfg", DEMO_CFG, *plain], capsys)
    assert code == 2 and "SOLVER.REGRESS_SIGMA" in err
