"""Config "auto" values: loading, resolution from the fingerprint, and main.py end to end."""

import json

import pytest
import torch
import yaml

import main
from config import auto_keys, load_cfg, unused_keys
from config_auto import resolve_auto_config
from datasets.fingerprint import compute_fingerprint
from datasets.synthetic import make_synthetic_dataset
from tests.test_main import DEMO_CFG, run_main, tiny_opts
from trainer.model_trainer_index import build_trainer
from utils.checkpoints import load_checkpoint
from utils.errors import ConfigError

AUTO_OPTS = [
    "SAMPLER.INPUT_SIZE",
    "auto",
    "SAMPLER.MAX_INPUT_PIXELS",
    "1600",
    "SOLVER.DATA_LOADER_BATCH_SIZE",
    "auto",
    "SOLVER.MAX_AUTO_BATCH_SIZE",
    "4",
    "MODEL.GAUSS_SIGMA",
    "auto",
    "SAMPLER.NUM_WORKERS",
    "auto",
]


@pytest.fixture(scope="module")
def kites(tmp_path_factory):
    """Synthetic kites 40-48 rows by 50-60 columns (landscape), 6/2/2 samples."""
    root = tmp_path_factory.mktemp("auto_kites")
    make_synthetic_dataset(root, counts=(6, 2, 2), size_range=((40, 48), (50, 60)), seed=7)
    return root


def write_yaml(path, content: dict):
    path.write_text(yaml.safe_dump(content))
    return path


