"""The dataset fingerprint and integrity check: every planted defect reported with its sample."""

import json
import os

import numpy as np
import pytest

import datasets.fingerprint as fingerprint_module
from datasets.fingerprint import (
    cached_fingerprint,
    compute_fingerprint,
    format_report,
    raise_on_errors,
)
from tests.conftest import HAND_COORDS, HAND_SIZE
from utils.errors import DataError


def plant(json_path, mutate):
    data = json.loads(json_path.read_text())
    mutate(data)
    json_path.write_text(json.dumps(data))


def issues_of(fingerprint, severity):
    return [(i.split, i.sample_id, i.message) for i in fingerprint.issues if i.severity == severity]


def test_clean_data_fingerprint(hand_dataset):
    json_path, root = hand_dataset
    fp = compute_fingerprint(json_path, root)
    assert fp.split_counts == {"training": 3, "validation": 1, "testing": 2}
    assert fp.sizes == [list(HAND_SIZE)] * 6 and fp.formats == {".png": 6}
    assert fp.median_size() == HAND_SIZE and fp.median_aspect() == pytest.approx(30 / 40)
    assert fp.pixel_sizes == {"unknown": 5, "0.5 x 0.25": 1}
    assert fp.num_landmarks == 3 and fp.errors == []
    # 'c' is in training and validation: a warning, not an error.
    assert issues_of(fp, "warning") == [("validation", "c", "the same id is also in 'training'")]
    # Spread over the 5 annotated samples (training a, b, c; validation c; testing t1).
    coords = np.array([HAND_COORDS[i] for i in ("a", "b", "c", "c", "t1")])
    np.testing.assert_allclose(fp.landmark_std_px, coords.std(axis=0))
    np.testing.assert_allclose(fp.landmark_std_rel, coords.std(axis=0) / [40, 30])
    report = format_report(fp)
    assert "training 3, validation 1, testing 2" in report and "0 errors, 1 warnings" in report
    raise_on_errors(fp)  # no errors: no exception


def test_each_planted_defect_is_reported_with_its_sample_id(hand_dataset):
    json_path, root = hand_dataset

    def mutate(data):
        training = data["training"]
        (root / training[0]["image"]).unlink()  # a: missing file
        training[1]["coordinates"][1] = [float("nan"), 3.0]  # b: non-finite coordinate
        training[2]["coordinates"][2] = [45.0, 10.0]  # c: outside the 40-column image
        training.append(dict(training[1], coordinates=[[1, 2], [3, 4]]))  # b again, 2 landmarks
        data["validation"][0]["coordinates"] = [1, 2, 3]  # c: not a list of pairs
        data["testing"][0]["image"] = "img/broken.png"
        (root / "img" / "broken.png").write_bytes(b"not an image")

    plant(json_path, mutate)
    fp = compute_fingerprint(json_path, root)
    errors = issues_of(fp, "error")
    assert ("training", "a", f"image file not found: {root / 'img/a.png'}") in errors
    assert ("training", "b", "coordinates contain NaN or infinity") in errors
    assert ("training", "b", "duplicate id") in errors
    assert ("training", "b", "has 2 landmarks, earlier samples have 3") in errors
    assert ("validation", "c", "coordinates must be a list of [x, y] pairs") in errors
    assert any(s == "t1" and "cannot decode" in m for _, s, m in errors)
    assert len(errors) == 6
    outside = [w for w in issues_of(fp, "warning") if "outside" in w[2]]
    assert outside == [
        ("training", "c", "landmark 2 at x=45, y=10 lies outside the 30x40 (HxW) image")
    ]
    assert fp.landmarks_outside == 1
    assert fp.sizes == [list(HAND_SIZE)] * 5  # 7 samples: a missing, t1 unreadable
    with pytest.raises(
        DataError, match=r"6 data error\(s\), the first: error: training sample 'a'"
    ):
        raise_on_errors(fp)
    report = format_report(fp)
    for sample in ("'a'", "'b'", "'c'", "'t1'"):
        assert sample in report


def test_landmark_selection_and_unannotated_training_sample(hand_dataset):
    json_path, root = hand_dataset
    plant(json_path, lambda d: d["training"][0].update(has_annotation=False, coordinates=None))
    fp = compute_fingerprint(json_path, root, landmarks=[2, 5])
    errors = issues_of(fp, "error")
    assert (
        "training",
        "a",
        "has no annotation; unannotated samples belong in 'testing'",
    ) in errors
    assert any(s == "b" and "index 5" in m for _, s, m in errors)


