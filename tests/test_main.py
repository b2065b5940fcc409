"""End-to-end runs of main.py on synthetic data: train, test, resume, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import main
from datasets.dataset_base import parse_samples, read_dataset_json
from datasets.synthetic import make_synthetic_dataset
from inference.baselines import mean_position_predictions
from utils.metrics import radial_errors
from utils.results import PREDICTION_COLUMNS

REPO = Path(__file__).resolve().parents[1]
DEMO_CFG = str(REPO / "configs" / "examples" / "demo.yaml")


def tiny_opts(data: Path, output: Path, epochs: int = 2) -> list[str]:
    """Overrides that make the demo config train in a second or two."""
    return [
        "DATASET.ROOT",
        str(data),
        "DATASET.SRC_TARGETS",
        str(data / "demo.json"),
        "OUTPUT.OUTPUT_DIR",
        str(output),
        "SAMPLER.INPUT_SIZE",
        "[32, 40]",
        "MODEL.UNET.INIT_FEATURES",
        "4",
        "MODEL.UNET.MAX_FEATURES",
        "8",
        "SOLVER.MAX_EPOCHS",
        str(epochs),
        "SOLVER.MINI_BATCH_SIZE",
        "2",
        "SOLVER.DATA_LOADER_BATCH_SIZE",
        "4",
        "SOLVER.NUM_RES_SUPERVISIONS",
        "2",
    ]


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    code = main.main(argv)
    return code, capsys.readouterr().err


def test_train_then_test_writes_everything(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out)], capsys)
    assert code == 0, err
    for name in (
        "config.yaml",
        "metrics.csv",
        "training_curves.png",
        "model_best.model",
        "model_latest.model",
    ):
        assert (out / name).is_file(), name
    assert len(list(out.glob("log_*.txt"))) == 1
    assert "SOLVER:" in (out / "config.yaml").read_text()
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    for kind in ("best", "latest"):
        folder = out / "results" / f"model_{kind}"
        table = pd.read_csv(folder / "predictions.csv")
        assert list(table.columns) == PREDICTION_COLUMNS + ["conformal_radius", "scanner"]
        assert (table["conformal_radius"] > 0).all()  # calibrated on the validation list
        for name in ("uncertainty_summary.csv", "uncertainty_bins.csv", "uncertainty.png"):
            assert (folder / name).is_file(), name
        assert len(table) == 4 * 4  # 4 test images x 4 landmarks
        assert set(table["method"]) == {"smha"}
        unannotated = table[table["id"] == "kite_0014"]  # the last test sample has no annotation
        assert unannotated["target_x"].isna().all() and unannotated["error_px"].isna().all()
        assert unannotated["pred_x"].notna().all()
        summary = pd.read_csv(folder / "summary.csv")
        overall = summary[summary["landmark"] == "all"].iloc[0]
        assert overall["n"] == 2 * 4  # two of the four test images are unannotated
        assert overall["mre"] == pytest.approx(table["error_px"].mean())
        assert {"predictions", "summary"} <= set(pd.ExcelFile(folder / "results.xlsx").sheet_names)


def test_second_run_is_refused_and_inference_never_overwrites(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out, epochs=1)], capsys)[0] == 0
    config_before = (out / "config.yaml").read_text()
    code, err = run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out, epochs=1)], capsys)
    assert code == 2 and "already holds checkpoints" in err and "MODEL.CHECKPOINT" in err
    assert (out / "config.yaml").read_text() == config_before
    code, err = run_main(
        ["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out, epochs=1), "TRAINER.INFERENCE_ONLY", "True"],
        capsys,
    )
    assert code == 0, err
    assert (out / "results" / "model_best_2" / "predictions.csv").is_file()
    assert (out / "results" / "model_latest_2" / "predictions.csv").is_file()
    first = pd.read_csv(out / "results" / "model_best" / "predictions.csv")
    second = pd.read_csv(out / "results" / "model_best_2" / "predictions.csv")
    pd.testing.assert_frame_equal(first, second)


def test_resume_continues_exactly(tiny_data, tmp_path, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, straight, epochs=3)], capsys)[0] == 0
    assert run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, resumed, epochs=1)], capsys)[0] == 0
    code, err = run_main(
        [
            "--cfg",
            DEMO_CFG,
            *tiny_opts(tiny_data, resumed, epochs=3),
            "MODEL.CHECKPOINT",
            str(resumed / "model_latest.model"),
        ],
        capsys,
    )
    assert code == 0, err
    a = torch.load(straight / "model_latest.model", weights_only=True)
    b = torch.load(resumed / "model_latest.model", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["network"].items():
        torch.testing.assert_close(value, b["network"][key], rtol=0, atol=0, msg=key)
    losses_a = [row["train_loss"] for row in a["history"]]
    losses_b = [row["train_loss"] for row in b["history"]]
    assert losses_a == losses_b and len(losses_a) == 3
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]


def write_bad_dataset(root: Path, mutate) -> Path:
    make_synthetic_dataset(root, counts=(3, 2, 2), size_range=((40, 44), (50, 54)), seed=5)
    path = root / "demo.json"
    data = json.loads(path.read_text())
    mutate(data, root)
    path.write_text(json.dumps(data))
    return root


def drop_coordinate(data, root):
    data["training"][1]["coordinates"] = data["training"][1]["coordinates"][:3]


def delete_image(data, root):
    (root / data["training"][2]["image"]).unlink()


def corrupt_image(data, root):
    (root / data["validation"][0]["image"]).write_bytes(b"not a png at all")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (drop_coordinate, ["kite_0001", "3 landmarks"]),
        (delete_image, ["kite_0002", "not found"]),
        (corrupt_image, ["kite_0003", "cannot decode"]),
    ],
)
def test_bad_data_is_one_line_naming_the_sample(tmp_path, capsys, mutate, expected):
    root = write_bad_dataset(tmp_path / "data", mutate)
    code, err = run_main(["--cfg", DEMO_CFG, *tiny_opts(root, tmp_path / "out")], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    for text in expected:
        assert text in err


def test_malformed_json_names_file(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "demo.json").write_text('{"training": [ {"id": 1,, }')
    code, err = run_main(["--cfg", DEMO_CFG, *tiny_opts(root, tmp_path / "out")], capsys)
    assert code == 2 and "demo.json" in err and "malformed JSON" in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_architecture_lists_valid_ones(tiny_data, tmp_path, capsys):
    code, err = run_main(
        ["--cfg", DEMO_CFG, *tiny_opts(tiny_data, tmp_path / "out"), "MODEL.ARCHITECTURE", "UNet"],
        capsys,
    )
    assert code == 2 and "'UNet'" in err and "U-Net" in err
    assert not (tmp_path / "out").exists()  # nothing written for a refused run


def test_corrupt_checkpoint_names_file(tiny_data, tmp_path, capsys):
    bad = tmp_path / "broken.model"
    bad.write_bytes(b"\x00" * 100)
    code, err = run_main(
        [
            "--cfg",
            DEMO_CFG,
            *tiny_opts(tiny_data, tmp_path / "out"),
            "TRAINER.INFERENCE_ONLY",
            "True",
            "MODEL.CHECKPOINT",
            str(bad),
        ],
        capsys,
    )
    assert code == 2 and "broken.model" in err and len(err.strip().splitlines()) == 1


def test_unknown_key_from_the_shell_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "main.py", "--cfg", DEMO_CFG, "SOLVER.LEARNING_RATE", "0.1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "SOLVER.LEARNING_RATE" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_learns(tmp_path, capsys):
    """The shipped demo config beats the mean-training-position predictor three times over."""
    data, out = tmp_path / "demo_data", tmp_path / "demo_out"
    code, err = run_main(
        [
            "--cfg",
            DEMO_CFG,
            "DATASET.ROOT",
            str(data),
            "DATASET.SRC_TARGETS",
            str(data / "demo.json"),
            "OUTPUT.OUTPUT_DIR",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(out / "results" / "model_best" / "predictions.csv")
    model_mre = table["error_px"].mean()

    json_path = data / "demo.json"
    raw = read_dataset_json(json_path)
    train = parse_samples(raw["training"], json_path, data, [], [])
    test = [s for s in parse_samples(raw["testing"], json_path, data, [], []) if s.has_annotation]

    def size(sample):
        with Image.open(sample.image_path) as img:
            return img.height, img.width

    baseline = mean_position_predictions(
        [s.coords for s in train], [size(s) for s in train], [size(s) for s in test]
    )
    baseline_mre = np.mean(
        [radial_errors(p, s.coords) for p, s in zip(baseline, test, strict=True)]
    )
    assert model_mre < baseline_mre / 3, (model_mre, baseline_mre)


def test_decoder_tta_and_gaussian_fit_reach_the_results(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_main(
        [
            "--cfg",
            DEMO_CFG,
            *tiny_opts(tiny_data, out, epochs=1),
            "INFERENCE.DECODING",
            "dark",
            "INFERENCE.TTA_FLIP",
            "True",
            "INFERENCE.FIT_GAUSS",
            "True",
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(out / "results" / "model_best" / "predictions.csv")
    assert list(table.columns) == PREDICTION_COLUMNS + [
        "conformal_radius",
        "cov_xx",
        "cov_xy",
        "cov_yy",
        "scanner",
    ]
    assert (table["pred_x"] % 1 != 0).any()  # sub-pixel coordinates, not pixel centres


def train_tiny(tiny_data, out, capsys, *extra) -> str:
    """Train a one-epoch model into ``out``; its best checkpoint's path."""
    assert (
        run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out, epochs=1), *extra], capsys)[0] == 0
    )
    return str(out / "model_best.model")


