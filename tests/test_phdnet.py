"""PHD-Net: network branches, patch targets, loss, candidate smoothing and an end-to-end run."""

import dataclasses
import math

import pandas as pd
import pytest
import torch

import main
from config import load_cfg
from datasets.dataset_generic import DatasetGeneric
from losses.losses import PHDNetLoss
from models.phdnet import PHDNet
from tests.test_main import DEMO_CFG, tiny_opts
from tests.test_model_trainer_base import RESOLVED
from trainer.model_trainer_index import get_trainer_class
from transforms.candidate_smoothing import candidate_smoothing, splat_votes
from transforms.decoding import heatmap_argmax
from transforms.generate_labels import (
    PHDNetLabelGenerator,
    decode_displacement,
    encode_displacement,
)

SIZE = (32, 48)  # input (H, W): a 4 x 6 grid of 8-pixel patches


def targets(coords, scheme="gaussian", log=False, clamp=None, visible=1.0):
    generator = PHDNetLabelGenerator(
        8, sigma=1.0, class_label_scheme=scheme, log_transform=log, clamp_dist=clamp
    )
    return generator.generate_labels(torch.tensor([coords]), torch.tensor([[visible]]), SIZE)


def test_displacements_from_patch_centres():
    # input (19.5, 11.5) is the centre of patch column 2, row 1: (19.5 + 0.5) / 8 - 0.5 = 2
    labels = targets([[19.5, 11.5]])
    d = labels["displacement"][0, 0]  # (2, h, w)
    assert d[:, 0, 0].tolist() == [2.0, 1.0]
    assert d[:, 3, 5].tolist() == [-3.0, -2.0]
    assert d[:, 1, 2].tolist() == [0.0, 0.0]
    heatmap = labels["heatmap"][0, 0]
    assert heatmap[1, 2] == 1.0 and heatmap.argmax() == 1 * 6 + 2
    assert heatmap[1, 3] == pytest.approx(math.exp(-0.5))  # one patch away, sigma 1 patch


def test_log_transform_keeps_sign_and_clamp_bounds():
    d = targets([[19.5, 11.5]], log=True, clamp=2.5)["displacement"][0, 0]
    assert d[:, 0, 0].tolist() == pytest.approx([math.log(3.0), math.log(2.0)])
    assert d[:, 3, 5].tolist() == pytest.approx([-math.log(3.5), -math.log(3.0)])
    raw = torch.tensor([-7.0, -0.5, 0.0, 2.0])
    assert decode_displacement(
        encode_displacement(raw, True, None), True
    ).tolist() == pytest.approx(raw.tolist())
    assert encode_displacement(raw, False, 1.0).tolist() == [-1.0, -0.5, 0.0, 1.0]


def test_binary_targets_and_invisible_landmarks():
    heatmap = targets([[21.0, 13.9]], scheme="binary")["heatmap"][0, 0]
    assert heatmap.sum() == 1 and heatmap[1, 2] == 1  # nearest patch centre: (2.19, 1.24)
    hidden = targets([[21.0, 13.9]], visible=0.0)
    assert hidden["heatmap"].abs().sum() == 0 and hidden["displacement"].abs().sum() == 0


@pytest.mark.parametrize("scheme", ["multi", "heatmap", "displacement"])
def test_branch_schemes_and_their_losses(scheme):
    network = PHDNet(1, num_landmarks=3, branch_scheme=scheme, maxpool_factor=3, features=4)
    output = network(torch.randn(2, 1, *SIZE))
    expected = {
        "multi": {"heatmap", "displacement"},
        "heatmap": {"heatmap"},
        "displacement": {"displacement"},
    }[scheme]
    assert set(output) == expected
    if "heatmap" in output:
        assert output["heatmap"].shape == (2, 3, 4, 6)
    if "displacement" in output:
        assert output["displacement"].shape == (2, 3, 2, 4, 6)
    generator = PHDNetLabelGenerator(8, 1.0)
    labels = generator.generate_labels(torch.rand(2, 3, 2) * 30, torch.ones(2, 3), SIZE)
    loss = PHDNetLoss("gaussian", weight_by_heatmap=True)(output, labels)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    both = PHDNetLoss()({**output, **{k: v for k, v in labels.items() if k != "visible"}}, labels)
    assert both == 0  # perfect outputs: zero loss


