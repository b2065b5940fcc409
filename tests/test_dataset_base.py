"""Tests of datasets/: JSON and fold resolution, sample checks, items, caching, subclasses."""

import json

import numpy as np
import pytest
import torch
from conftest import HAND_COORDS, HAND_SIZE, hand_samples, write_json, write_png

from datasets.dataset_aspire import DatasetAspire
from datasets.dataset_base import DatasetBase, read_dataset_json, resolve_annotation_file
from datasets.dataset_generic import DatasetGeneric
from datasets.dataset_index import DATASET_INDEX, get_dataset_class
from datasets.dataset_synthetic import DatasetSyntheticDemo
from utils.coordinates import resize_coords, resize_image
from utils.errors import ConfigError, DataError
from utils.image_io import normalise_image, read_image

INPUT_SIZE = (16, 24)  # H, W of the model input; the hand images are 30x40


def make(json_path, root, split="training", **kwargs):
    kwargs.setdefault("input_size", INPUT_SIZE)
    return DatasetGeneric(json_path, split, root, **kwargs)


# --- resolve_annotation_file ------------------------------------------------------------------


def test_fold_reads_fold_file_from_folder(tmp_path):
    write_json(tmp_path / "folds" / "fold0.json", {})
    fold2 = write_json(tmp_path / "folds" / "fold2.json", {})
    assert resolve_annotation_file(tmp_path / "folds", 2) == fold2


def test_fold_minus_one_reads_the_file(tmp_path):
    path = write_json(tmp_path / "all.json", {})
    assert resolve_annotation_file(path, -1) == path


def test_fold_with_file_raises(tmp_path):
    path = write_json(tmp_path / "all.json", {})
    with pytest.raises(DataError, match="TRAINER.FOLD -1") as info:
        resolve_annotation_file(path, 0)
    assert str(path) in str(info.value)


def test_missing_fold_file_names_it(tmp_path):
    (tmp_path / "folds").mkdir()
    with pytest.raises(DataError, match="fold3.json"):
        resolve_annotation_file(tmp_path / "folds", 3)
    with pytest.raises(DataError, match="nothing.json"):
        resolve_annotation_file(tmp_path / "nothing.json", -1)


# --- JSON checks ------------------------------------------------------------------------------