def run_ensemble(tiny_data, out, paths, capsys, *extra) -> tuple[int, str]:
    ensemble = [
        "TRAINER.INFERENCE_ONLY",
        "True",
        "INFERENCE.ENSEMBLE_INFERENCE",
        "True",
        "INFERENCE.ENSEMBLE_CHECKPOINTS",
        json.dumps(paths),
    ]
    return run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out), *ensemble, *extra], capsys)


def test_ensemble_of_two_seeds_end_to_end(tiny_data, tmp_path, capsys):
    paths = [
        train_tiny(tiny_data, tmp_path / f"seed{seed}", capsys, "SOLVER.SEED", str(seed))
        for seed in (1, 2)
    ]
    code, err = run_ensemble(
        tiny_data, tmp_path / "ensemble", paths, capsys, "INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX", "1"
    )
    assert code == 0, err
    folder = tmp_path / "ensemble" / "results" / "ensemble"
    table = pd.read_csv(folder / "predictions.csv")
    assert list(table["method"].unique()) == ["smha", "emha", "ecpv"]
    single = pd.read_csv(tmp_path / "seed2" / "results" / "model_best" / "predictions.csv")
    smha = table[table["method"] == "smha"].reset_index(drop=True)
    np.testing.assert_allclose(smha["pred_x"], single["pred_x"], atol=1e-4)
    assert (table.loc[table["method"] == "ecpv", "uncertainty"] >= 0).all()
    uncertainty = pd.read_csv(folder / "uncertainty_summary.csv")
    assert list(uncertainty["method"]) == ["smha", "emha", "ecpv"]
    assert {"spearman", "conformal_coverage", "conformal_mean_radius"} <= set(uncertainty.columns)


