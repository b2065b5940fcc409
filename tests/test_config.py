"""Tests of config.py: defaults, YAML and command-line overrides, validation, freezing."""

import importlib.util

import pytest

from config import get_cfg_defaults, load_cfg, unused_keys
from utils.errors import ConfigError


def write_yaml(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_no_file_gives_defaults():
    cfg = load_cfg(None)
    defaults = get_cfg_defaults()
    assert cfg == defaults
    assert cfg.SOLVER.MAX_EPOCHS == 1000
    # planned from the data by config_auto (main.py), not fixed squares
    assert cfg.SAMPLER.INPUT_SIZE == "auto" and cfg.MODEL.GAUSS_SIGMA == "auto"
    assert cfg.SOLVER.NUM_RES_SUPERVISIONS == "auto" and cfg.MODEL.UNET.INIT_FEATURES == 32
    assert cfg.INFERENCE.EVALUATION_MODE == "scale_heatmap_first"


def test_yaml_overrides_defaults_and_opts_override_yaml(tmp_path):
    path = write_yaml(
        tmp_path, "SOLVER:\n  MAX_EPOCHS: 5\n  SEED: 3\nSAMPLER:\n  INPUT_SIZE: [64, 96]\n"
    )
    from_yaml = load_cfg(path)
    assert from_yaml.SOLVER.MAX_EPOCHS == 5
    assert from_yaml.SOLVER.SEED == 3
    assert from_yaml.SAMPLER.INPUT_SIZE == [64, 96]
    assert from_yaml.SOLVER.BASE_LR == 0.001  # untouched default

    both = load_cfg(path, ["SOLVER.MAX_EPOCHS", "7", "DATASET.NAME", "kites"])
    assert both.SOLVER.MAX_EPOCHS == 7
    assert both.SOLVER.SEED == 3
    assert both.DATASET.NAME == "kites"


def test_int_accepted_for_float_key(tmp_path):
    cfg = load_cfg(write_yaml(tmp_path, "SOLVER:\n  BASE_LR: 1\n"))
    assert cfg.SOLVER.BASE_LR == 1.0
    assert isinstance(cfg.SOLVER.BASE_LR, float)
    cfg = load_cfg(None, ["MODEL.GAUSS_SIGMA", "3"])
    assert cfg.MODEL.GAUSS_SIGMA == 3.0
    assert isinstance(cfg.MODEL.GAUSS_SIGMA, float)


def test_scientific_notation_and_null(tmp_path):
    # PyYAML reads 1e-3 as a string; it must still become the float 0.001
    cfg = load_cfg(write_yaml(tmp_path, "SOLVER:\n  BASE_LR: 1e-3\n  DECAY_POLICY: null\n"))
    assert cfg.SOLVER.BASE_LR == 0.001
    assert cfg.SOLVER.DECAY_POLICY is None
    cfg = load_cfg(None, ["SOLVER.BASE_LR", "2e-4", "SOLVER.DECAY_POLICY", "None"])
    assert cfg.SOLVER.BASE_LR == 0.0002
    assert cfg.SOLVER.DECAY_POLICY is None


def test_opts_values_parsed_as_yaml_scalars():
    cfg = load_cfg(None, ["SAMPLER.INPUT_SIZE", "[32, 48]", "TRAINER.CACHE_DATA", "False"])
    assert cfg.SAMPLER.INPUT_SIZE == [32, 48]
    assert cfg.TRAINER.CACHE_DATA is False


def test_unknown_key_in_yaml_names_key(tmp_path):
    path = write_yaml(tmp_path, "SOLVER:\n  MAX_EPOCHZ: 5\n")
    with pytest.raises(ConfigError, match="MAX_EPOCHZ"):
        load_cfg(path)


def test_unknown_key_in_opts_names_key():
    with pytest.raises(ConfigError, match="SOLVER.NOT_A_KEY"):
        load_cfg(None, ["SOLVER.NOT_A_KEY", "1"])
    with pytest.raises(ConfigError, match="SOLVER.BASE_LR.X"):  # below a value
        load_cfg(None, ["SOLVER.BASE_LR.X", "1"])


def test_odd_number_of_opts():
    with pytest.raises(ConfigError, match="KEY VALUE"):
        load_cfg(None, ["SOLVER.MAX_EPOCHS"])


def test_wrong_type_raises_config_error():
    with pytest.raises(ConfigError):
        load_cfg(None, ["SOLVER.MAX_EPOCHS", "many"])


def test_missing_file_names_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_cfg(missing)


def test_malformed_yaml_names_file(tmp_path):
    path = write_yaml(tmp_path, "SOLVER: [unclosed\n  MAX_EPOCHS: 5\n", name="broken.yaml")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_cfg(path)


def test_yaml_not_a_mapping_names_file(tmp_path):
    path = write_yaml(tmp_path, "- a\n- b\n", name="list.yaml")
    with pytest.raises(ConfigError, match="list.yaml"):
        load_cfg(path)


def test_sigma_loss_weight_needs_sigma_regression():
    with pytest.raises(ConfigError, match="REGRESS_SIGMA_LOSS_WEIGHT"):
        load_cfg(None, ["SOLVER.REGRESS_SIGMA_LOSS_WEIGHT", "0.1"])
    cfg = load_cfg(None, ["SOLVER.REGRESS_SIGMA", "True", "SOLVER.REGRESS_SIGMA_LOSS_WEIGHT", "1"])
    assert cfg.SOLVER.REGRESS_SIGMA_LOSS_WEIGHT == 1.0


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("INFERENCE.EVALUATION_MODE", "foo", "INFERENCE.EVALUATION_MODE"),
        ("SOLVER.OPTIMIZER", "rmsprop", "SOLVER.OPTIMIZER"),
        ("SAMPLER.INPUT_SIZE", "[4, 64]", "SAMPLER.INPUT_SIZE"),
        ("DATASET.PIXEL_SIZE", "[0.5, 0]", "DATASET.PIXEL_SIZE"),
        ("SOLVER.MAX_EPOCHS", "0", "SOLVER.MAX_EPOCHS"),
        ("MODEL.GAUSS_SIGMA", "0.0", "MODEL.GAUSS_SIGMA"),
        ("TRAINER.FOLD", "-2", "TRAINER.FOLD"),
        ("SOLVER.NUM_RES_SUPERVISIONS", "0", "SOLVER.NUM_RES_SUPERVISIONS"),
        ("INFERENCE.SDR_THRESHOLDS", "[]", "INFERENCE.SDR_THRESHOLDS"),
        ("SOLVER.DATA_LOADER_BATCH_SIZE", "0", "SOLVER.DATA_LOADER_BATCH_SIZE"),
        ("INFERENCE.SHAPE_OUTLIER_P", "0.0", "INFERENCE.SHAPE_OUTLIER_P"),
        ("INFERENCE.NUM_CANDIDATES", "0", "INFERENCE.NUM_CANDIDATES"),
        ("INFERENCE.SHAPE_NOISE_PX", "-1.0", "INFERENCE.SHAPE_NOISE_PX"),
    ],
)
def test_invalid_values_refused(key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        load_cfg(None, [key, value])


def test_valid_choices_accepted():
    cfg = load_cfg(None, ["INFERENCE.EVALUATION_MODE", "use_input_size", "TRAINER.FOLD", "-1"])
    assert cfg.INFERENCE.EVALUATION_MODE == "use_input_size"
    assert cfg.TRAINER.FOLD == -1


def test_result_is_frozen():
    cfg = load_cfg(None)
    assert cfg.is_frozen()
    with pytest.raises(AttributeError):
        cfg.SOLVER.MAX_EPOCHS = 3


def test_defaults_copy_is_independent():
    cfg = get_cfg_defaults()
    cfg.SOLVER.MAX_EPOCHS = 3
    assert get_cfg_defaults().SOLVER.MAX_EPOCHS == 1000


@pytest.mark.parametrize("key", ["SAMPLER.INPUT_SIZE", "DATASET.PIXEL_SIZE"])
def test_non_numeric_size_refused(key):
    with pytest.raises(ConfigError, match=key):
        load_cfg(None, [key, "[a, b]"])


@pytest.mark.parametrize("text", ["SOLVER: 5\n", "SOLVER:\n"])
def test_section_type_mismatch_is_one_line(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load_cfg(write_yaml(tmp_path, text))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["OUTPUT.COMET_API_KEY", "abc"], "USE_COMETML_LOGGING True"),
        (["OUTPUT.USE_COMETML_LOGGING", "True", "OUTPUT.COMET_TAGS", "a"], "COMET_TAGS"),
        (["OUTPUT.PREDICTION_FIGURES", "-2"], "PREDICTION_FIGURES"),
        (["INFERENCE.ENSEMBLE_CHECKPOINTS", '["a.model", "b.model"]'], "ENSEMBLE_INFERENCE"),
        (["SAMPLER.DATA_AUG", "Affine"], "SAMPLER.DATA_AUG"),
        (["DATASET.LANDMARKS", "[1.0, 2]"], "DATASET.LANDMARKS"),
        (["DATASET.LANDMARKS", "[1, 1]"], "repeats"),
        (["TRAINER.CROSS_VALIDATION", "True", "TRAINER.FOLD", "2"], "TRAINER.FOLD"),
        (
            [
                "INFERENCE.ENSEMBLE_INFERENCE",
                "True",
                "TRAINER.INFERENCE_ONLY",
                "True",
                "INFERENCE.ENSEMBLE_CHECKPOINTS",
                '["a.model"]',
            ],
            "at least two",
        ),
        (
            [
                "INFERENCE.ENSEMBLE_INFERENCE",
                "True",
                "INFERENCE.ENSEMBLE_CHECKPOINTS",
                '["a.model", "b.model"]',
            ],
            "INFERENCE_ONLY",
        ),
    ],
)
def test_values_that_would_be_ignored_are_refused(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_cfg(None, opts)


@pytest.mark.parametrize(
    ("opts", "key"),
    [
        (["SAMPLER.PATCH.SAMPLER_BIAS", "0.5"], "SAMPLER.PATCH.SAMPLER_BIAS"),  # full sampling
        (["SAMPLER.SAMPLE_MODE", "patch_bias", "SAMPLER.PATCH.SAMPLER_BIAS", "1.5"], "BIAS"),
        (["SAMPLER.SAMPLE_MODE", "patches"], "SAMPLER.SAMPLE_MODE"),
        (["SAMPLER.SAMPLE_MODE", "patch_bias", "SAMPLER.PATCH.SAMPLE_PATCH_SIZE", "[4]"], "SIZE"),
        (
            ["SAMPLER.SAMPLE_MODE", "patch_bias", "SAMPLER.PATCH.STITCH_STRIDE", "[32, 32]"],
            "STITCH_STRIDE",  # needs patchify_and_stitch
        ),
        (
            [
                "SAMPLER.SAMPLE_MODE", "patch_bias",
                "SAMPLER.PATCH.INFERENCE_MODE", "patchify_and_stitch",
                "SAMPLER.PATCH.SAMPLE_PATCH_SIZE", "[64, 64]",
                "SAMPLER.PATCH.STITCH_STRIDE", "[80, 32]",
            ],
            "larger than the patch",
        ),
    ],
)  # fmt: skip
def test_patch_keys_checked(opts, key):
    with pytest.raises(ConfigError, match=key):
        load_cfg(None, opts)


def test_full_resolution_patches_leave_input_size_unused():
    cfg = load_cfg(
        None,
        ["SAMPLER.SAMPLE_MODE", "patch_bias", "SAMPLER.INPUT_SIZE", "[256, 256]"],
    )
    assert unused_keys(cfg) == ["SAMPLER.INPUT_SIZE"]


@pytest.mark.parametrize(
    ("key", "module"),
    [("OUTPUT.USE_COMETML_LOGGING", "comet_ml"), ("OUTPUT.TENSORBOARD", "tensorboard")],
)
def test_tracking_without_its_package_names_key_and_pip_command(monkeypatch, key, module):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == module else real_find_spec(name, *a),
    )
    with pytest.raises(ConfigError) as info:
        load_cfg(None, [key, "True"])
    message = str(info.value)
    assert key in message and f"needs the {module} package" in message and "pip install" in message
    assert "\n" not in message