def test_binary_weighted_loss_weights_the_positive_patch():
    labels = targets([[19.5, 11.5]], scheme="binary")
    logits = {"heatmap": torch.zeros(1, 1, 4, 6)}
    plain = PHDNetLoss("binary")(logits, labels)
    weighted = PHDNetLoss("binary_weighted")(logits, labels)
    assert weighted == pytest.approx(plain * (23 + 23) / 24)  # 1 positive patch of 24, x23


@pytest.mark.parametrize("landmark", [(21.3, 13.7), (3.2, 28.9), (40.6, 2.1)])
def test_candidate_smoothing_recovers_a_landmark_from_perfect_outputs(landmark):
    labels = targets([list(landmark)], log=True)
    displacement = decode_displacement(labels["displacement"], True)
    smoothed = candidate_smoothing(labels["heatmap"], displacement, SIZE, vote_sigma=4.0)
    assert smoothed.shape == (1, 1, *SIZE)
    coords, _ = heatmap_argmax(smoothed)
    assert (coords[0, 0] - torch.tensor(landmark)).norm() < 1.0


def test_votes_are_counted_bilinearly():
    votes = splat_votes(torch.tensor([[[1.25, 2.0], [100.0, 1.0]]]), (4, 4))
    assert votes.sum() == pytest.approx(1.0)  # the second vote is off the map
    assert votes[0, 2, 1] == pytest.approx(0.75) and votes[0, 2, 2] == pytest.approx(0.25)


def test_flip_tta_is_exact_for_displacements(tmp_path):
    """With TTA the outputs for an image and its flipped copy are exact mirror images (maps
    flipped, vertical displacements negated), so both give the same landmarks."""
    cfg = load_cfg(
        None,
        [
            "MODEL.ARCHITECTURE",
            "PHD-Net",
            "SAMPLER.INPUT_SIZE",
            "[32, 48]",
            "INFERENCE.EVALUATION_MODE",
            "use_input_size",
            "INFERENCE.TTA_FLIP",
            "True",
            "OUTPUT.OUTPUT_DIR",
            str(tmp_path),
            *RESOLVED,
        ],
    )
    trainer = get_trainer_class("PHD-Net").from_config(cfg, DatasetGeneric)
    trainer.initialize(num_landmarks=2)
    trainer.network.eval()
    codec = trainer.label_generator
    image = torch.randn(1, 1, *SIZE, generator=torch.Generator().manual_seed(0))
    sizes = torch.tensor([list(SIZE)])
    with torch.no_grad():
        direct = trainer.inference_forward(image)
        mirrored = codec.flip_back(trainer.inference_forward(image.flip(-2)))
    for key in ("probability", "offset"):  # TTA averages decoded outputs
        torch.testing.assert_close(mirrored[key], direct[key], atol=1e-5, rtol=0)
    plain = codec.to_average(trainer.network(image))
    assert not torch.allclose(plain["offset"], direct["offset"])
    coords = trainer.get_coords_from_heatmap(direct, sizes)[0]
    torch.testing.assert_close(
        trainer.get_coords_from_heatmap(mirrored, sizes)[0], coords, atol=1e-3, rtol=0
    )
    # Without TTA too, inference gives what E-MHA averages: probabilities and offsets.
    runner = dataclasses.replace(trainer.whole_image_runner(), tta_flip=False)
    with torch.no_grad():
        single = runner(trainer.network, image)
    assert set(single) == {"probability", "offset"}
    torch.testing.assert_close(single["offset"], plain["offset"])


