"""Model bundles end to end on the tiny demo: export, predict on files and folders without a
JSON, the same numbers as main.py, ensembles, ONNX parity, and refused files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import main
from inference.bundle import TRAINING_ONLY_KEYS, load_bundle
from scripts import export_model, predict
from tests.test_main import DEMO_CFG, tiny_opts
from transforms import decoding, upsampling
from transforms.decoding import decode_heatmaps
from utils.coordinates import resize_coords
from utils.errors import CheckpointError
from utils.image_io import read_image

NAMES = ["nose", "left", "tail", "right"]


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """Two tiny demo models (seeds 1 and 2) trained and tested by main.py on a dataset JSON
    with landmark names and flip pairs; {seed: run folder}."""
    json_path = tiny_data / "demo.json"
    data = json.loads(json_path.read_text())
    data.update(landmark_names=NAMES, flip_pairs=[[1, 3]])
    json_path.write_text(json.dumps(data))
    folders = {}
    for seed, epochs in ((1, 2), (2, 1)):
        out = tmp_path_factory.mktemp(f"seed{seed}")
        opts = tiny_opts(tiny_data, out, epochs=epochs) + ["SOLVER.SEED", str(seed)]
        assert main.main(["--cfg", DEMO_CFG, *opts]) == 0
        folders[seed] = out
    return folders


def export(run: Path, output: Path, *checkpoints: Path, extra=()) -> Path:
    checkpoints = checkpoints or (run / "model_best.model",)
    argv = ["--cfg", str(run / "config.yaml"), "--checkpoint", *map(str, checkpoints)]
    assert export_model.main([*argv, "--output", str(output), *extra]) == 0
    return output


@pytest.fixture(scope="module")
def bundle_path(runs, tmp_path_factory) -> Path:
    """Seed 1's best checkpoint, calibrated on the validation list."""
    return export(runs[1], tmp_path_factory.mktemp("bundle") / "kites.lannu", extra=["--calibrate"])


def demo_test_images(tiny_data: Path) -> list[Path]:
    data = json.loads((tiny_data / "demo.json").read_text())
    return [tiny_data / sample["image"] for sample in data["testing"]]


def main_predictions(csv: Path, tiny_data: Path) -> pd.DataFrame:
    """main.py's predictions.csv with ``file``: the image's stem (predict.py's id)."""
    data = json.loads((tiny_data / "demo.json").read_text())
    stems = {s["id"]: Path(s["image"]).stem for s in data["testing"]}
    table = pd.read_csv(csv)
    return table.assign(file=table["id"].map(stems))


def compare(expected: pd.DataFrame, got: pd.DataFrame, columns, atol: float) -> None:
    joined = expected.merge(
        got, left_on=["file", "landmark", "method"], right_on=["id", "landmark", "method"]
    )
    assert len(joined) == len(expected) == len(got)
    for column in columns:
        np.testing.assert_allclose(joined[f"{column}_x"], joined[f"{column}_y"], atol=atol)


def test_bundle_round_trip_keeps_weights_names_and_extra_state(runs, bundle_path, tmp_path):
    bundle = load_bundle(bundle_path)
    checkpoint = torch.load(runs[1] / "model_best.model", weights_only=True)
    settings = bundle.settings
    assert settings.methods == ["smha"] and settings.landmark_ids == [0, 1, 2, 3]
    assert settings.landmark_names == NAMES and settings.flip_pairs == [[1, 3]]
    assert settings.input_size == [32, 40] and settings.evaluation_mode == "scale_heatmap_first"
    assert set(settings.calibration) == {"smha"} and "validation" in settings.calibration_source
    (member,) = bundle.members
    for name, tensor in checkpoint["network"].items():
        assert torch.equal(member.state["network"][name], tensor)
    assert not set(TRAINING_ONLY_KEYS) & set(member.state)
    # The learned shape model travels with its member, and so does an entry the bundle does
    # not know (a later addition to checkpoints).
    for key, value in checkpoint["shape_model"].items():
        kept = member.state["shape_model"][key]
        assert torch.equal(kept, value) if torch.is_tensor(value) else kept == value
    checkpoint["future_entry"] = {"mean": torch.arange(8.0).reshape(4, 2), "modes": 2}
    extended = tmp_path / "extended.model"
    torch.save(checkpoint, extended)
    copy = load_bundle(export(runs[1], tmp_path / "extended.lannu", extended))
    future_entry = copy.members[0].state["future_entry"]
    assert torch.equal(future_entry["mean"], torch.arange(8.0).reshape(4, 2))
    assert future_entry["modes"] == 2