def test_ensemble_with_a_different_architecture_is_refused(tiny_data, tmp_path, capsys):
    paths = [
        train_tiny(tiny_data, tmp_path / "small", capsys),
        train_tiny(tiny_data, tmp_path / "wider", capsys, "MODEL.UNET.INIT_FEATURES", "6"),
    ]
    code, err = run_ensemble(tiny_data, tmp_path / "e", paths, capsys)
    assert code == 2 and "wider" in err and "does not fit" in err


def test_cross_validation_trains_every_fold_and_summarises(tmp_path, capsys):
    data = tmp_path / "data"
    make_synthetic_dataset(
        data, counts=(8, 2, 4), size_range=((40, 44), (50, 54)), seed=9, unannotated_test=0
    )
    raw = json.loads((data / "demo.json").read_text())
    samples = raw["training"] + raw["validation"] + raw["testing"]
    for fold in (0, 1):
        test = samples[fold * 4 : (fold + 1) * 4]
        rest = [s for s in samples if s not in test]
        (data / f"fold{fold}.json").write_text(
            json.dumps(
                {
                    "name": "kites",
                    "fold": fold,
                    "training": rest[2:],
                    "validation": rest[:2],
                    "testing": test,
                }
            )
        )
    out = tmp_path / "cv"
    opts = [
        *tiny_opts(data, out, epochs=1),
        "DATASET.SRC_TARGETS",
        str(data),
        "TRAINER.CROSS_VALIDATION",
        "True",
    ]
    code, err = run_main(["--cfg", DEMO_CFG, *opts], capsys)
    assert code == 0, err
    for fold in (0, 1):
        assert (out / f"fold{fold}" / f"model_best_fold{fold}.model").is_file()
    summary = pd.read_csv(out / "cross_validation" / "summary.csv", dtype={"fold": str})
    overall = summary[(summary["fold"] == "all") & (summary["landmark"] == "all")]
    assert overall["n"].item() == 8 * 4
    assert set(summary["fold"]) == {"all", "0", "1"}
    predictions = pd.read_csv(out / "cross_validation" / "predictions.csv")
    assert sorted(predictions["id"].unique()) == sorted(s["id"] for s in samples[:8])


