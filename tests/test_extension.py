"""Follows docs/extending.md: a new model (network, label generator, trainer, one index line), a
one-method variant, and a trainer built from literals that trains and resumes exactly."""

import math

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

import main
from datasets.synthetic import make_synthetic_dataset
from losses.losses import DeepSupervisionLoss, HeatmapMSELoss
from tests.test_main import DEMO_CFG, tiny_opts
from trainer import model_trainer_index
from trainer.auto_rules import auto_gauss_sigma
from trainer.model_trainer_base import ModelTrainerBase
from trainer.model_trainer_unet import ModelTrainerUNet, UNetSettings
from trainer.settings import DataSettings, RunSettings, SolverSettings, TrainerSettings
from transforms.generate_labels import LabelGenerator, decoder_from_config, gaussian_heatmaps
from utils.devices import seed_everything
from utils.results import PREDICTION_COLUMNS


# ---------------------------------------------------------------- the extending page's example
class TinyNet(nn.Module):
    """(B, C, H, W) -> [(B, K, H, W)]: one full-resolution heatmap per landmark."""

    def __init__(self, in_channels: int, out_channels: int, features: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, out_channels, 1),
        )

    def forward(self, x):
        return [self.body(x)]


class TinyLabelGenerator(LabelGenerator):
    """One Gaussian per landmark at input resolution, 0 where the landmark is not visible;
    decoded by the base (the first map of the output, windows of ``sigma``)."""

    def __init__(self, sigma: float, lambda_scale: float, decoder) -> None:
        self.sigma, self.lambda_scale, self.decoder = sigma, lambda_scale, decoder

    @classmethod
    def from_config(cls, cfg, network):
        return cls(
            float(cfg.MODEL.GAUSS_SIGMA), cfg.MODEL.HM_LAMBDA_SCALE, decoder_from_config(cfg)
        )

    def generate_labels(self, landmarks, landmarks_in_indicator, image_size, x_y_corner_patch=None):
        coords = torch.nan_to_num(landmarks.float(), nan=-1e4)
        heatmaps = gaussian_heatmaps(coords, self.sigma, image_size, self.lambda_scale)
        return [heatmaps * landmarks_in_indicator.to(heatmaps)[..., None, None]]


class ModelTrainerTiny(ModelTrainerBase):
    label_generator_class = TinyLabelGenerator

    def initialize_network(self) -> None:
        self.network = TinyNet(self.sampling.input_channels, self.num_landmarks)

    def initialize_loss_function(self) -> None:
        self.loss = DeepSupervisionLoss(HeatmapMSELoss(), [1.0])


class ModelTrainerUNetStepLR(ModelTrainerUNet):
    """A variant in one method: a step schedule instead of warm-up and poly decay."""

    def learning_rate(self, epoch: int) -> float:
        return self.solver.base_lr * 0.1**epoch


