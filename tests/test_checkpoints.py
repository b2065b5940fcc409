"""Tests of utils/checkpoints.py: atomic saves, safe loads, and one-line errors."""

import pickle

import pytest
import torch

from config import get_cfg_defaults
from utils.checkpoints import CHECKPOINT_SUFFIX, load_checkpoint, save_checkpoint
from utils.errors import CheckpointError


def make_state():
    torch.manual_seed(0)
    network = torch.nn.Conv2d(1, 2, 3)
    return {
        "network": network.state_dict(),
        "config": get_cfg_defaults().dump(),
        "epoch": 3,
        "best_error": 1.25,
        "history": [1.5, 1.25],
    }


def test_round_trip(tmp_path):
    state = make_state()
    path = tmp_path / "sub" / f"model_best{CHECKPOINT_SUFFIX}"
    save_checkpoint(state, path)
    assert path.is_file()
    loaded = load_checkpoint(path)
    assert loaded.keys() == state.keys()
    for key, value in state["network"].items():
        torch.testing.assert_close(loaded["network"][key], value)
    assert loaded["config"] == state["config"]
    assert loaded["epoch"] == 3
    assert loaded["best_error"] == 1.25
    assert loaded["history"] == [1.5, 1.25]


def test_no_temporary_files_left(tmp_path):
    path = tmp_path / "model_latest.model"
    save_checkpoint(make_state(), path)
    save_checkpoint(make_state(), path)  # overwriting also leaves nothing behind
    assert [p.name for p in tmp_path.iterdir()] == ["model_latest.model"]


def test_failed_save_leaves_no_files_and_keeps_old(tmp_path):
    path = tmp_path / "model_latest.model"
    save_checkpoint(make_state(), path)
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a lambda cannot be pickled
        save_checkpoint({"network": {}, "config": "", "bad": lambda: None}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model_latest.model"]
    assert path.read_bytes() == before


def test_load_accepts_str_path(tmp_path):
    path = tmp_path / "m.model"
    save_checkpoint(make_state(), path)
    assert load_checkpoint(str(path))["epoch"] == 3


def test_missing_file(tmp_path):
    path = tmp_path / "absent.model"
    with pytest.raises(CheckpointError, match="not found") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", bytes(range(256)) * 4])
def test_corrupt_file_names_path(tmp_path, content):
    path = tmp_path / "corrupt.model"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "cut.model"
    save_checkpoint(make_state(), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("state", [{"weights": {}}, {"network": {}}, {"config": ""}, [1, 2, 3]])
def test_not_a_lannunet_checkpoint(tmp_path, state):
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="not a LaNNU-Net checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_unsafe_pickle_refused(tmp_path):
    path = tmp_path / "unsafe.model"
    torch.save({"network": {}, "config": "", "object": _Custom()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


class _Custom:
    """A class that weights_only=True loading must refuse."""


@pytest.mark.parametrize("content", [b".", b"\x80\x02h\x05."])
def test_malformed_pickle_names_path(tmp_path, content):
    path = tmp_path / "garbage.model"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
