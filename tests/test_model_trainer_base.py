"""The trainer's schedule, early stopping, checkpoint naming and device handling."""

import math
import time

import numpy as np
import pytest
import torch

from config import load_cfg
from datasets.dataset_generic import DatasetGeneric
from trainer.model_trainer_base import EpochLog
from trainer.model_trainer_index import get_trainer_class
from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.devices import resolve_device
from utils.errors import CheckpointError, ConfigError

# Concrete values for the keys that default to "auto" (main.py resolves them from the data).
RESOLVED = (
    "SAMPLER.DATA_AUG",
    "AffineComplex",
    "SOLVER.NUM_RES_SUPERVISIONS",
    "5",
    "MODEL.GAUSS_SIGMA",
    "4.0",
)


def make_trainer(tmp_path, *opts):
    cfg = load_cfg(
        None,
        [
            "OUTPUT.OUTPUT_DIR",
            str(tmp_path),
            "SAMPLER.INPUT_SIZE",
            "[32, 48]",
            "MODEL.UNET.INIT_FEATURES",
            "4",
            "MODEL.UNET.MAX_FEATURES",
            "8",
            *RESOLVED,
            *opts,
        ],
    )
    trainer = get_trainer_class("U-Net").from_config(cfg, DatasetGeneric)
    trainer.initialize(num_landmarks=3)
    return trainer


def end_epoch(trainer, train_loss, val_mre, train_seconds=1.0, seconds=1.0, landmarks=math.nan):
    """Record one epoch as the loop would have measured it, then run ``on_epoch_end``;
    returns whether early stopping says stop."""
    trainer.epoch_log = EpochLog(
        lr=1e-3,
        start=time.perf_counter() - seconds,
        train_losses=[train_loss],
        landmarks_held=[landmarks],
        train_seconds=train_seconds,
        val_losses=[1.0],
        val_errors=[np.array([val_mre])],
    )
    trainer.on_epoch_end()
    return trainer.stop_training


def test_learning_rate_warmup_then_poly(tmp_path):
    trainer = make_trainer(
        tmp_path, "SOLVER.BASE_LR", "0.01", "SOLVER.MAX_EPOCHS", "10", "SOLVER.WARMUP_EPOCHS", "2"
    )
    assert trainer.learning_rate(0) == pytest.approx(0.01 / 3)
    assert trainer.learning_rate(1) == pytest.approx(0.02 / 3)
    assert trainer.learning_rate(2) == pytest.approx(0.01 * 0.8**0.9)
    assert trainer.learning_rate(9) == pytest.approx(0.01 * 0.1**0.9)
    assert trainer.maybe_update_lr(5) == pytest.approx(0.01 * 0.5**0.9)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**0.9)


def test_constant_learning_rate_without_decay(tmp_path):
    trainer = make_trainer(tmp_path, "SOLVER.DECAY_POLICY", "None", "SOLVER.WARMUP_EPOCHS", "0")
    assert trainer.learning_rate(0) == trainer.learning_rate(500) == trainer.solver.base_lr


@pytest.mark.parametrize(
    ("name", "expected"), [("sgd", "SGD"), ("adam", "Adam"), ("adamw", "AdamW")]
)
def test_optimizer_choice(tmp_path, name, expected):
    trainer = make_trainer(tmp_path, "SOLVER.OPTIMIZER", name)
    assert type(trainer.optimizer).__name__ == expected
    if name == "sgd":
        assert trainer.optimizer.defaults["momentum"] == 0.99
        assert trainer.optimizer.defaults["nesterov"]


def test_early_stopping_counts_epochs_without_improvement(tmp_path):
    trainer = make_trainer(tmp_path, "TRAINER.EARLY_STOP_PATIENCE", "2")
    val_errors = [5.0, 4.0, 4.5, 3.9, 4.0, 4.2]
    stops = []
    for error in val_errors:
        stops.append(end_epoch(trainer, 1.0, error))
    assert stops == [False, False, False, False, False, True]
    assert trainer.best_metric == 3.9 and trainer.best_epoch == 4
    assert {p.name for p in trainer.own_checkpoints()} == {
        "model_best_fold0.model",
        "model_latest_fold0.model",
    }
    assert not list(tmp_path.glob("model_ep*.model"))


def test_every_epoch_kept_when_not_latest_only(tmp_path):
    trainer = make_trainer(tmp_path, "TRAINER.SAVE_LATEST_ONLY", "False", "TRAINER.FOLD", "2")
    for epoch in (1, 2):
        end_epoch(trainer, 1.0, 1.0 / epoch)
    names = {p.name for p in trainer.own_checkpoints()}
    assert names == {
        "model_best_fold2.model",
        "model_latest_fold2.model",
        "model_ep1_fold2.model",
        "model_ep2_fold2.model",
    }


def test_own_checkpoints_ignore_other_folds(tmp_path):
    for name in (
        "model_best_fold0.model",
        "model_best_fold1.model",
        "model_best.model",
        "model_latest_fold1.model",
        "notes_fold1.model",
    ):
        (tmp_path / name).write_bytes(b"")
    trainer = make_trainer(tmp_path, "TRAINER.FOLD", "1")
    assert [p.name for p in trainer.own_checkpoints()] == [
        "model_best_fold1.model",
        "model_latest_fold1.model",
    ]
    single = make_trainer(tmp_path, "TRAINER.FOLD", "-1")
    assert [p.name for p in single.own_checkpoints()] == ["model_best.model"]


