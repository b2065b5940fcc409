"""Follows the README's "Adding your own model" section: a third model, registered at runtime."""

import pandas as pd
import pytest
import torch
from torch import nn

import main
from datasets.synthetic import make_synthetic_dataset
from losses.losses import DeepSupervisionLoss, HeatmapMSELoss
from tests.test_main import DEMO_CFG, tiny_opts
from trainer import model_trainer_index
from trainer.model_trainer_base import ModelTrainerBase
from trainer.model_trainer_unet import ModelTrainerUNet
from transforms import label_generator_index
from transforms.generate_labels import LabelGenerator, UNetLabelGenerator, gaussian_heatmaps
from utils.results import PREDICTION_COLUMNS


class TinyNet(nn.Module):
    """(B, 1, H, W) -> [(B, K, H, W)]: one full-resolution heatmap per landmark."""

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
    """One Gaussian per landmark at input resolution, 0 where the landmark is not visible."""

    def __init__(self, sigma: float, lambda_scale: float = 100.0) -> None:
        self.sigma, self.lambda_scale = sigma, lambda_scale

    def generate_labels(self, landmarks, landmarks_in_indicator, image_size, x_y_corner_patch=None):
        coords = torch.nan_to_num(landmarks.float(), nan=-1e4)
        heatmaps = gaussian_heatmaps(coords, self.sigma, image_size, self.lambda_scale)
        return [heatmaps * landmarks_in_indicator.to(heatmaps)[..., None, None]]


class ModelTrainerTiny(ModelTrainerBase):
    def __init__(self, cfg, dataset_class, label_generator_class) -> None:
        super().__init__(cfg, dataset_class, label_generator_class)
        self.lambda_scale = float(cfg.MODEL.HM_LAMBDA_SCALE)

    def initialize_network(self) -> None:
        self.network = TinyNet(self.input_channels, self.num_landmarks)

    def initialize_label_generator(self) -> None:
        self.label_generator = self.label_generator_class(self.gauss_sigma, self.lambda_scale)

    def initialize_optimizer_and_scheduler(self) -> None:
        self.optimizer = self.build_optimizer(self.network.parameters())

    def initialize_loss_function(self) -> None:
        self.loss = DeepSupervisionLoss(HeatmapMSELoss(), [1.0])

    def get_coords_from_heatmap(self, output, original_sizes):
        # the base decodes (B, K, h, w) heatmaps as INFERENCE.DECODING / FIT_GAUSS /
        # EVALUATION_MODE say, with windows sized by MODEL.GAUSS_SIGMA
        return self.decode_heatmap_batch(output[0], original_sizes)


class ModelTrainerUNetStepLR(ModelTrainerUNet):
    def learning_rate(self, epoch: int) -> float:
        return self.base_lr * 0.1 ** (epoch // 1)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(model_trainer_index.MODEL_TRAINER_INDEX, "Tiny", ModelTrainerTiny)
    monkeypatch.setitem(label_generator_index.LABEL_GENERATOR_INDEX, "Tiny", TinyLabelGenerator)
    monkeypatch.setitem(
        model_trainer_index.MODEL_TRAINER_INDEX, "U-Net-step", ModelTrainerUNetStepLR
    )
    monkeypatch.setitem(
        label_generator_index.LABEL_GENERATOR_INDEX, "U-Net-step", UNetLabelGenerator
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


def test_one_method_schedule_subclass(registered, data, tmp_path):
    out = tmp_path / "step"
    assert (
        main.main(
            [
                "--cfg",
                DEMO_CFG,
                *tiny_opts(data, out, epochs=3),
                "MODEL.ARCHITECTURE",
                "U-Net-step",
                "SOLVER.WARMUP_EPOCHS",
                "0",
            ]
        )
        == 0
    )
    lrs = pd.read_csv(out / "metrics.csv")["lr"].tolist()
    assert lrs == pytest.approx([1e-3, 1e-4, 1e-5])