def test_worker_processes_give_the_same_run(tiny_data, tmp_path, capsys):
    """SAMPLER.NUM_WORKERS only changes where samples are made, not which ones."""
    histories = []
    for workers in (0, 2):
        out = tmp_path / f"workers{workers}"
        opts = [*tiny_opts(tiny_data, out), "SAMPLER.NUM_WORKERS", str(workers)]
        assert run_main(["--cfg", DEMO_CFG, *opts], capsys)[0] == 0
        histories.append(pd.read_csv(out / "metrics.csv")["train_loss"].tolist())
    assert histories[0] == pytest.approx(histories[1], rel=1e-5)


def test_checkpoint_must_match_landmarks_and_input_size(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    train_tiny(tiny_data, out, capsys, "DATASET.LANDMARKS", "[0, 1]")
    test_only = ["TRAINER.INFERENCE_ONLY", "True"]
    code, err = run_main(
        ["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out), *test_only, "DATASET.LANDMARKS", "[2, 3]"],
        capsys,
    )
    assert code == 2 and "[2, 3]" in err and "[0, 1]" in err
    code, err = run_main(
        [
            "--cfg",
            DEMO_CFG,
            *tiny_opts(tiny_data, out),
            *test_only,
            "DATASET.LANDMARKS",
            "[0, 1]",
            "SAMPLER.INPUT_SIZE",
            "[32, 48]",
        ],
        capsys,
    )
    assert code == 2 and "INPUT_SIZE" in err and "model_best.model" in err


def test_error_in_a_loader_worker_is_still_one_line(tmp_path, capsys, monkeypatch):
    root = write_bad_dataset(tmp_path / "data", corrupt_image)
    # Without the data check, which would name the corrupt image before any worker starts.
    monkeypatch.setattr(main, "prepare_config", lambda cfg: (cfg, []))
    code, err = run_main(
        [
            "--cfg",
            DEMO_CFG,
            *tiny_opts(root, tmp_path / "out"),
            "TRAINER.CACHE_DATA",
            "False",
            "SAMPLER.NUM_WORKERS",
            "1",
        ],
        capsys,
    )
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "kite_0003" in err and "Traceback" not in err


def test_sampler_debug_saves_augmented_samples(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    train_tiny(tiny_data, out, capsys, "SAMPLER.DEBUG", "True")
    pictures = sorted(p.name for p in (out / "debug").glob("*.png"))
    assert pictures == [f"training_sample_{i}.png" for i in range(4)]
    with Image.open(out / "debug" / pictures[0]) as picture:
        assert picture.width > 100 and picture.height > 100


PATCH_OPTS = ["SAMPLER.SAMPLE_MODE", "patch_bias", "SAMPLER.PATCH.SAMPLE_PATCH_SIZE", "[16, 24]"]


@pytest.mark.parametrize(
    ("architecture", "inference_mode"),
    [
        ("U-Net", "patchify_and_stitch"),
        ("U-Net", "fully_convolutional"),
        ("PHD-Net", "patchify_and_stitch"),
    ],
)
def test_full_resolution_patch_training_end_to_end(
    tiny_data, tmp_path, capsys, architecture, inference_mode
):
    out = tmp_path / "patches"
    opts = [
        *tiny_opts(tiny_data, out),
        *PATCH_OPTS,
        "SAMPLER.PATCH.INFERENCE_MODE",
        inference_mode,
        "MODEL.ARCHITECTURE",
        architecture,
        "MODEL.GAUSS_SIGMA",
        "1.0" if architecture == "PHD-Net" else "2.0",
    ]
    code, err = run_main(["--cfg", DEMO_CFG, *opts], capsys)
    assert code == 0, err
    metrics = pd.read_csv(out / "metrics.csv")
    assert np.isfinite(metrics["val_mre_px"]).all() and np.isfinite(metrics["val_loss"]).all()
    num_landmarks = len(read_dataset_json(tiny_data / "demo.json")["training"][0]["coordinates"])
    assert (metrics["landmarks_per_sample"] > 0).all()
    assert (metrics["landmarks_per_sample"] < num_landmarks).all()  # a patch misses some
    predictions = pd.read_csv(out / "results" / "model_best" / "predictions.csv")
    samples = parse_samples(
        read_dataset_json(tiny_data / "demo.json")["testing"],
        tiny_data / "demo.json",
        tiny_data,
        [],
        [],
        allow_unannotated=True,
    )
    sizes = {s.id: Image.open(s.image_path).size for s in samples}  # (W, H)
    for row in predictions.itertuples():  # predictions in pixels of each original image
        width, height = sizes[row.id]
        assert -0.5 <= row.pred_x <= width - 0.5 and -0.5 <= row.pred_y <= height - 0.5
    assert predictions["id"].nunique() == len(samples)


def test_patch_model_predicts_with_either_inference_mode(tiny_data, tmp_path, capsys):
    out = tmp_path / "patches"
    code, err = run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out), *PATCH_OPTS], capsys)
    assert code == 0, err
    stitched = [
        *tiny_opts(tiny_data, out),
        *PATCH_OPTS,
        "SAMPLER.PATCH.INFERENCE_MODE",
        "patchify_and_stitch",
        "SAMPLER.PATCH.STITCH_STRIDE",
        "[8, 8]",
        "TRAINER.INFERENCE_ONLY",
        "True",
        "MODEL.CHECKPOINT",
        str(out / "model_best.model"),
    ]
    code, err = run_main(["--cfg", DEMO_CFG, *stitched], capsys)
    assert code == 0, err
    first = pd.read_csv(out / "results" / "model_best" / "predictions.csv")
    second = pd.read_csv(out / "results" / "model_best_2" / "predictions.csv")
    assert len(first) == len(second)
    assert not np.allclose(first["pred_x"], second["pred_x"])  # a different forward pass
    # A checkpoint trained on patches is refused by a full-image config.
    full_image = [*tiny_opts(tiny_data, out), "TRAINER.INFERENCE_ONLY", "True"]
    full_image += ["MODEL.CHECKPOINT", str(out / "model_best.model")]
    code, err = run_main(["--cfg", DEMO_CFG, *full_image], capsys)
    assert code == 2 and "SAMPLER.SAMPLE_MODE" in err
    # ... and so is one trained with position channels by a config without them.
    no_position = [*stitched, "SAMPLER.PATCH.POSITION_CHANNELS", "False"]
    code, err = run_main(["--cfg", DEMO_CFG, *no_position], capsys)
    assert code == 2 and "POSITION_CHANNELS" in err


