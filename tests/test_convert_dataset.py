"""Tests of datasets/converters.py and scripts/convert_dataset.py: CSV, COCO and LabelMe readers
on tiny hand-written files, their pixel conventions and one-line errors, splits and folds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

from datasets.converters import (
    ConvertedSample,
    convert_dataset,
    fold_splits,
    order_landmarks,
    read_coco,
    read_csv_landmarks,
    read_labelme,
    split_samples,
    write_dataset,
)
from datasets.dataset_base import SPLITS, parse_samples, read_dataset_json
from utils.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "convert_dataset.py"


def touch_images(folder: Path, *names: str) -> Path:
    """Empty files standing in for images (the converters only check that they exist)."""
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
    return folder


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path, content) -> Path:
    return write_text(path, json.dumps(content))


def samples(ids: list[str], annotated: bool = True) -> list[ConvertedSample]:
    """One-landmark samples with the given ids (no files needed for splitting)."""
    point = (1.0, 2.0) if annotated else None
    return [ConvertedSample(i, f"{i}.png", [point]) for i in ids]


def one_line_error(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --- CSV ----------------------------------------------------------------------------------------

CSV_TWO_ANNOTATORS = """id,annotator,landmark,name,x,y
a,A,1,sella,10.0,20.0
a,B,1,sella,12.0,21.0
a,A,2,nasion,30.5,40.25
a,B,10,menton,5.0,6.0
b,A,1,sella,1.0,2.0
b,A,2,nasion,3.0,4.0
b,A,10,menton,7.0,8.0
"""


def test_csv_mean_of_annotators_and_point_nobody_placed(tmp_path):
    images = touch_images(tmp_path / "img", "a.png", "b.DCM")
    csv = write_text(tmp_path / "points.csv", CSV_TWO_ANNOTATORS)
    dataset = read_csv_landmarks(csv, images)
    assert dataset.num_landmarks == 3
    assert dataset.landmark_names == ["sella", "nasion", "menton"]  # 1, 2, 10: numeric order
    a, b = dataset.samples
    assert (a.id, a.image, b.image) == ("a", "a.png", "b.DCM")
    assert a.coordinates == [(11.0, 20.5), (30.5, 40.25), (5.0, 6.0)]  # only A placed 2, B 10
    assert b.coordinates == [(1.0, 2.0), (3.0, 4.0), (7.0, 8.0)]


def test_csv_one_annotator_and_missing_points(tmp_path):
    images = touch_images(tmp_path, "a.png", "b.png")
    csv = write_text(tmp_path / "points.csv", CSV_TWO_ANNOTATORS)
    dataset = read_csv_landmarks(csv, images, annotator="B")
    a, b = dataset.samples
    assert a.coordinates == [(12.0, 21.0), None, (5.0, 6.0)]
    assert a.to_json()["coordinates"] == [[12.0, 21.0], None, [5.0, 6.0]]
    assert not b.has_annotation  # B placed nothing on b
    assert b.to_json() == {
        "id": "b",
        "image": "b.png",
        "has_annotation": False,
        "coordinates": None,
    }


def test_csv_without_annotator_and_name_columns(tmp_path):
    images = touch_images(tmp_path, "p1.png", "sub/p2.npz")
    csv = write_text(
        tmp_path / "points.csv",
        "id,landmark,x,y\np1,tip,1.5,2.5\nsub/p2,base,3,4\np1,base,0.125,7\n",
    )
    dataset = read_csv_landmarks(csv, images)
    assert dataset.landmark_names is None
    assert [s.image for s in dataset.samples] == ["p1.png", "sub/p2.npz"]
    assert dataset.samples[0].coordinates == [(0.125, 7.0), (1.5, 2.5)]  # "base" < "tip"
    assert dataset.samples[1].coordinates == [(3.0, 4.0), None]


def test_numeric_landmark_order():
    assert order_landmarks(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert order_landmarks(["b", "10", "a"]) == ["10", "a", "b"]


def test_csv_unknown_annotator_lists_the_valid_ones(tmp_path):
    images = touch_images(tmp_path, "a.png", "b.png")
    csv = write_text(tmp_path / "points.csv", CSV_TWO_ANNOTATORS)
    with pytest.raises(ConfigError) as err:
        read_csv_landmarks(csv, images, annotator="C")
    assert "'C'" in one_line_error(err) and "['A', 'B']" in str(err.value)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("id,landmark,x\na,1,2\n", ["missing column", "'y'"]),
        ("id,landmark,x,y\na,1,2,3\na,2,two,3\n", ["line 3", "x", "'two'"]),
        ("id,landmark,x,y\na,1,2,3\na,2,1\n", ["line 3", "3 fields"]),
        ("id,landmark,x,y\na,1,2,nan\n", ["line 2", "y"]),
        ("id,landmark,x,y\na,1,2,3\na,2,4,5\na,1,6,7\n", ["line 4", "'a'", "'1'", "line 2"]),
        ("id,annotator,landmark,x,y\na,A,1,2,3\na,A,1,6,7\n", ["line 3", "annotator 'A'"]),
        ("id,landmark,name,x,y\na,1,S,2,3\nb,1,N,2,3\n", ["line 3", "'N'", "'S'"]),
        ("id,landmark,x,y\nghost,1,2,3\n", ["id 'ghost'", "no image file"]),
        ("id,landmark,x,y\ntwin,1,2,3\n", ["id 'twin'", "several image files"]),
    ],
    ids=[
        "missing-column",
        "non-numeric",
        "field-count",
        "nan",
        "duplicate",
        "duplicate-annotator",
        "name-conflict",
        "no-image",
        "two-images",
    ],
)
def test_csv_malformed_names_the_record(tmp_path, text, names):
    images = touch_images(tmp_path / "img", "a.png", "b.png", "twin.png", "twin.tif")
    csv = write_text(tmp_path / "points.csv", text)
    with pytest.raises(DataError) as err:
        read_csv_landmarks(csv, images)
    message = one_line_error(err)
    assert str(csv) in message
    for name in names:
        assert name in message


# --- COCO ---------------------------------------------------------------------------------------


def coco_content(**changes) -> dict:
    content = {
        "images": [
            {"id": 7, "file_name": "sub/a.png", "width": 40, "height": 30},
            {"id": 8, "file_name": "b.png"},
            {"id": 9, "file_name": "c.png"},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "keypoints": [3, 5, 2, 0, 0, 0, 10.25, 11.5, 1]},
            {"id": 2, "image_id": 8, "keypoints": [1, 2, 2, 3, 4, 2, 5, 6, 2]},
        ],
        "categories": [{"id": 1, "keypoints": ["tip", "base", "left"], "skeleton": [[1, 2]]}],
    }
    content.update(changes)
    return content


def test_coco_keypoints_missing_points_and_pixel_convention(tmp_path):
    images = touch_images(tmp_path / "img", "sub/a.png", "b.png", "c.png")
    dataset = read_coco(write_json(tmp_path / "coco.json", coco_content()), images)
    assert dataset.landmark_names == ["tip", "base", "left"]
    a, b, c = dataset.samples
    assert (a.id, a.image) == ("sub/a", "sub/a.png")
    # integer keypoints are pixel centres in our convention too: no half-pixel shift
    assert a.to_json()["coordinates"] == [[3.0, 5.0], None, [10.25, 11.5]]  # v == 0 → null
    assert b.coordinates == [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)]
    assert not c.has_annotation  # no annotation for image 9


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        (
            {"annotations": [{"image_id": 7, "keypoints": [1, 2, 2]}]},
            ["'sub/a.png'", "3 keypoint values", "expected 3 x 3 = 9"],
        ),
        (
            {"annotations": [{"image_id": 8, "keypoints": [0] * 9}] * 2},
            ["'b.png'", "several annotations"],
        ),
        (
            {"annotations": [{"image_id": 8, "keypoints": [1, "x", 2] + [0] * 6}]},
            ["'b.png'", "keypoint 'tip'", "'x'"],
        ),
        ({"annotations": [{"image_id": 8, "keypoints": [1, 2, 5] + [0] * 6}]}, ["visibility 5"]),
        ({"annotations": [{"image_id": 99, "keypoints": []}]}, ["annotation #0", "99"]),
        ({"categories": []}, ["categories[0]"]),
        (
            {"images": [{"id": 1, "file_name": "gone.png"}], "annotations": []},
            ["'gone.png'", "not found"],
        ),
    ],
    ids=[
        "keypoint-count",
        "two-annotations",
        "non-numeric",
        "visibility",
        "unknown-image",
        "no-categories",
        "missing-image",
    ],
)
def test_coco_malformed_names_the_record(tmp_path, changes, names):
    images = touch_images(tmp_path / "img", "sub/a.png", "b.png", "c.png")
    path = write_json(tmp_path / "coco.json", coco_content(**changes))
    with pytest.raises(DataError) as err:
        read_coco(path, images)
    message = one_line_error(err)
    assert str(path) in message
    for name in names:
        assert name in message


def test_coco_bad_json_names_the_file(tmp_path):
    path = write_text(tmp_path / "coco.json", '{"images": [')
    with pytest.raises(DataError, match="malformed JSON") as err:
        read_coco(path, tmp_path)
    assert str(path) in one_line_error(err)


# --- LabelMe ------------------------------------------------------------------------------------


def labelme_content(image: str, points: dict[str, list[float]], **changes) -> dict:
    shapes = [
        {"label": label, "points": [xy], "shape_type": "point", "flags": {}}
        for label, xy in points.items()
    ]
    shapes.append({"label": "outline", "points": [[0, 0], [5, 5]], "shape_type": "rectangle"})
    content = {"shapes": shapes, "imagePath": image, "imageHeight": 30, "imageWidth": 40}
    content.update(changes)
    return content


def test_labelme_half_pixel_shift_order_file_and_missing_label(tmp_path):
    touch_images(tmp_path / "img", "a.png", "b.png")
    folder = tmp_path / "json"
    write_json(folder / "a.json", labelme_content("../img/a.png", {"tip": [10.5, 20.5]}))
    write_json(folder / "b.json", labelme_content("b.png", {"base": [0.0, 0.0], "tip": [40, 30]}))
    order = write_text(tmp_path / "order.txt", "tip\n\nbase\n")
    dataset = read_labelme(folder, tmp_path / "img", landmark_order=order)
    assert dataset.landmark_names == ["tip", "base"]
    a, b = dataset.samples
    assert (a.id, a.image, b.image) == ("a", "a.png", "b.png")  # b found under --images
    # corner-origin continuous → pixel centres: the centre of pixel (10, 20) is (10.5, 20.5)
    assert a.coordinates == [(10.0, 20.0), None]
    # the image's corners are (-0.5, -0.5) and (W - 0.5, H - 0.5) in our convention
    assert b.coordinates == [(39.5, 29.5), (-0.5, -0.5)]


def test_labelme_without_order_file_sorts_labels(tmp_path):
    touch_images(tmp_path, "a.png")
    folder = tmp_path / "json"
    write_json(folder / "a.json", labelme_content("../a.png", {"10": [1, 1], "2": [2, 2]}))
    dataset = read_labelme(folder, tmp_path)
    assert dataset.landmark_names == ["2", "10"]
    assert dataset.samples[0].coordinates == [(1.5, 1.5), (0.5, 0.5)]


@pytest.mark.parametrize(
    ("content", "names"),
    [
        (labelme_content("a.png", {"nose": [1, 1]}), ["label 'nose'", "order file"]),
        (
            labelme_content(
                "a.png",
                {"tip": [1, 1]},
                shapes=[{"label": "tip", "points": [[1, 1]], "shape_type": "point"}] * 2,
            ),
            ["label 'tip'", "twice"],
        ),
        (
            labelme_content(
                "a.png", {}, shapes=[{"label": "tip", "points": [[1]], "shape_type": "point"}]
            ),
            ["label 'tip'", "[[x, y]]"],
        ),
        (labelme_content("a.png", {"tip": ["one", 1]}), ["label 'tip'", "'one'"]),
        (labelme_content("gone.png", {"tip": [1, 1]}), ["not found", "gone.png"]),
        ({"imagePath": "a.png"}, ["not a LabelMe file"]),
    ],
    ids=[
        "unknown-label",
        "repeated-label",
        "bad-point",
        "non-numeric",
        "missing-image",
        "no-shapes",
    ],
)
def test_labelme_malformed_names_file_and_label(tmp_path, content, names):
    touch_images(tmp_path / "json", "a.png")
    path = write_json(tmp_path / "json" / "a.json", content)
    order = write_text(tmp_path / "order.txt", "tip\nbase\n")
    with pytest.raises(DataError) as err:
        read_labelme(tmp_path / "json", tmp_path / "json", landmark_order=order)
    message = one_line_error(err)
    assert str(path) in message
    for name in names:
        assert name in message


# --- splits and folds ---------------------------------------------------------------------------

PATIENT_IDS = [f"P{p}_{visit}" for p in range(7) for visit in range(p % 3 + 1)]  # 1-3 per patient


def patients(split: list[ConvertedSample]) -> set[str]:
    return {s.id.split("_")[0] for s in split}


def test_split_fractions_and_determinism():
    data = samples([f"s{i:02d}" for i in range(20)])
    split = split_samples(data, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert [len(split[s]) for s in SPLITS] == [14, 2, 4]
    assert sorted(s.id for part in split.values() for s in part) == [s.id for s in data]
    assert split == split_samples(data, 0.1, 0.2, seed=3)
    reordered = split_samples(data[::-1], 0.1, 0.2, seed=3)  # the draw ignores the input order
    assert all({s.id for s in split[k]} == {s.id for s in reordered[k]} for k in SPLITS)
    assert split_samples(data, seed=3) != split_samples(data, seed=4)


def test_split_keeps_patients_together_and_tests_unannotated():
    data = samples(PATIENT_IDS) + samples(["P9_0"], annotated=False)
    split = split_samples(
        data, val_fraction=0.2, test_fraction=0.2, seed=1, group_regex=r"^(P\d+)_"
    )
    parts = [patients(split[s]) for s in SPLITS]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert "P9" in parts[2]  # unannotated: only testing can hold it


def test_folds_test_every_image_once_and_respect_groups():
    data = samples(PATIENT_IDS)
    folds = fold_splits(data, folds=3, val_fraction=0.25, seed=0, group_regex=r"^(P\d+)_")
    tested = [s.id for fold in folds for s in fold["testing"]]
    assert sorted(tested) == sorted(PATIENT_IDS)  # every image tested exactly once
    for fold in folds:
        ids = [s.id for part in fold.values() for s in part]
        assert sorted(ids) == sorted(PATIENT_IDS)  # each fold uses every image once
        parts = [patients(fold[s]) for s in SPLITS]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert fold["validation"]
    assert folds == fold_splits(data, 3, 0.25, 0, r"^(P\d+)_")
    assert folds != fold_splits(data, 3, 0.25, 1, r"^(P\d+)_")


def test_folds_balance_and_unannotated_images():
    data = samples([f"s{i}" for i in range(10)]) + samples(["u"], annotated=False)
    folds = fold_splits(data, folds=4, val_fraction=0.0, seed=5)
    assert sorted(len(fold["testing"]) for fold in folds) == [2, 3, 3, 3]
    assert [s.id for fold in folds for s in fold["testing"]].count("u") == 1
    for fold in folds:  # outside its test fold, the unannotated image is left out
        assert "u" not in {s.id for s in fold["training"] + fold["validation"]}


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda d: fold_splits(d, 1), ConfigError, "--folds 1"),
        (lambda d: fold_splits(d, 9), DataError, "only 4"),
        (lambda d: split_samples(d, group_regex=r"^P"), ConfigError, "capture group"),
        (lambda d: split_samples(d, group_regex=r"^(a)"), DataError, "id 'b1'"),
        (lambda d: split_samples(d, 0.5, 0.5), ConfigError, "leave no training"),
    ],
    ids=["one-fold", "too-many-folds", "no-group", "no-match", "fractions"],
)
def test_split_errors(call, error, text):
    with pytest.raises(error, match=text):
        call(samples(["a1", "a2", "b1", "b2"]))


# --- output -------------------------------------------------------------------------------------


def test_write_refuses_to_overwrite(tmp_path):
    path = tmp_path / "out.json"
    write_dataset(path, {"name": "one", "training": []})
    with pytest.raises(DataError, match="--overwrite") as err:
        write_dataset(path, {"name": "two"})
    assert str(path) in str(err.value)
    assert json.loads(path.read_text())["name"] == "one"
    write_dataset(path, {"name": "two"}, overwrite=True)
    assert json.loads(path.read_text()) == {"name": "two"}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left


def test_converted_json_is_readable_by_the_dataset_reader(tmp_path):
    images = tmp_path / "img"
    for i in range(6):
        write_png(images / f"s{i}.png", np.zeros((30, 40), dtype=np.uint8))
    rows = "".join(
        f"s{i},{k},{i + k * 0.25},{30 - i - 0.5 * k}\n"
        for i in range(6)
        for k in (1, 2)
        if (i, k) != (3, 2)  # nobody placed s3's landmark 2: null, read as missing (NaN)
    )
    csv = write_text(tmp_path / "points.csv", "id,landmark,x,y\n" + rows)
    (out,) = convert_dataset("csv", csv, images, tmp_path / "out" / "data.json")
    data = read_dataset_json(out)
    assert (data["name"], data["fold"]) == ("data", -1)
    parsed = {
        split: parse_samples(data[split], out, images, [], [], allow_unannotated=split == "testing")
        for split in SPLITS
    }
    assert sum(len(p) for p in parsed.values()) == 6
    for sample in (s for p in parsed.values() for s in p):
        i = int(sample.id[1:])
        assert sample.image_path == images / f"{sample.id}.png"
        second = [np.nan, np.nan] if i == 3 else [i + 0.5, 29.0 - i]
        np.testing.assert_array_equal(sample.coords, [[i + 0.25, 29.5 - i], second])


def test_folds_write_fold_files_only(tmp_path):
    images = touch_images(tmp_path / "img", *(f"s{i}.png" for i in range(6)))
    rows = "".join(f"s{i},1,{i},{i}\n" for i in range(6))
    csv = write_text(tmp_path / "points.csv", "id,landmark,x,y\n" + rows)
    written = convert_dataset("csv", csv, images, tmp_path / "out" / "data.json", folds=3)
    assert [p.name for p in written] == ["fold0.json", "fold1.json", "fold2.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in written]
    assert [json.loads(p.read_text())["fold"] for p in written] == [0, 1, 2]
    with pytest.raises(DataError, match="fold0.json exists"):
        convert_dataset("csv", csv, images, tmp_path / "out" / "data.json", folds=3)
    with pytest.raises(ConfigError, match="--test-fraction"):
        convert_dataset("csv", csv, images, tmp_path / "o2.json", folds=3, test_fraction=0.3)


# --- the script ---------------------------------------------------------------------------------


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT
    )


def test_script_converts_and_logs_a_summary(tmp_path):
    images = touch_images(tmp_path / "img", "a.png", "b.png")
    csv = write_text(tmp_path / "points.csv", CSV_TWO_ANNOTATORS)
    out = tmp_path / "out.json"
    args = ["--format", "csv", "--input", str(csv), "--images", str(images), "--output", str(out)]
    result = run_script(*args, "--val-fraction", "0", "--test-fraction", "0")
    assert result.returncode == 0, result.stderr
    assert "2 images" in result.stdout and "3 landmarks" in result.stdout
    data = json.loads(out.read_text())
    assert data["landmark_names"] == ["sella", "nasion", "menton"]
    assert [s["id"] for s in data["training"]] == ["a", "b"]
    again = run_script(*args)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: {out} exists; pass --overwrite to replace it"


def test_script_malformed_input_is_one_line_and_status_2(tmp_path):
    csv = write_text(tmp_path / "points.csv", "id,landmark,x,y\na,1,2,oops\n")
    result = run_script(
        "--format",
        "csv",
        "--input",
        str(csv),
        "--images",
        str(tmp_path),
        "--output",
        str(tmp_path / "x.json"),
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {csv} line 2: y: 'oops'")
