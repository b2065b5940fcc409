"""Tests of datasets/patch_sampling.py and patches cut by DatasetBase."""

import numpy as np
import pytest
from conftest import write_json, write_png

from datasets.dataset_generic import DatasetGeneric
from datasets.patch_sampling import (
    PatchSampler,
    balanced_landmark_weights,
    crop_patch,
    patch_cooccurrence,
)
from utils.coordinates import coords_inside, position_channels


@pytest.mark.parametrize("image_size", [(100, 120), (40, 30), (64, 64), (33, 200)])
def test_bias_one_always_holds_a_landmark(image_size):
    rng = np.random.default_rng(0)
    sampler = PatchSampler((48, 40), bias=1.0)
    height, width = image_size
    for _ in range(500):
        coords = rng.uniform([-0.5, -0.5], [width - 0.5, height - 0.5], size=(3, 2))
        visible = rng.random(3) < 0.7
        visible[rng.integers(3)] = True
        corner = sampler.corner(coords, visible, image_size, rng)
        inside = coords_inside(coords - corner, sampler.patch_size) & visible
        assert inside.any()


def test_bias_zero_draws_corners_uniformly():
    rng = np.random.default_rng(1)
    sampler = PatchSampler((20, 60), bias=0.0)
    coords, visible = np.array([[5.0, 5.0]]), np.array([True])
    corners = np.array([sampler.corner(coords, visible, (50, 100), rng) for _ in range(8200)])
    # x in 0..40, y in 0..30, each value equally likely: 8200 / 41 = 200 per x value.
    assert corners[:, 0].min() == 0 and corners[:, 0].max() == 40
    assert corners[:, 1].min() == 0 and corners[:, 1].max() == 30
    counts = np.bincount(corners[:, 0], minlength=41)
    chi2 = ((counts - 200) ** 2 / 200).sum()
    assert chi2 < 80  # 40 degrees of freedom: P(chi2 > 80) < 1e-4 when uniform
    # The landmark at (5, 5) is in the patch only for corners x <= 5 and y <= 5.
    held = coords_inside(coords[None, 0] - corners, sampler.patch_size).mean()
    assert abs(held - 6 / 41 * 6 / 31) < 0.03


def test_bias_places_landmark_uniformly_inside_the_patch():
    rng = np.random.default_rng(2)
    sampler = PatchSampler((32, 32), bias=1.0)
    coords, visible = np.array([[500.0, 400.0]]), np.array([True])
    positions = np.array(
        [coords[0] - sampler.corner(coords, visible, (1000, 1000), rng) for _ in range(3200)]
    )
    assert positions.min() == 0 and positions.max() == 31
    assert abs(positions.mean() - 15.5) < 0.5  # not always centred


def test_bias_without_visible_landmarks_draws_uniformly():
    rng = np.random.default_rng(3)
    sampler = PatchSampler((10, 10), bias=1.0)
    corner = sampler.corner(np.zeros((2, 2)), np.array([False, False]), (50, 50), rng)
    assert corner.min() >= 0 and corner.max() <= 40


def test_crop_pads_outside_the_image():
    image = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    patch = crop_patch(image, (-1, -2), (5, 6))
    assert patch.shape == (5, 6)
    np.testing.assert_array_equal(patch[2:5, 1:5], image)
    assert patch[:2].sum() == 0 and patch[:, 0].sum() == 0 and patch[:, 5].sum() == 0


def test_dataset_patch_shows_the_landmark(tmp_path):
    """A bright dot at each landmark of a 60x80 image must be at coords - corner in the patch."""
    image = np.zeros((60, 80), dtype=np.uint8)
    coords = [[12.0, 7.0], [70.0, 50.0]]
    for x, y in coords:
        image[int(y), int(x)] = 255
    write_png(tmp_path / "img.png", image)
    sample = {"id": "dot", "image": "img.png", "coordinates": coords}
    path = write_json(tmp_path / "d.json", {"training": [sample]})
    dataset = DatasetGeneric(path, "training", tmp_path, input_size=None)
    patches = dataset.with_patches(PatchSampler((16, 24), bias=1.0))
    for seed in range(20):
        item = patches[(0, seed)]
        assert item["image"].shape == (1, 16, 24)
        corner = item["patch_corner"].numpy()
        assert item["visible"].sum() >= 1
        for k in np.flatnonzero(item["visible"].numpy()):
            x, y = (item["coords"][k].numpy() - corner).astype(int)
            assert item["image"][0, y, x] == item["image"].max()
    np.testing.assert_array_equal(dataset[0]["coords"].numpy(), coords)  # full size: no resize
    assert dataset[0]["image"].shape == (1, 60, 80)


def test_validation_patches_repeat(hand_dataset):
    path, root = hand_dataset
    dataset = DatasetGeneric(path, "validation", root, input_size=(16, 24))
    patches = dataset.with_patches(PatchSampler((8, 8), bias=0.5))
    assert patches._cache is dataset._cache  # the images are cached once
    first = [patches[i]["patch_corner"] for i in range(len(patches))]
    again = [patches[i]["patch_corner"] for i in range(len(patches))]
    assert all((a == b).all() for a, b in zip(first, again, strict=True))


def test_position_channels_follow_the_pixel_centre_convention():
    whole = position_channels((7, 9), (0, 0), (7, 9))
    assert whole.shape == (2, 7, 9) and whole.dtype == np.float32
    # Pixel centres x = 0 .. W - 1 span [-1 + 1/W, 1 - 1/W]: the image's edges are -1 and 1.
    np.testing.assert_allclose(whole[0, 3], (2 * np.arange(9) + 1) / 9 - 1, atol=1e-6)
    np.testing.assert_allclose(whole[1, :, 4], (2 * np.arange(7) + 1) / 7 - 1, atol=1e-6)