def test_coarse_to_fine_uses_a_full_image_model(tiny_data, tmp_path, capsys):
    coarse, fine = tmp_path / "coarse", tmp_path / "fine"
    code, err = run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, coarse)], capsys)
    assert code == 0, err
    code, err = run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, fine), *PATCH_OPTS], capsys)
    assert code == 0, err
    refine = [*tiny_opts(tiny_data, fine), *PATCH_OPTS, "TRAINER.INFERENCE_ONLY", "True"]
    refine += ["SAMPLER.PATCH.INFERENCE_MODE", "coarse_to_fine"]
    refine += ["MODEL.CHECKPOINT", str(fine / "model_best.model")]
    # A patch model cannot be the coarse model.
    wrong = [*refine, "SAMPLER.PATCH.COARSE_CHECKPOINT", str(fine / "model_best.model")]
    code, err = run_main(["--cfg", DEMO_CFG, *wrong], capsys)
    assert code == 2 and "COARSE_CHECKPOINT" in err and "patches" in err
    right = [*refine, "SAMPLER.PATCH.COARSE_CHECKPOINT", str(coarse / "model_best.model")]
    code, err = run_main(["--cfg", DEMO_CFG, *right], capsys)
    assert code == 0, err
    predictions = pd.read_csv(fine / "results" / "model_best_2" / "predictions.csv")
    assert np.isfinite(predictions["pred_x"]).all() and len(predictions) > 0