def test_no_amp_on_cpu(tmp_path):
    trainer = make_trainer(tmp_path, "SOLVER.AUTO_MIXED_PRECISION", "True", "TRAINER.DEVICE", "cpu")
    assert not trainer.use_amp and not trainer.scaler.is_enabled()


def test_device_names_are_checked():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="TRAINER.DEVICE"):
        resolve_device("tpu")


def test_history_row_has_throughput(tmp_path):
    trainer = make_trainer(
        tmp_path, "SOLVER.MINI_BATCH_SIZE", "4", "SOLVER.DATA_LOADER_BATCH_SIZE", "2"
    )
    end_epoch(trainer, 2.0, math.nan, train_seconds=4.0, seconds=5.0)
    row = trainer.history[-1]
    assert row["samples_per_s"] == pytest.approx(8 / 4.0)
    assert row["seconds"] == pytest.approx(5.0, abs=0.5) and row["epoch"] == 1


def tta_outputs(trainer, dim: int) -> tuple:
    """The evaluation-mode outputs of a fixed random (1, 1, 32, 48) image and of it flipped
    along ``dim``."""
    trainer.network.eval()
    image = torch.randn(1, 1, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return trainer.inference_forward(image), trainer.inference_forward(image.flip(dim))


def test_flip_tta_output_is_flip_equivariant(tmp_path):
    """With TTA_FLIP, predicting a flipped image gives exactly the flipped heatmaps."""
    trainer = make_trainer(tmp_path, "INFERENCE.TTA_FLIP", "True")
    direct, flipped = tta_outputs(trainer, -2)
    for a, b in zip(direct, flipped, strict=True):
        torch.testing.assert_close(a, b.flip(-2), atol=1e-5, rtol=0)
    plain = make_trainer(tmp_path, "INFERENCE.TTA_FLIP", "False")  # same seed, other TTA
    plain.network.load_state_dict(trainer.network.state_dict())
    single = tta_outputs(plain, -2)[0]
    assert not torch.allclose(single[0], direct[0])  # TTA really averaged two predictions


PATCH_OPTS = ("SAMPLER.SAMPLE_MODE", "patch_bias", "SAMPLER.PATCH.SAMPLE_PATCH_SIZE", "[16, 16]")


def test_flip_tta_leaves_position_channels_alone(tmp_path):
    """Position channels say where each pixel of the (flipped) image lies, as in training."""
    trainer = make_trainer(tmp_path, *PATCH_OPTS)
    assert trainer.sampling.input_channels == 3
    images = torch.randn(2, 3, 8, 6)
    flipped = trainer.whole_image_runner().flip_input(images)
    assert torch.equal(flipped[:, 0], images[:, 0].flip(-2))
    assert torch.equal(flipped[:, 1:], images[:, 1:])
    plain = make_trainer(tmp_path)
    assert plain.sampling.input_channels == 1
    plain_flipped = plain.whole_image_runner().flip_input(images[:, :1])
    assert torch.equal(plain_flipped, images[:, :1].flip(-2))


def test_patch_sparsity_is_recorded_and_explained(tmp_path, caplog):
    trainer = make_trainer(tmp_path, *PATCH_OPTS)
    with caplog.at_level("INFO"):
        end_epoch(trainer, 2.0, 5.0, landmarks=0.75)
    assert trainer.history[-1]["landmarks_per_sample"] == 0.75
    warning = [r for r in caplog.records if "landmarks on average" in r.getMessage()]
    assert len(warning) == 1 and warning[0].levelname == "WARNING"
    assert "0.75 of 3 landmarks" in warning[0].getMessage() and "4.0x" in warning[0].getMessage()


def test_checkpoint_input_channels_must_match(tmp_path):
    """Checkpoints saved before position channels existed hold no ``input_channels``: they had
    one channel, and still load where the config gives one."""
    no_position = (*PATCH_OPTS, "SAMPLER.PATCH.POSITION_CHANNELS", "False")
    path = tmp_path / "old.model"
    make_trainer(tmp_path / "old", *no_position).save_checkpoint(path)
    state = load_checkpoint(path)
    assert state.pop("input_channels") == 1
    save_checkpoint(state, path)
    make_trainer(tmp_path / "again", *no_position).load_checkpoint(path, resume_training=False)
    with_position = make_trainer(tmp_path / "position", *PATCH_OPTS)
    with pytest.raises(CheckpointError, match="1 input channel.*gives 3.*POSITION_CHANNELS"):
        with_position.load_checkpoint(path, resume_training=False)


def test_flip_tta_is_refused_for_a_model_trained_without_flips(tmp_path):
    with pytest.raises(ConfigError, match="trained without flips"):
        make_trainer(
            tmp_path, "SAMPLER.DATA_AUG", "AffineComplexNoFlip", "INFERENCE.TTA_FLIP", "True"
        )


def test_horizontal_flip_tta_is_equivariant_with_swapped_pairs(tmp_path):
    """A model trained with a horizontal flip: TTA mirrors left-right and swaps the pair back,
    so a mirrored image gives the mirrored heatmaps with the pair's channels swapped."""
    trainer = make_trainer(
        tmp_path, "SAMPLER.DATA_AUG", "AffineComplexHFlip", "INFERENCE.TTA_FLIP", "True"
    )
    trainer.flip_pairs = [(0, 2)]
    assert trainer.whole_image_runner().flip_axis == "horizontal"
    direct, mirrored = tta_outputs(trainer, -1)
    for a, b in zip(direct, mirrored, strict=True):
        torch.testing.assert_close(a, b.flip(-1)[:, [2, 1, 0]], atol=1e-5, rtol=0)