@pytest.mark.parametrize("corner", [(0, 0), (-2, 5), (6, -3), (3, 2)])
def test_position_channels_of_a_patch_are_a_crop_of_the_whole_images(corner):
    """The invariant that makes stitched windows see what training patches saw: a patch's
    channels are the whole image's, cropped and zero-padded like the image channel."""
    whole = position_channels((7, 9), (0, 0), (7, 9))
    patch = position_channels((4, 5), corner, (7, 9))
    expected = np.stack([crop_patch(channel, corner, (4, 5)) for channel in whole])
    np.testing.assert_array_equal(patch, expected)


def test_dataset_adds_position_channels(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (30, 40), dtype=np.uint8)
    write_png(tmp_path / "img.png", image)
    sample = {"id": "a", "image": "img.png", "coordinates": [[12.0, 7.0]]}
    path = write_json(tmp_path / "d.json", {"training": [sample]})
    dataset = DatasetGeneric(path, "training", tmp_path, input_size=None, with_position=True)
    whole = dataset[0]["image"].numpy()
    assert whole.shape == (3, 30, 40)
    np.testing.assert_array_equal(whole[1:], position_channels((30, 40), (0, 0), (30, 40)))
    patches = dataset.with_patches(PatchSampler((16, 24), bias=0.5))
    for seed in range(10):
        item = patches[(0, seed)]
        corner = item["patch_corner"].numpy().astype(int)
        expected = np.stack([crop_patch(channel, corner, (16, 24)) for channel in whole])
        np.testing.assert_array_equal(item["image"].numpy(), expected)


def test_cooccurrence_is_the_overlap_of_uniform_placements():
    coords = np.array([[[100.0, 100.0], [110.0, 130.0], [400.0, 400.0]]])
    visible = np.ones((1, 3), dtype=bool)
    matrix = patch_cooccurrence(coords, visible, (60, 40))  # h 60, w 40
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert matrix[0, 1] == pytest.approx((1 - 10 / 40) * (1 - 30 / 60))
    assert matrix[1, 0] == matrix[0, 1] and matrix[0, 2] == 0.0
    # Empirically: patches placed around landmark 0 hold landmark 1 that often.
    rng = np.random.default_rng(4)
    sampler = PatchSampler((60, 40), bias=1.0, landmark_weights=(1.0, 0.0, 0.0))
    corners = np.array(
        [sampler.corner(coords[0], visible[0], (1000, 1000), rng) for _ in range(4000)]
    )
    held = coords_inside(coords[0, 1] - corners, (60, 40)).mean()
    assert abs(held - matrix[0, 1]) < 0.03
    # A landmark not visible in an image does not count there.
    hidden = np.array([[True, False, True], [True, True, True]])
    matrix = patch_cooccurrence(np.concatenate([coords, coords]), hidden, (60, 40))
    assert matrix[0, 1] == pytest.approx((1 - 10 / 40) * (1 - 30 / 60))


def test_balanced_weights_give_every_landmark_equal_coverage():
    """Two landmarks close together and one alone: a uniform choice puts the pair in more
    patches; the balanced choice picks the lone one more often until coverage is equal."""
    coords = np.array([[[100.0, 100.0], [105.0, 100.0], [500.0, 500.0]]])
    matrix = patch_cooccurrence(coords, np.ones((1, 3), dtype=bool), (50, 50))
    uniform = matrix.T @ np.full(3, 1 / 3)
    assert uniform[0] > 1.5 * uniform[2]
    weights = balanced_landmark_weights(matrix)
    assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    coverage = matrix.T @ weights
    np.testing.assert_allclose(coverage, coverage.mean(), rtol=1e-3)
    assert weights[2] > weights[0] + weights[1] - 0.05  # about half of all patches


def test_sampler_chooses_landmarks_by_weight():
    rng = np.random.default_rng(5)
    coords = np.array([[50.0, 50.0], [500.0, 50.0], [50.0, 500.0]])  # never in one 20-px patch
    sampler = PatchSampler((20, 20), bias=1.0, landmark_weights=(0.6, 0.3, 0.1))
    visible = np.ones(3, dtype=bool)
    counts = np.zeros(3)
    for _ in range(3000):
        corner = sampler.corner(coords, visible, (600, 600), rng)
        counts += coords_inside(coords - corner, (20, 20))
    np.testing.assert_allclose(counts / counts.sum(), [0.6, 0.3, 0.1], atol=0.03)
    # Only visible landmarks are candidates; their weights are renormalised.
    counts = np.zeros(3)
    for _ in range(1000):
        corner = sampler.corner(coords, np.array([False, True, True]), (600, 600), rng)
        counts += coords_inside(coords - corner, (20, 20))
    np.testing.assert_allclose(counts / counts.sum(), [0.0, 0.75, 0.25], atol=0.04)


def test_cooccurrence_ignores_missing_landmarks():
    from datasets.patch_sampling import patch_cooccurrence

    coords = np.array([[[10.0, 10.0], [np.nan, np.nan], [14.0, 10.0]]])
    visible = np.array([[True, False, True]])
    matrix = patch_cooccurrence(coords, visible, (8, 8))
    assert np.isfinite(matrix).all()
    assert matrix[0, 1] == 0 and matrix[0, 2] == pytest.approx(0.5)