def test_missing_landmarks_pairs_and_names_train_and_are_reported(tmp_path, capsys):
    """30 % of the training coordinates null, a test landmark missing, a left/right pair and
    names: --check-data counts the missing ones, training and horizontal-flip TTA run, and the
    results leave the missing target empty, counting only scored landmarks in ``n``."""
    data = tmp_path / "kites"
    json_path = make_synthetic_dataset(
        data, counts=(6, 2, 3), size_range=((40, 44), (50, 54)), unannotated_test=1
    )
    content = json.loads(json_path.read_text())
    rng = np.random.default_rng(0)
    training = content["training"]
    holes = rng.choice(len(training) * 4, size=int(0.3 * len(training) * 4), replace=False)
    for hole in holes:  # never all four of a sample: 7 holes in 24 points
        training[hole // 4]["coordinates"][hole % 4] = None
    test_sample = content["testing"][0]
    test_sample["coordinates"][2] = [None, None]
    content["landmark_names"] = ["top", "right", "bottom", "left"]
    content["flip_pairs"] = [[1, 3]]
    json_path.write_text(json.dumps(content))
    out = tmp_path / "out"
    opts = [*tiny_opts(data, out), "SAMPLER.DATA_AUG", "AffineComplexHFlip"]
    code = main.main(["--cfg", DEMO_CFG, *opts, "--check-data"])
    report = capsys.readouterr().out
    assert code == 0
    assert (
        f"missing landmarks (null), per split (landmark: samples): training {len(holes)}" in report
    )
    assert "testing 1 (2: 1)" in report and "flip pairs (left/right" in report
    assert run_main(["--cfg", DEMO_CFG, *opts, "INFERENCE.TTA_FLIP", "True"], capsys)[0] == 0
    assert pd.read_csv(out / "metrics.csv")["val_mre_px"].notna().all()
    state = torch.load(out / "model_latest.model", weights_only=True)
    assert state["flip_pairs"] == [[1, 3]]
    folder = out / "results" / "model_best"
    table = pd.read_csv(folder / "predictions.csv", dtype={"id": str})
    assert list(table.columns[:3]) == ["id", "landmark", "landmark_name"]
    missing = table[(table["id"] == test_sample["id"]) & (table["landmark"] == 2)].iloc[0]
    assert missing["landmark_name"] == "bottom" and np.isfinite(missing["pred_x"])
    assert np.isnan(missing[["target_x", "target_y", "error_px"]].astype(float)).all()
    summary = pd.read_csv(folder / "summary.csv")
    annotated_tests = 2  # the last of 3 is unannotated
    n = dict(zip(summary["landmark"].astype(str), summary["n"], strict=True))
    assert n["2"] == annotated_tests - 1 and n["0"] == annotated_tests
    assert n["all"] == 4 * annotated_tests - 1
    row = summary[summary["landmark"].astype(str) == "2"].iloc[0]
    assert row["landmark_name"] == "bottom"
    scored = table[(table["landmark"] == 2) & table["error_px"].notna()]["error_px"]
    assert row["mre"] == pytest.approx(scored.mean())


def test_consistent_decoding_end_to_end_and_old_checkpoints(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    path = train_tiny(tiny_data, out, capsys)
    assert "shape_model" in torch.load(path, weights_only=True)
    layout = [
        "TRAINER.INFERENCE_ONLY",
        "True",
        "INFERENCE.CONSISTENT_DECODING",
        "True",
        "INFERENCE.SHAPE_UNCERTAINTY",
        "True",
        "INFERENCE.FIT_GAUSS",
        "True",
        "MODEL.CHECKPOINT",
        path,
    ]
    code, err = run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out), *layout], capsys)
    assert code == 0, err
    folder = sorted((out / "results").glob("model_best*"))[-1]
    table = pd.read_csv(folder / "predictions.csv")
    assert set(table["method"]) == {"smha", "shape"}
    assert {"replaced", "shape_cov_xx", "cov_xx"} <= set(table.columns)
    summary = pd.read_csv(folder / "uncertainty_summary.csv")
    assert {"ellipse_shape_coverage", "ellipse_heatmap_mean_area", "conformal_mean_area"} <= set(
        summary.columns
    )
    # A checkpoint saved before shape models: plain inference as before, layout refused.
    state = torch.load(path, weights_only=True)
    del state["shape_model"]
    old = tmp_path / "old.model"
    torch.save(state, old)
    layout[-1] = str(old)
    code, err = run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out), *layout], capsys)
    assert code != 0 and "no shape model" in err and "Traceback" not in err
    plain = ["TRAINER.INFERENCE_ONLY", "True", "MODEL.CHECKPOINT"]
    for checkpoint in (path, str(old)):
        assert (
            run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out), *plain, checkpoint], capsys)[0]
            == 0
        )
    new_table, old_table = (
        pd.read_csv(folder / "predictions.csv")
        for folder in sorted((out / "results").iterdir(), key=lambda p: p.stat().st_mtime)[-2:]
    )
    pd.testing.assert_frame_equal(new_table, old_table)
    assert "replaced" not in old_table.columns