def test_unwritable_cache_only_warns(hand_dataset, tmp_path, caplog):
    json_path, root = hand_dataset
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    fingerprint = cached_fingerprint(json_path, root, not_a_folder / "cache")
    assert fingerprint.split_counts["training"] == 3
    assert "could not cache the dataset fingerprint" in caplog.text


def test_cache_reads_the_data_once_until_a_file_changes(hand_dataset, tmp_path, monkeypatch):
    json_path, root = hand_dataset
    cache = tmp_path / "cache"
    first = cached_fingerprint(json_path, root, cache)
    assert len(list(cache.glob("fingerprint_*.json"))) == 1

    def no_reading(path):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(fingerprint_module, "read_image", no_reading)
    again = cached_fingerprint(json_path, root, cache)
    assert again == first
    # Another landmark selection is another fingerprint: not from the cache.
    with pytest.raises(AssertionError, match="cache"):
        cached_fingerprint(json_path, root, cache, landmarks=[0])
    # A changed image (modification time) is read again.
    image = root / "img" / "b.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="cache"):
        cached_fingerprint(json_path, root, cache)


def test_damaged_cache_file_is_recomputed(hand_dataset, tmp_path):
    json_path, root = hand_dataset
    cache = tmp_path / "cache"
    first = cached_fingerprint(json_path, root, cache)
    (cache_file,) = cache.glob("fingerprint_*.json")
    cache_file.write_text("{ not json")
    assert cached_fingerprint(json_path, root, cache) == first


def test_missing_landmarks_are_counted_per_split_and_landmark(hand_dataset):
    json_path, root = hand_dataset

    def mutate(data):
        data["training"][0]["coordinates"][1] = None
        data["training"][1]["coordinates"][1] = [None, None]
        data["testing"][0]["coordinates"][2] = None

    plant(json_path, mutate)
    fp = compute_fingerprint(json_path, root)
    assert fp.errors == [] and fp.landmarks_outside == 0
    assert fp.missing_landmarks == {
        "training": [0, 2, 0],
        "validation": [0, 0, 0],
        "testing": [0, 0, 1],
    }
    report = format_report(fp)
    assert "missing landmarks (null), per split (landmark: samples): training 2 (1: 2)" in report
    assert "testing 1 (2: 1)" in report
    selected = format_report(compute_fingerprint(json_path, root, landmarks=[1, 2]))
    assert "training 2 (1: 2)" in selected  # JSON indices, not positions in the selection
    # the spread leaves the missing points out: landmark 1 placed by c twice (training, validation)
    # and t1
    known = np.array([HAND_COORDS[i][1] for i in ("c", "c", "t1")])
    np.testing.assert_allclose(fp.landmark_std_px[1], known.std(axis=0))
    assert np.isnan(fp.training_landmarks_rel[0][1]).all()


def test_pair_given_the_wrong_way_round_and_coinciding_landmarks_warn(hand_dataset):
    json_path, root = hand_dataset
    four = {  # landmark 0 left of 1 everywhere, 3 left of 2: the pair [2, 3] is reversed
        "a": [[5, 6], [30, 6], [30, 20], [5, 20]],
        "b": [[6, 5], [31, 5], [33, 21], [4, 21]],
        "c": [[4, 7], [29, 7], [31, 22], [6, 22]],
        "t1": [[5, 5], [28, 5], [28, 5], [3, 19]],
    }

    def mutate(data):
        data["flip_pairs"] = [[0, 1], [2, 3]]
        data["landmark_names"] = ["L top", "R top", "R bottom", "L bottom"]
        for split in ("training", "validation", "testing"):
            for sample in data[split]:
                if sample.get("coordinates"):
                    sample["coordinates"] = four[sample["id"]]
        data["training"][0]["coordinates"][2] = four["a"][1]  # a: 1 and 2 coincide too

    plant(json_path, mutate)
    fp = compute_fingerprint(json_path, root)
    assert fp.flip_pairs == [[0, 1], [2, 3]] and fp.landmark_names[0] == "L top"
    warnings = [str(w) for w in fp.warnings]
    assert any(
        "flip pair [2, 3]: landmark 2 is right of landmark 3 in 100 % of 5" in w for w in warnings
    )
    assert not any("flip pair [0, 1]" in w for w in warnings)
    assert any(
        "landmarks 1 and 2 coincide (< 0.5 px apart) in 2 of 5 samples" in w for w in warnings
    )
    with pytest.raises(DataError, match="selects landmark 0 but not 1"):
        compute_fingerprint(json_path, root, landmarks=[0, 2, 3])