def test_phdnet_trains_and_predicts_end_to_end(tmp_path):
    from datasets.synthetic import make_synthetic_dataset

    data = tmp_path / "data"
    make_synthetic_dataset(data, counts=(6, 2, 3), size_range=((40, 44), (50, 54)), seed=11)
    out = tmp_path / "phd"
    code = main.main(
        [
            "--cfg",
            DEMO_CFG,
            *tiny_opts(data, out),
            "MODEL.ARCHITECTURE",
            "PHD-Net",
            "MODEL.GAUSS_SIGMA",
            "1.0",
            "INFERENCE.TTA_FLIP",
            "True",
        ]
    )
    assert code == 0
    state = torch.load(out / "model_latest.model", weights_only=True)
    assert state["architecture"] == "PHD-Net"
    table = pd.read_csv(out / "results" / "model_best" / "predictions.csv")
    assert len(table) == 3 * 4 and table["pred_x"].notna().all()
    assert (table["uncertainty"] >= 0).all()


def test_candidate_smoothing_with_a_one_hot_patch_heatmap():
    landmark = (21.3, 13.7)
    labels = targets([list(landmark)], scheme="binary")
    smoothed = candidate_smoothing(
        labels["heatmap"],
        labels["displacement"],
        SIZE,
        vote_sigma=4.0,
        weight_votes_by_heatmap=True,
    )
    coords, _ = heatmap_argmax(smoothed)
    assert (coords[0, 0] - torch.tensor(landmark)).norm() < 1.0


def test_broken_or_clamped_votes_are_dropped():
    votes = splat_votes(
        torch.tensor([[[1.5, 1.5], [float("nan"), 2.0], [float("inf"), 1.0]]]), (4, 4)
    )
    assert torch.isfinite(votes).all() and votes.sum() == pytest.approx(1.0)
    displacement = torch.zeros(1, 1, 2, 4, 6)
    displacement[0, 0, 0, 0, 0] = 3.0  # clamped at 3 patches: no vote
    smoothed = candidate_smoothing(None, displacement, SIZE, vote_sigma=1.0, max_displacement=3.0)
    assert smoothed.sum() * 24 == pytest.approx(23.0, rel=1e-3)  # 23 of 24 patches voted


def test_checkpoint_with_other_target_encoding_is_refused(tmp_path, capsys):
    from datasets.synthetic import make_synthetic_dataset

    data = tmp_path / "data"
    make_synthetic_dataset(data, counts=(4, 2, 2), size_range=((40, 44), (50, 54)), seed=12)
    out = tmp_path / "phd"
    phd = ["MODEL.ARCHITECTURE", "PHD-Net", "MODEL.GAUSS_SIGMA", "1.0"]
    assert main.main(["--cfg", DEMO_CFG, *tiny_opts(data, out, epochs=1), *phd]) == 0
    code = main.main(
        [
            "--cfg",
            DEMO_CFG,
            *tiny_opts(data, out),
            *phd,
            "TRAINER.INFERENCE_ONLY",
            "True",
            "MODEL.PHDNET.LOG_TRANSFORM_DISPLACEMENTS",
            "False",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "LOG_TRANSFORM_DISPLACEMENTS" in err and "model_best.model" in err


def test_outputs_are_averaged_as_displacements_not_logs(tmp_path):
    opts = ["MODEL.ARCHITECTURE", "PHD-Net", "OUTPUT.OUTPUT_DIR", str(tmp_path), *RESOLVED]
    cfg = load_cfg(None, [*opts, "SAMPLER.INPUT_SIZE", "[512, 512]"])
    trainer = get_trainer_class("PHD-Net").from_config(cfg, DatasetGeneric)
    trainer.initialize(num_landmarks=1)
    members = [
        {
            "displacement": encode_displacement(torch.full((1, 1, 2, 1, 1), d), True, None),
            "heatmap": torch.zeros(1, 1, 1, 1),
        }
        for d in (2.0, 4.0)
    ]
    from inference.ensemble import average_outputs

    mean = average_outputs([trainer.label_generator.to_average(m) for m in members])
    assert mean["offset"].flatten().tolist() == pytest.approx([3.0, 3.0])
    assert mean["probability"].flatten().tolist() == [0.0]