def test_predict_gives_main_py_numbers(runs, bundle_path, tiny_data, tmp_path):
    out = tmp_path / "out"
    images = demo_test_images(tiny_data)
    assert predict.main(["--model", str(bundle_path), "-i", *map(str, images), "-o", str(out)]) == 0
    got = pd.read_csv(out / "predictions.csv")
    expected = main_predictions(runs[1] / "results" / "model_best" / "predictions.csv", tiny_data)
    compare(expected, got, ["pred_x", "pred_y", "uncertainty"], atol=0.01)
    radius = expected.merge(got, left_on=["file", "landmark"], right_on=["id", "landmark"])
    np.testing.assert_allclose(radius["conformal_radius_x"], radius["conformal_radius_y"])
    assert list(got.columns[:4]) == ["id", "image", "landmark", "landmark_name"]
    assert list(got["landmark_name"][:4]) == NAMES
    # The same again is refused rather than overwritten.
    assert predict.main(["--model", str(bundle_path), "-i", str(images[0]), "-o", str(out)]) == 2


def test_bfloat16_predictions_stay_near_float32(bundle_path, tiny_data, tmp_path, capsys):
    images = [str(p) for p in demo_test_images(tiny_data)]
    tables = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        argv = ["--model", str(bundle_path), "-i", *images, "-o", str(out)]
        assert predict.main([*argv, "--precision", precision]) == 0
        tables[precision] = pd.read_csv(out / "predictions.csv")
    full, half = tables["float32"], tables["bfloat16"]
    assert (full[["id", "landmark"]].values == half[["id", "landmark"]].values).all()
    moved = np.hypot(full["pred_x"] - half["pred_x"], full["pred_y"] - half["pred_y"])
    # The demo's 2-epoch heatmaps are flat, so a few peaks may move; most stay within 1 px.
    assert np.median(moved) < 1.0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        predict.main([*argv, "--precision", "float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err


def test_onnx_export_of_a_bfloat16_run_is_refused(runs, tmp_path, capsys):
    """The graph is float32: INFERENCE.PRECISION bfloat16 would be ignored, so it is refused
    before anything is written."""
    argv = [
        "--cfg",
        str(runs[1] / "config.yaml"),
        "--checkpoint",
        str(runs[1] / "model_best.model"),
    ]
    argv += ["--output", str(tmp_path / "m.lannu"), "--onnx", str(tmp_path / "m.onnx")]
    capsys.readouterr()
    assert export_model.main([*argv, "INFERENCE.PRECISION", "bfloat16"]) == 2
    err = capsys.readouterr().err
    assert "INFERENCE.PRECISION" in err and "\n" not in err.strip()
    assert not (tmp_path / "m.lannu").exists() and not (tmp_path / "m.onnx").exists()


def test_use_input_size_predictions_are_mapped_to_the_image_files(runs, tiny_data, tmp_path):
    """A bundle decoding in input pixels writes main.py's predictions mapped to file pixels."""
    mode = ["INFERENCE.EVALUATION_MODE", "use_input_size"]
    bundle = export(runs[1], tmp_path / "input.lannu", extra=mode)
    checkpoint = ["TRAINER.INFERENCE_ONLY", "True", "MODEL.CHECKPOINT"]
    checkpoint.append(str(runs[1] / "model_best.model"))
    run = tmp_path / "run"
    assert main.main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, run), *checkpoint, *mode]) == 0
    expected = main_predictions(run / "results" / "model_best" / "predictions.csv", tiny_data)
    sizes = {Path(p).stem: read_image(p).pixels.shape for p in demo_test_images(tiny_data)}
    for n, row in expected.iterrows():
        point = resize_coords(np.array([[row.pred_x, row.pred_y]]), (32, 40), sizes[row.file])
        expected.loc[n, ["pred_x", "pred_y"]] = point[0]
    out = tmp_path / "out"
    images = [str(p) for p in demo_test_images(tiny_data)]
    assert predict.main(["--model", str(bundle), "-i", *images, "-o", str(out)]) == 0
    compare(expected, pd.read_csv(out / "predictions.csv"), ["pred_x", "pred_y"], atol=0.01)