@pytest.fixture
def registered(monkeypatch):
    """The one index line per model (trainer/model_trainer_index.py)."""
    monkeypatch.setitem(model_trainer_index.MODEL_TRAINER_INDEX, "Tiny", ModelTrainerTiny)
    monkeypatch.setitem(
        model_trainer_index.MODEL_TRAINER_INDEX, "U-Net-step", ModelTrainerUNetStepLR
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kites")
    make_synthetic_dataset(root, counts=(6, 2, 3), size_range=((40, 44), (50, 54)), seed=7)
    return root


def test_tiny_model_trains_and_predicts_through_main(registered, data, tmp_path):
    out = tmp_path / "tiny"
    assert main.main(["--cfg", DEMO_CFG, *tiny_opts(data, out), "MODEL.ARCHITECTURE", "Tiny"]) == 0
    state = torch.load(out / "model_latest.model", weights_only=True)
    assert state["architecture"] == "Tiny" and state["epoch"] == 2
    assert set(state["network"]) == {"body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"}
    history = pd.read_csv(out / "metrics.csv")
    assert history["train_loss"].notna().all() and len(history) == 2
    table = pd.read_csv(out / "results" / "model_best" / "predictions.csv")
    assert list(table.columns)[: len(PREDICTION_COLUMNS)] == PREDICTION_COLUMNS
    assert len(table) == 3 * 4


def test_auto_plans_a_model_added_through_the_extension_api(registered, data, tmp_path, capsys):
    """The base's planning defaults: input size within the pixel budget, sigma for one level."""
    out = tmp_path / "auto"
    opts = [*tiny_opts(data, out), "MODEL.ARCHITECTURE", "Tiny", "SAMPLER.INPUT_SIZE", "auto"]
    opts += ["MODEL.GAUSS_SIGMA", "auto", "SAMPLER.MAX_INPUT_PIXELS", "1200"]
    assert main.main(["--cfg", DEMO_CFG, *opts, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "auto: SAMPLER.INPUT_SIZE = [" in printed and "auto: MODEL.GAUSS_SIGMA = " in printed
    assert main.main(["--cfg", DEMO_CFG, *opts]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["MODEL"]["GAUSS_SIGMA"] == auto_gauss_sigma(saved["SAMPLER"]["INPUT_SIZE"], 1)
    height, width = yaml.safe_load((out / "config.yaml").read_text())["SAMPLER"]["INPUT_SIZE"]
    assert height * width <= 1200 and height < width  # the kites are wider than tall


def test_one_method_schedule_subclass(registered, data, tmp_path):
    out = tmp_path / "step"
    opts = [*tiny_opts(data, out, epochs=3), "MODEL.ARCHITECTURE", "U-Net-step"]
    assert main.main(["--cfg", DEMO_CFG, *opts, "SOLVER.WARMUP_EPOCHS", "0"]) == 0
    lrs = pd.read_csv(out / "metrics.csv")["lr"].tolist()
    assert lrs == pytest.approx([1e-3, 1e-4, 1e-5])


# ---------------------------------------------------------------- built from literals
def literal_trainer(data, out, trainer_class=None, **solver) -> ModelTrainerUNet:
    """A U-Net trainer from settings objects alone: no YAML, no config keys."""
    settings = TrainerSettings(
        data=DataSettings(
            root=str(data), annotation_source=str(data / "demo.json"), input_size=(32, 48)
        ),
        solver=SolverSettings(max_epochs=4, batches_per_epoch=2, batch_size=3, **solver),
        run=RunSettings(output_dir=str(out), device="cpu"),
        gauss_sigma=2.0,
        model=UNetSettings(init_features=4, max_features=8, num_res_supervisions=2),
    )
    seed_everything(settings.solver.seed)  # as main.py does: the same initial network
    return (trainer_class or ModelTrainerUNet)(settings, architecture="U-Net")


class StopAfterTwoEpochs(ModelTrainerUNet):
    """Stands for a run stopped half-way (a time limit): one overridden step."""

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        self.stop_training |= self.epoch == 2


def test_trainer_from_literals_trains_and_resumes_exactly(data, tmp_path):
    whole = literal_trainer(data, tmp_path / "whole")
    whole.run_training()
    first = literal_trainer(data, tmp_path / "split", StopAfterTwoEpochs)
    first.run_training()
    assert [row["epoch"] for row in first.history] == [1, 2]
    resumed = literal_trainer(data, tmp_path / "split")
    resumed.load_checkpoint(first.checkpoint_path("latest"), resume_training=True)
    assert resumed.epoch == 2
    resumed.run_training()
    for key in ("train_loss", "val_loss", "val_mre_px", "lr"):
        assert [row[key] for row in resumed.history] == [row[key] for row in whole.history]
    for a, b in zip(resumed.network.parameters(), whole.network.parameters(), strict=True):
        assert torch.equal(a, b)
    # A predictor is built from checkpoints and leaves the trainer's weights alone.
    before = [p.detach().clone() for p in resumed.network.parameters()]
    predictor = model_trainer_index.load_predictor([first.checkpoint_path("latest")], resumed.cfg)
    epoch_two = torch.load(first.checkpoint_path("latest"), weights_only=True)["network"]
    for name, value in predictor.models[0].network.state_dict().items():
        assert torch.equal(value, epoch_two[name])
    assert all(torch.equal(a, b) for a, b in zip(before, resumed.network.parameters(), strict=True))
    # The saved config holds the literals, so the index can load the checkpoint alone.
    loaded = model_trainer_index.load_trainer(resumed.checkpoint_path("latest"))
    assert list(loaded.data.input_size) == [32, 48] and loaded.solver.max_epochs == 4


def test_gradient_clipping_bounds_the_gradient_norm(data, tmp_path):
    """SOLVER.GRAD_CLIP_NORM is applied in ``train_step`` and nowhere else."""

    def gradient_norm_after_a_step(clip: float) -> float:
        trainer = literal_trainer(data, tmp_path / f"clip{clip}", grad_clip_norm=clip)
        trainer.initialize(num_landmarks=4)
        trainer.on_train_start()
        trainer.train_step(next(iter(trainer.train_loader)))
        grads = [p.grad.norm() for p in trainer.network.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(grads)))

    free = gradient_norm_after_a_step(0.0)
    assert free > 0.01 and math.isfinite(free)
    assert gradient_norm_after_a_step(0.01) == pytest.approx(0.01, rel=1e-3)