def test_malformed_json_names_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"training": [ {"id": "a", ')
    with pytest.raises(DataError, match="malformed JSON") as info:
        read_dataset_json(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="bad.json"):
        make(path, tmp_path)


def test_json_top_level_must_be_object(tmp_path):
    path = write_json(tmp_path / "list.json", [1, 2])
    with pytest.raises(DataError, match="list.json"):
        read_dataset_json(path)


def test_split_must_be_list(tmp_path):
    path = write_json(tmp_path / "d.json", {"training": {"id": "a"}})
    with pytest.raises(DataError, match="'training' must be a list"):
        read_dataset_json(path)


def test_unknown_split_refused(hand_dataset):
    json_path, root = hand_dataset
    with pytest.raises(ValueError, match="split"):
        make(json_path, root, split="train")


def edited(hand_dataset, edit):
    """Write a changed copy of the hand JSON next to it; returns its path."""
    json_path, root = hand_dataset
    data = hand_samples()
    edit(data)
    return write_json(root / "edited.json", data)


def test_wrong_number_of_coordinates_names_sample(hand_dataset):
    def edit(data):
        data["training"][1]["coordinates"] = [[1.0, 2.0], [3.0, 4.0]]

    path = edited(hand_dataset, edit)
    with pytest.raises(DataError, match="sample 'b'") as info:
        make(path, hand_dataset[1])
    assert "2 landmarks" in str(info.value)
    assert "edited.json" in str(info.value)


def test_coordinates_not_pairs_names_sample(hand_dataset):
    def edit(data):
        data["training"][2]["coordinates"] = [[1.0, 2.0, 3.0]] * 3

    with pytest.raises(DataError, match="sample 'c'"):
        make(edited(hand_dataset, edit), hand_dataset[1])


def test_non_numeric_coordinates_names_sample(hand_dataset):
    def edit(data):
        data["training"][0]["coordinates"] = [["x", 2.0]] * 3

    with pytest.raises(DataError, match="sample 'a'"):
        make(edited(hand_dataset, edit), hand_dataset[1])


def test_null_coordinates_without_has_annotation_false(hand_dataset):
    def edit(data):
        data["training"][0]["coordinates"] = None

    with pytest.raises(DataError, match="has_annotation"):
        make(edited(hand_dataset, edit), hand_dataset[1])


def test_duplicate_id(hand_dataset):
    def edit(data):
        data["training"][2]["id"] = "a"

    with pytest.raises(DataError, match="duplicate id") as info:
        make(edited(hand_dataset, edit), hand_dataset[1])
    assert "'a'" in str(info.value)


def test_sample_without_image_key(hand_dataset):
    def edit(data):
        del data["training"][1]["image"]

    with pytest.raises(DataError, match="#1"):
        make(edited(hand_dataset, edit), hand_dataset[1])


def test_landmark_index_out_of_range(hand_dataset):
    json_path, root = hand_dataset
    with pytest.raises(DataError, match="DATASET.LANDMARKS") as info:
        make(json_path, root, landmarks=[0, 3])
    assert "index 3" in str(info.value)


def test_bad_pixel_size_names_sample(hand_dataset):
    def edit(data):
        data["testing"][0]["pixel_size"] = [0.5, 0.0]

    with pytest.raises(DataError, match="sample 't1'.*pixel_size"):
        make(edited(hand_dataset, edit), hand_dataset[1], split="testing")


# --- items ------------------------------------------------------------------------------------


def test_annotated_item(hand_dataset):
    json_path, root = hand_dataset
    dataset = make(json_path, root)
    assert len(dataset) == 3
    assert dataset.num_landmarks == 3
    item = dataset[0]
    assert item["image"].shape == (1, *INPUT_SIZE)
    assert item["image"].dtype == torch.float32
    expected_coords = resize_coords(np.array(HAND_COORDS["a"]), HAND_SIZE, INPUT_SIZE)
    np.testing.assert_allclose(item["coords"].numpy(), expected_coords, rtol=1e-6)
    # spot check one value by hand: x = (20.5 + 0.5) * 24 / 40 - 0.5 = 12.1
    assert item["coords"][1, 0].item() == pytest.approx(12.1, abs=1e-5)
    # y = (10.25 + 0.5) * 16 / 30 - 0.5 = 5.2333...
    assert item["coords"][1, 1].item() == pytest.approx(10.75 * 16 / 30 - 0.5, abs=1e-5)
    assert item["visible"].tolist() == [1.0, 1.0, 1.0]
    assert item["original_size"].tolist() == list(HAND_SIZE)
    assert torch.isnan(item["pixel_size"]).all()
    assert item["index"].item() == 0


def test_item_image_is_normalised_then_resized(hand_dataset):
    json_path, root = hand_dataset
    dataset = make(json_path, root)
    raw = read_image(root / "img" / "b.png").pixels
    expected = resize_image(normalise_image(raw), INPUT_SIZE)
    np.testing.assert_allclose(dataset[1]["image"][0].numpy(), expected, atol=1e-6)


def test_unannotated_sample_gives_zeros_and_invisible(hand_dataset):
    json_path, root = hand_dataset
    dataset = make(json_path, root, split="testing")
    assert [s.has_annotation for s in dataset.samples] == [True, False]
    item = dataset[1]
    assert item["coords"].shape == (3, 2)
    assert torch.equal(item["coords"], torch.zeros(3, 2))
    assert item["visible"].tolist() == [0.0, 0.0, 0.0]
    annotated = dataset[0]
    assert annotated["visible"].tolist() == [1.0, 1.0, 1.0]


def test_only_unannotated_samples_count_landmarks_from_other_splits(hand_dataset):
    def edit(data):
        data["testing"] = data["testing"][1:]

    dataset = make(edited(hand_dataset, edit), hand_dataset[1], split="testing")
    assert dataset.num_landmarks == 3
    assert dataset[0]["coords"].shape == (3, 2)


def test_landmarks_selects_indices(hand_dataset):
    json_path, root = hand_dataset
    dataset = make(json_path, root, landmarks=[2, 0])
    assert dataset.num_landmarks == 2
    np.testing.assert_array_equal(dataset.samples[0].coords, [[35.0, 25.0], [5.0, 6.0]])
    expected = resize_coords(np.array([[35.0, 25.0], [5.0, 6.0]]), HAND_SIZE, INPUT_SIZE)
    np.testing.assert_allclose(dataset[0]["coords"].numpy(), expected, rtol=1e-6)
    assert dataset[0]["visible"].shape == (2,)
    unannotated = make(json_path, root, split="testing", landmarks=[1])[1]
    assert unannotated["coords"].shape == (1, 2)


def test_max_samples(hand_dataset):
    json_path, root = hand_dataset
    assert [s.id for s in make(json_path, root, max_samples=2).samples] == ["a", "b"]
    assert len(make(json_path, root, max_samples=0)) == 0
    assert len(make(json_path, root, max_samples=-1)) == 3
    assert len(make(json_path, root, max_samples=10)) == 3


def test_max_samples_skips_checks_of_dropped_samples(hand_dataset):
    def edit(data):
        data["training"][2]["coordinates"] = [[1.0, 2.0]]

    assert len(make(edited(hand_dataset, edit), hand_dataset[1], max_samples=2)) == 2


def test_pixel_size_sources(hand_dataset):
    json_path, root = hand_dataset
    dataset = make(json_path, root, split="testing", default_pixel_size=(0.1, 0.2))
    # the sample's own pixel_size wins over the default
    assert dataset[0]["pixel_size"].tolist() == [0.5, 0.25]
    assert dataset[1]["pixel_size"].tolist() == pytest.approx([0.1, 0.2])


def test_augmentation_called_and_outside_landmark_invisible(hand_dataset):
    json_path, root = hand_dataset
    calls = []

    def shift_right(image, coords, seed):
        calls.append((image.shape, coords.copy(), seed))
        moved = coords.copy()
        moved[0, 0] += 100.0  # landmark 0 leaves the image
        moved[1] = np.nan  # landmark 1 dropped by a transform
        return image * 2, moved

    dataset = make(json_path, root, augmentation=shift_right)
    plain = make(json_path, root)
    torch.manual_seed(0)
    item = dataset[0]
    assert len(calls) == 1
    shape, coords_in, seed = calls[0]
    assert shape == INPUT_SIZE
    np.testing.assert_allclose(coords_in, plain[0]["coords"].numpy(), rtol=1e-6)
    assert isinstance(seed, int)
    assert item["visible"].tolist() == [0.0, 0.0, 1.0]
    torch.testing.assert_close(item["image"], plain[0]["image"] * 2)


def test_augmentation_seed_follows_torch_seed(hand_dataset):
    json_path, root = hand_dataset
    seeds = []
    dataset = make(json_path, root, augmentation=lambda i, c, s: seeds.append(s) or (i, c))
    torch.manual_seed(5)
    dataset[0]
    torch.manual_seed(5)
    dataset[0]
    dataset[0]
    assert seeds[0] == seeds[1] != seeds[2]


def test_missing_image_fails_at_construction_when_caching(hand_dataset):
    json_path, root = hand_dataset
    (root / "img" / "b.png").unlink()
    with pytest.raises(DataError, match="sample 'b'") as info:
        make(json_path, root, cache_data=True)
    assert "b.png" in str(info.value)


def test_missing_image_fails_at_construction_even_without_cache(hand_dataset):
    """Found when the JSON is read, not hours later when the sample is first drawn."""
    json_path, root = hand_dataset
    (root / "img" / "b.png").unlink()
    with pytest.raises(DataError, match="sample 'b'.*not found"):
        make(json_path, root, cache_data=False)


def test_cache_and_no_cache_give_identical_items(hand_dataset):
    json_path, root = hand_dataset
    for split in ("training", "testing"):
        cached = make(json_path, root, split=split, cache_data=True)
        uncached = make(json_path, root, split=split, cache_data=False)
        assert len(cached._cache) == len(cached)
        assert len(uncached._cache) == 0
        for index in range(len(cached)):
            a, b = cached[index], uncached[index]
            assert a.keys() == b.keys()
            for key in a:
                torch.testing.assert_close(a[key], b[key], equal_nan=True)


def test_landmark_outside_image_warns(hand_dataset, caplog):
    def edit(data):
        data["training"][0]["coordinates"][0] = [40.0, 5.0]  # x = W is past the last column

    make(edited(hand_dataset, edit), hand_dataset[1])
    assert "outside" in caplog.text
    assert "'a'" in caplog.text


# --- subclasses and the index -----------------------------------------------------------------


def test_aspire_carries_attributes(hand_dataset):
    json_path, root = hand_dataset
    dataset = DatasetAspire(json_path, "training", root, INPUT_SIZE)
    assert dataset.samples[1].attributes == {"patient_id": "p2", "suid": "s2"}


@pytest.mark.parametrize("key", ["patient_id", "suid"])
def test_aspire_requires_attributes(hand_dataset, key):
    def edit(data):
        del data["training"][1][key]

    path = edited(hand_dataset, edit)
    with pytest.raises(DataError, match="sample 'b'") as info:
        DatasetAspire(path, "training", hand_dataset[1], INPUT_SIZE)
    assert key in str(info.value)
    assert len(DatasetGeneric(path, "training", hand_dataset[1], INPUT_SIZE)) == 3


def test_synthetic_dataset_reads_scanner(synthetic_dataset):
    json_path, root = synthetic_dataset
    dataset = DatasetSyntheticDemo(json_path, "testing", root, (32, 48))
    assert len(dataset) == 3
    assert dataset.num_landmarks == 4
    assert all(s.attributes["scanner"].startswith("scanner_") for s in dataset.samples)
    assert [s.has_annotation for s in dataset.samples] == [True, True, False]
    data = json.loads(json_path.read_text())
    first = data["testing"][0]
    height, width = dataset[0]["original_size"].tolist()
    assert 40 <= height <= 48 and 56 <= width <= 64
    expected = resize_coords(np.array(first["coordinates"]), (height, width), (32, 48))
    np.testing.assert_allclose(dataset[0]["coords"].numpy(), expected, rtol=1e-5)


def test_synthetic_prepare_data_keeps_existing_file(synthetic_dataset):
    json_path, root = synthetic_dataset
    before = json_path.read_text()
    DatasetSyntheticDemo.prepare_data(root, json_path)
    assert json_path.read_text() == before


def test_base_prepare_data_does_nothing(tmp_path):
    DatasetBase.prepare_data(tmp_path, tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_get_dataset_class():
    assert get_dataset_class("generic") is DatasetGeneric
    assert get_dataset_class("aspire") is DatasetAspire
    assert get_dataset_class("synthetic_demo") is DatasetSyntheticDemo
    assert all(issubclass(cls, DatasetBase) for cls in DATASET_INDEX.values())


def test_get_dataset_class_unknown_lists_names():
    with pytest.raises(ConfigError, match="'generic'") as info:
        get_dataset_class("kites")
    assert "kites" in str(info.value)


def test_16bit_images_load(tmp_path):
    root = tmp_path / "deep"
    write_png(root / "x.png", (np.arange(20 * 12).reshape(12, 20) * 200).astype(np.uint16))
    path = write_json(
        root / "d.json", {"training": [{"id": "x", "image": "x.png", "coordinates": [[3.0, 4.0]]}]}
    )
    item = make(path, root, input_size=(12, 20))[0]
    image = item["image"][0].numpy()
    assert image.mean() == pytest.approx(0.0, abs=1e-5)
    assert image.std() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(item["coords"].numpy(), [[3.0, 4.0]])


def test_scalar_pixel_size_names_sample(hand_dataset):
    def edit(data):
        data["testing"][0]["pixel_size"] = 0.5

    with pytest.raises(DataError, match="sample 't1'"):
        make(edited(hand_dataset, edit), hand_dataset[1], split="testing")


def test_negative_landmark_index_out_of_range(hand_dataset):
    json_path, root = hand_dataset
    with pytest.raises(DataError, match="DATASET.LANDMARKS"):
        make(json_path, root, landmarks=[-4])


# --- missing landmarks, names and flip pairs --------------------------------------------------


def test_null_landmarks_are_missing_nan_and_invisible(hand_dataset):
    def edit(data):
        data["training"][0]["coordinates"][1] = None
        data["training"][1]["coordinates"][2] = [None, None]

    dataset = make(edited(hand_dataset, edit), hand_dataset[1])
    assert np.isnan(dataset.samples[0].coords[1]).all()
    item = dataset[0]
    assert torch.isnan(item["coords"][1]).all() and item["visible"].tolist() == [1.0, 0.0, 1.0]
    coords, visible = dataset.landmark_coords()
    assert visible.tolist() == [[True, False, True], [True, True, False], [True, True, True]]
    assert np.isnan(coords[1, 2]).all()


@pytest.mark.parametrize("point", [[None, 2.0], [1.0], "x"])
def test_half_null_or_malformed_point_names_the_sample(hand_dataset, point):
    def edit(data):
        data["training"][1]["coordinates"][0] = point

    with pytest.raises(DataError, match="sample 'b': coordinates must be a list of"):
        make(edited(hand_dataset, edit), hand_dataset[1])


def test_all_landmarks_null_is_unannotated(hand_dataset):
    def edit(data):
        data["testing"][0]["coordinates"] = [None, None, None]
        data["training"][0]["coordinates"] = [None, [None, None], None]

    path = edited(hand_dataset, edit)
    assert not make(path, hand_dataset[1], "testing").samples[0].has_annotation
    with pytest.raises(DataError, match="sample 'a': every landmark is null"):
        make(path, hand_dataset[1])

    # a selection whose landmarks are all missing in a test sample: unannotated for that model
    def edit_one(data):
        data["testing"][0]["coordinates"][1] = None

    selected = make(edited(hand_dataset, edit_one), hand_dataset[1], "testing", landmarks=[1])
    assert not selected.samples[0].has_annotation


def test_names_and_flip_pairs_follow_the_selection(hand_dataset):
    def edit(data):
        data["landmark_names"] = ["left", "middle", "right"]
        data["flip_pairs"] = [[0, 2]]

    path = edited(hand_dataset, edit)
    dataset = make(path, hand_dataset[1])
    assert dataset.landmark_names == ["left", "middle", "right"] and dataset.flip_pairs == [(0, 2)]
    selected = make(path, hand_dataset[1], landmarks=[2, 0])
    assert selected.landmark_names == ["right", "left"] and selected.flip_pairs == [(1, 0)]
    assert make(path, hand_dataset[1], landmarks=[1]).flip_pairs == []
    with pytest.raises(DataError, match="selects landmark 0 but not 2, its flip pair"):
        make(path, hand_dataset[1], landmarks=[0, 1])

    def too_few(data):
        data["landmark_names"] = ["left", "right"]

    with pytest.raises(DataError, match="'landmark_names' has 2 names for 3 coordinates"):
        make(edited(hand_dataset, too_few), hand_dataset[1])