def test_folder_with_nested_folder_and_corrupt_file(bundle_path, tiny_data, tmp_path, capsys):
    folder = tmp_path / "in"
    images = demo_test_images(tiny_data)
    (folder / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(images[0], folder / "top.png")
    shutil.copy(images[1], folder / "nested" / "deeper" / "inner.png")
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "notes.txt").write_text("not an image, not searched")
    out = tmp_path / "out"
    argv = ["--model", str(bundle_path), "-i", str(folder), "-o", str(out), "--slicer"]
    code = predict.main([*argv, "--figures", "--batch-size", "2"])
    printed = capsys.readouterr().out
    assert code == 1  # some images failed
    assert "broken.png" in printed and "predicted 2 of 3 images" in printed
    table = pd.read_csv(out / "predictions.csv")
    assert sorted(table["id"].unique()) == ["nested/deeper/inner", "top"]
    assert len(table) == 2 * 4
    result = json.loads((out / "predictions.json").read_text())
    assert [Path(f["image"]).name for f in result["failed"]] == ["broken.png"]
    assert len(result["images"][0]["predictions"]) == 4
    for sample_id, stem in (("top", "top"), ("nested/deeper/inner", "nested_deeper_inner")):
        markups = json.loads((out / "slicer" / f"{stem}.mrk.json").read_text())
        (points,) = [m["controlPoints"] for m in markups["markups"]]
        assert [p["label"] for p in points] == NAMES
        rows = table[table["id"] == sample_id]
        np.testing.assert_allclose([p["position"][0] for p in points], rows["pred_x"], atol=1e-4)
        assert (out / "figures" / f"{stem}.png").stat().st_size > 0


def test_ensemble_bundle_of_two_seeds_matches_main(runs, tiny_data, tmp_path):
    paths = [runs[seed] / "model_best.model" for seed in (1, 2)]
    bundle = export(runs[1], tmp_path / "ensemble.lannu", *paths)
    assert load_bundle(bundle).settings.methods == ["smha", "emha", "ecpv"]
    ensemble = ["TRAINER.INFERENCE_ONLY", "True", "INFERENCE.ENSEMBLE_INFERENCE", "True"]
    ensemble += ["INFERENCE.ENSEMBLE_CHECKPOINTS", json.dumps([str(p) for p in paths])]
    run = tmp_path / "run"
    assert main.main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, run), *ensemble]) == 0
    out = tmp_path / "out"
    images = demo_test_images(tiny_data)
    assert predict.main(["--model", str(bundle), "-i", *map(str, images), "-o", str(out)]) == 0
    expected = main_predictions(run / "results" / "ensemble" / "predictions.csv", tiny_data)
    compare(expected, pd.read_csv(out / "predictions.csv"), ["pred_x", "pred_y"], atol=0.01)