def test_auto_from_yaml_and_command_line_with_precedence(tmp_path):
    cfg_file = write_yaml(
        tmp_path / "x.yaml",
        {"SAMPLER": {"INPUT_SIZE": "auto", "NUM_WORKERS": 2}, "MODEL": {"GAUSS_SIGMA": "auto"}},
    )
    cfg = load_cfg(cfg_file)
    assert cfg.SAMPLER.INPUT_SIZE == "auto" and cfg.MODEL.GAUSS_SIGMA == "auto"
    assert cfg.SAMPLER.NUM_WORKERS == 2 and cfg.SOLVER.DATA_LOADER_BATCH_SIZE == 12
    cfg = load_cfg(
        cfg_file,
        ["SAMPLER.INPUT_SIZE", "[64, 80]", "SAMPLER.NUM_WORKERS", "auto", "MODEL.GAUSS_SIGMA", "3"],
    )
    assert list(cfg.SAMPLER.INPUT_SIZE) == [64, 80] and cfg.SAMPLER.NUM_WORKERS == "auto"
    assert cfg.MODEL.GAUSS_SIGMA == 3.0


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["SAMPLER.MAX_INPUT_PIXELS", "4096"], 'used only with SAMPLER.INPUT_SIZE "auto"'),
        (["SOLVER.MAX_AUTO_BATCH_SIZE", "4"], "used only with SOLVER.DATA_LOADER_BATCH_SIZE"),
        (["SAMPLER.NUM_WORKERS", "-1"], "SAMPLER.NUM_WORKERS = -1"),
        (["SAMPLER.INPUT_SIZE", "automatic"], "SAMPLER.INPUT_SIZE"),
    ],
)
def test_bad_auto_settings_are_refused(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_cfg(DEMO_CFG, opts)


def fake_probe(limit_bytes: int):
    """Peak 1000 + 100 per sample; out of memory above ``limit_bytes``."""

    def probe(batch):
        if 1000 + 100 * batch > limit_bytes:
            raise torch.cuda.OutOfMemoryError("fake")
        return 1000 + 100 * batch

    return probe, limit_bytes


def test_resolve_gives_a_concrete_frozen_config(kites, tmp_path):
    cfg = load_cfg(DEMO_CFG, [*tiny_opts(kites, tmp_path / "out"), *AUTO_OPTS])
    fingerprint = compute_fingerprint(kites / "demo.json", kites)
    resolved, choices = resolve_auto_config(
        cfg, fingerprint, torch.device("cpu"), batch_probe=fake_probe(3000), cpu_count=8
    )
    assert resolved.is_frozen()
    # Landscape kites (median about 44 x 55) in 1600 pixels: 32 x 40, divisible by 8.
    assert list(resolved.SAMPLER.INPUT_SIZE) == [32, 40]
    # 0.85 * 3000 = 2550 >= 1000 + 100 b: b <= 15; capped at MAX_AUTO_BATCH_SIZE 4.
    assert resolved.SOLVER.DATA_LOADER_BATCH_SIZE == 4
    assert resolved.MODEL.GAUSS_SIGMA == 2.0  # 2 supervised levels: the 2 px floor
    assert resolved.SAMPLER.NUM_WORKERS == 0  # CPU device, cached images
    # Keys read only by "auto" go back to their defaults: the result loads as a plain config.
    assert resolved.SAMPLER.MAX_INPUT_PIXELS == 512 * 512
    assert resolved.SOLVER.MAX_AUTO_BATCH_SIZE == 32
    assert [line.split(" = ")[0] for line in choices] == [
        "SAMPLER.INPUT_SIZE",
        "MODEL.GAUSS_SIGMA",
        "SAMPLER.NUM_WORKERS",
        "SOLVER.DATA_LOADER_BATCH_SIZE",
    ]
    assert "batch 8: peak" in choices[-1] or "batch 4: peak" in choices[-1]
    # Without the cap the fake memory limit decides: 15.
    auto_batch = ["SAMPLER.INPUT_SIZE", "auto", "SOLVER.DATA_LOADER_BATCH_SIZE", "auto"]
    cfg = load_cfg(DEMO_CFG, [*tiny_opts(kites, tmp_path / "out"), *auto_batch])
    resolved, _ = resolve_auto_config(cfg, fingerprint, torch.device("cpu"), fake_probe(3000))
    assert resolved.SOLVER.DATA_LOADER_BATCH_SIZE == 15
    # No probe on a CPU: the small CPU batch (32 x 40 input: the cap of 32).
    resolved, _ = resolve_auto_config(cfg, fingerprint, torch.device("cpu"))
    assert resolved.SOLVER.DATA_LOADER_BATCH_SIZE == 32


def test_training_with_auto_values_saves_concrete_ones(kites, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_main(["--cfg", DEMO_CFG, *tiny_opts(kites, out, epochs=1), *AUTO_OPTS], capsys)
    assert code == 0, err
    saved = load_cfg(out / "config.yaml")  # loads as a plain config: no "auto" left
    assert list(saved.SAMPLER.INPUT_SIZE) == [32, 40]
    assert saved.SOLVER.DATA_LOADER_BATCH_SIZE == 4 and saved.MODEL.GAUSS_SIGMA == 2.0
    assert saved.SAMPLER.NUM_WORKERS == 0
    state = load_checkpoint(out / "model_best.model")
    trained = yaml.safe_load(state["config"])
    assert trained["SAMPLER"]["INPUT_SIZE"] == [32, 40]
    assert trained["SOLVER"]["DATA_LOADER_BATCH_SIZE"] == 4
    (log,) = out.glob("log_*.txt")
    text = log.read_text()
    assert "auto: SAMPLER.INPUT_SIZE = [32, 40]" in text and "0 errors" in text
    # The same run repeated from its config.yaml plans nothing.
    code, err = run_main(
        ["--cfg", str(out / "config.yaml"), "OUTPUT.OUTPUT_DIR", str(tmp_path / "again")], capsys
    )
    assert code == 0, err
    assert "auto:" not in next((tmp_path / "again").glob("log_*.txt")).read_text()


def test_print_config_resolves_and_writes_nothing(kites, tmp_path, capsys):
    out = tmp_path / "out"
    code = main.main(["--cfg", DEMO_CFG, *tiny_opts(kites, out), *AUTO_OPTS, "--print-config"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert yaml.safe_load(printed.out)["SAMPLER"]["INPUT_SIZE"] == [32, 40]
    assert "# auto: SOLVER.DATA_LOADER_BATCH_SIZE = 4: device cpu" in printed.out
    assert not out.exists()


def test_check_data_reports_and_fails_on_errors(kites, tmp_path, capsys):
    code = main.main(["--cfg", DEMO_CFG, *tiny_opts(kites, tmp_path / "o"), "--check-data"])
    out = capsys.readouterr().out
    assert code == 0
    assert "samples: training 6, validation 2, testing 2" in out and "0 errors" in out
    assert "spread of each landmark" in out
    # A broken copy: a duplicate id and a landmark outside its image.
    broken = tmp_path / "broken"
    broken.mkdir()
    data = json.loads((kites / "demo.json").read_text())
    data["training"][1]["id"] = data["training"][0]["id"]
    data["training"][2]["coordinates"][0] = [-40.0, 5.0]
    (broken / "demo.json").write_text(json.dumps(data))
    opts = tiny_opts(kites, tmp_path / "o")
    opts[opts.index("DATASET.SRC_TARGETS") + 1] = str(broken / "demo.json")
    code = main.main(["--cfg", DEMO_CFG, *opts, "--check-data"])
    printed = capsys.readouterr()
    assert code == 2
    first_id, third_id = data["training"][0]["id"], data["training"][2]["id"]
    assert f"error: training sample '{first_id}': duplicate id" in printed.out
    assert f"warning: training sample '{third_id}': landmark 0 at x=-40" in printed.out
    assert printed.err.startswith("error: ") and len(printed.err.strip().splitlines()) == 1
    # Training on it stops before anything is written.
    code = main.main(["--cfg", DEMO_CFG, *opts])
    err = capsys.readouterr().err
    assert code == 2 and "duplicate id" in err and first_id in err
    assert not (tmp_path / "o").exists()


def test_images_of_another_aspect_are_reported_as_stretched(kites, tmp_path):
    cfg = load_cfg(DEMO_CFG, [*tiny_opts(kites, tmp_path / "out"), "SAMPLER.INPUT_SIZE", "auto"])
    fingerprint = compute_fingerprint(kites / "demo.json", kites)
    fingerprint.sizes = [[100, 200]] * 4 + [[200, 100]]  # one portrait among landscapes
    resolved, choices = resolve_auto_config(cfg, fingerprint, torch.device("cpu"))
    assert list(resolved.SAMPLER.INPUT_SIZE) == [96, 192]
    assert "1 of 5 images differ from its aspect by more than 10 % (up to 4.00x)" in choices[0]


def test_a_trainer_refuses_unresolved_auto_values(kites, tmp_path):
    cfg = load_cfg(DEMO_CFG, [*tiny_opts(kites, tmp_path / "out"), "MODEL.GAUSS_SIGMA", "auto"])
    with pytest.raises(ConfigError, match="MODEL.GAUSS_SIGMA still 'auto'"):
        build_trainer(cfg)


def test_full_resolution_patches_keep_the_default_input_size_unresolved(kites, tmp_path):
    """INPUT_SIZE defaults to "auto", which patches cut from full-resolution images do not use:
    it is neither resolved nor reported as set-but-unused, and the trainer builds."""
    opts = [*tiny_opts(kites, tmp_path / "out"), "SAMPLER.INPUT_SIZE", "auto"]
    opts += ["SAMPLER.SAMPLE_MODE", "patch_bias", "SAMPLER.PATCH.SAMPLE_PATCH_SIZE", "[32, 32]"]
    cfg = load_cfg(DEMO_CFG, opts)
    assert "SAMPLER.INPUT_SIZE" not in auto_keys(cfg) and unused_keys(cfg) == []
    fingerprint = compute_fingerprint(kites / "demo.json", kites)
    resolved, choices = resolve_auto_config(cfg, fingerprint, torch.device("cpu"))
    assert resolved.SAMPLER.INPUT_SIZE == "auto"
    assert not any(line.startswith("SAMPLER.INPUT_SIZE") for line in choices)
    trainer = build_trainer(resolved)
    assert trainer.sampling.image_size is None and trainer.sampling.network_input_size == (32, 32)
    # resized patches do need the size: there "auto" is still planned
    resized = load_cfg(DEMO_CFG, [*opts, "SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM", "input_size"])
    assert "SAMPLER.INPUT_SIZE" in auto_keys(resized)


def test_auto_size_smaller_than_the_patches_is_refused(kites, tmp_path):
    opts = [
        *tiny_opts(kites, tmp_path / "out"),
        "SAMPLER.INPUT_SIZE",
        "auto",
        "SAMPLER.MAX_INPUT_PIXELS",
        "1600",
        "SAMPLER.SAMPLE_MODE",
        "patch_bias",
        "SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM",
        "input_size",
        "SAMPLER.PATCH.SAMPLE_PATCH_SIZE",
        "[32, 48]",
    ]
    cfg = load_cfg(DEMO_CFG, opts)
    fingerprint = compute_fingerprint(kites / "demo.json", kites)
    with pytest.raises(ConfigError, match=r"chose \[32, 40\], smaller than the patches"):
        resolve_auto_config(cfg, fingerprint, torch.device("cpu"))


def test_patch_sigma_keeps_the_whole_image_width_in_original_pixels(tmp_path):
    """A landmark is no more precisely defined in a full-resolution patch than in a resized
    image: auto sigma for patches is the whole-image sigma, converted to the patch's pixels."""
    big = tmp_path / "big_kites"  # larger than the 512 x 512 whole-image budget
    make_synthetic_dataset(big, counts=(3, 1, 1), size_range=((1000, 1040), (1250, 1300)), seed=3)
    fingerprint = compute_fingerprint(big / "demo.json", big)
    base = tiny_opts(big, tmp_path / "out")
    whole = load_cfg(DEMO_CFG, [*base, "SAMPLER.INPUT_SIZE", "auto", "MODEL.GAUSS_SIGMA", "auto"])
    whole, _ = resolve_auto_config(whole, fingerprint, torch.device("cpu"))
    median_h, median_w = fingerprint.median_size()
    whole_h, whole_w = whole.SAMPLER.INPUT_SIZE
    original = whole.MODEL.GAUSS_SIGMA * (median_h * median_w / (whole_h * whole_w)) ** 0.5
    patches = [*base, "SAMPLER.SAMPLE_MODE", "patch_bias", "MODEL.GAUSS_SIGMA", "auto"]
    patches += ["SAMPLER.PATCH.SAMPLE_PATCH_SIZE", "[128, 128]"]
    full = load_cfg(DEMO_CFG, patches)
    full, choices = resolve_auto_config(full, fingerprint, torch.device("cpu"))
    assert abs(full.MODEL.GAUSS_SIGMA - original) <= 0.05  # rounded to 0.1 px
    assert full.MODEL.GAUSS_SIGMA > whole.MODEL.GAUSS_SIGMA  # wider in the finer pixels
    assert "original px" in choices[0]
    resized = [*patches, "SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM", "input_size"]
    resized += ["SAMPLER.INPUT_SIZE", f"[{2 * whole_h}, {2 * whole_w}]"]
    resized, _ = resolve_auto_config(load_cfg(DEMO_CFG, resized), fingerprint, torch.device("cpu"))
    scale = (4 * whole_h * whole_w / (median_h * median_w)) ** 0.5
    assert abs(resized.MODEL.GAUSS_SIGMA - original * scale) <= 0.05


def test_augmentation_and_supervised_levels_are_planned(kites, tmp_path):
    """DATA_AUG "auto" never flips; NUM_RES_SUPERVISIONS "auto" keeps the coarsest Gaussian at
    least 0.5 px (sigma 2: three levels), from the YAML or the command line."""
    opts = [*tiny_opts(kites, tmp_path / "out"), "SAMPLER.DATA_AUG", "auto"]
    opts += ["SOLVER.NUM_RES_SUPERVISIONS", "auto", "MODEL.GAUSS_SIGMA", "2"]
    cfg = load_cfg(DEMO_CFG, opts)
    fingerprint = compute_fingerprint(kites / "demo.json", kites)
    assert len(fingerprint.training_landmarks_rel) == 6  # the training samples' layout
    resolved, choices = resolve_auto_config(cfg, fingerprint, torch.device("cpu"))
    assert resolved.SAMPLER.DATA_AUG in ("AffineComplexNoFlip", "AffineSimpleNoFlip")
    assert resolved.SOLVER.NUM_RES_SUPERVISIONS == 3  # 2 px, then 1 and 0.5 px at levels 1, 2
    assert [line.split(" = ")[0] for line in choices] == [
        "SOLVER.NUM_RES_SUPERVISIONS",
        "SAMPLER.DATA_AUG",
    ]
    assert "no flip" in choices[1] and "out of the 32 x 40 image" in choices[1]
    explicit = load_cfg(DEMO_CFG, [*tiny_opts(kites, tmp_path / "out"), "SAMPLER.DATA_AUG", "None"])
    assert explicit.SAMPLER.DATA_AUG is None and explicit.SOLVER.NUM_RES_SUPERVISIONS == 2
    with pytest.raises(ConfigError, match="SOLVER.NUM_RES_SUPERVISIONS"):
        load_cfg(None, ["SOLVER.NUM_RES_SUPERVISIONS", "many"])


def test_auto_augmentation_flips_horizontally_when_the_fingerprint_has_pairs(kites, tmp_path):
    """The same data with flip pairs declared: "auto" adds the horizontal flip with swaps."""
    import dataclasses

    opts = [*tiny_opts(kites, tmp_path / "out"), "SAMPLER.DATA_AUG", "auto"]
    cfg = load_cfg(DEMO_CFG, opts)
    fingerprint = compute_fingerprint(kites / "demo.json", kites)
    plain, _ = resolve_auto_config(cfg, fingerprint, torch.device("cpu"))
    paired = dataclasses.replace(fingerprint, flip_pairs=[[1, 3]])
    resolved, choices = resolve_auto_config(cfg, paired, torch.device("cpu"))
    assert plain.SAMPLER.DATA_AUG.replace("NoFlip", "HFlip") == resolved.SAMPLER.DATA_AUG
    assert any("horizontal flip that swaps the 1 declared flip pairs" in line for line in choices)


def test_first_level_features_are_planned_from_the_selected_landmarks(kites, tmp_path):
    """INIT_FEATURES "auto" counts the landmarks the fingerprint says (a synthetic fingerprint of
    68 landmarks gets 32, the demo's few the floor); an explicit value is kept."""
    import dataclasses

    opts = [*tiny_opts(kites, tmp_path / "out"), "MODEL.UNET.INIT_FEATURES", "auto"]
    cfg = load_cfg(DEMO_CFG, [*opts, "MODEL.UNET.MAX_FEATURES", "64"])
    fingerprint = compute_fingerprint(kites / "demo.json", kites)
    few, choices = resolve_auto_config(cfg, fingerprint, torch.device("cpu"))
    assert few.MODEL.UNET.INIT_FEATURES == 16
    assert choices[0].startswith("MODEL.UNET.INIT_FEATURES = 16:")
    many = dataclasses.replace(fingerprint, num_landmarks=68, selected_landmarks=[])
    resolved, _ = resolve_auto_config(cfg, many, torch.device("cpu"))
    assert resolved.MODEL.UNET.INIT_FEATURES == 32
    explicit = load_cfg(DEMO_CFG, [*tiny_opts(kites, tmp_path / "out")])
    assert isinstance(explicit.MODEL.UNET.INIT_FEATURES, int)
    with pytest.raises(ConfigError, match="MODEL.UNET.INIT_FEATURES"):
        load_cfg(None, ["MODEL.UNET.INIT_FEATURES", "wide"])