def test_windowed_upsampling_gives_main_py_the_same_coordinates(
    runs, tiny_data, tmp_path, monkeypatch
):
    """main.py's scale_heatmap_first predicts the same with every heatmap upsampled only in
    its candidate rectangle as with every heatmap upsampled whole."""
    checkpoint = runs[1] / "model_best.model"
    test_only = ["TRAINER.INFERENCE_ONLY", "True", "MODEL.CHECKPOINT", str(checkpoint)]
    regions = []

    def spy(*args):
        regions.extend(upsampling.candidate_regions(*args))
        return regions[-len(args[0]) :]

    tables = {}
    for name, fraction in (("windowed", 1.0), ("full", -1.0)):  # 1: always a window
        monkeypatch.setattr(upsampling, "MAX_REGION_FRACTION", fraction)
        monkeypatch.setattr(decoding, "candidate_regions", spy)
        run = tmp_path / name
        assert main.main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, run), *test_only]) == 0
        tables[name] = pd.read_csv(run / "results" / "model_best" / "predictions.csv")
        if name == "windowed":
            assert regions and None not in regions
            assert any((y1 - y0) * (x1 - x0) < 0.5 * 48 * 60 for y0, y1, x0, x1 in regions)
    assert len(tables["full"]) == 4 * 4
    for column in ("pred_x", "pred_y"):
        np.testing.assert_allclose(tables["full"][column], tables["windowed"][column], atol=1e-3)


def test_onnx_matches_pytorch(runs, bundle_path, tiny_data, tmp_path):
    ort = pytest.importorskip(
        "onnxruntime",
        reason="ONNX export and prediction need onnx and onnxruntime "
        "(pip install -r requirements/requirements-onnx.txt)",
    )
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    onnx_path = tmp_path / "kites.onnx"
    export(runs[1], tmp_path / "again.lannu", extra=["--calibrate", "--onnx", str(onnx_path)])
    images = [str(p) for p in demo_test_images(tiny_data)]
    for name, model in (("torch", bundle_path), ("onnx", onnx_path)):
        argv = ["--model", str(model), "-i", *images, "-o", str(tmp_path / name)]
        assert predict.main(argv) == 0
    pytorch = pd.read_csv(tmp_path / "torch" / "predictions.csv")
    onnx = pd.read_csv(tmp_path / "onnx" / "predictions.csv")
    assert list(onnx.columns) == list(pytorch.columns)
    np.testing.assert_allclose(onnx["pred_x"], pytorch["pred_x"], atol=0.1)
    np.testing.assert_allclose(onnx["pred_y"], pytorch["pred_y"], atol=0.1)
    np.testing.assert_allclose(onnx["conformal_radius"], pytorch["conformal_radius"], rtol=1e-3)
    # The graph is float32: a bfloat16 request is refused rather than ignored.
    argv = ["--model", str(onnx_path), "-i", images[0], "-o", str(tmp_path / "bf16")]
    assert predict.main([*argv, "--precision", "bfloat16"]) == 2
    # The graph's own coordinates (input pixels), for any batch size.
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).standard_normal((3, 1, 32, 40)).astype(np.float32)
    heatmaps, coords, peak = session.run(None, {"images": images})
    assert coords.shape == (3, 4, 2) and peak.shape == (3, 4)
    reference, _ = decode_heatmaps(torch.from_numpy(heatmaps), "quadratic")
    interior = (reference[..., 0] >= 1) & (reference[..., 0] <= 38)
    interior &= (reference[..., 1] >= 1) & (reference[..., 1] <= 30)
    np.testing.assert_allclose(coords[interior.numpy()], reference[interior].numpy(), atol=0.1)


def test_foreign_and_corrupt_files_are_refused(runs, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="training checkpoint"):
        load_bundle(runs[1] / "model_best.model")
    torch.save({"format": "something-else", "weights": torch.zeros(2)}, tmp_path / "other.lannu")
    with pytest.raises(CheckpointError, match="not a LaNNU-Net model bundle"):
        load_bundle(tmp_path / "other.lannu")
    (tmp_path / "corrupt.lannu").write_bytes(b"\x00garbage" * 10)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    argv = ["--model", str(tmp_path / "corrupt.lannu"), "-i", str(image), "-o", str(tmp_path / "o")]
    assert predict.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "corrupt.lannu" in err and "\n" not in err
