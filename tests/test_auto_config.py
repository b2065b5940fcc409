"""The rules of the "auto" values: input size, sigma, workers and the batch-size search."""

import math

import numpy as np
import pytest
import torch

from models.unet_classic import plan_unet_features
from tests.conftest import gaussian_image, weighted_centroid
from trainer.auto_rules import (
    AUTO_AUGMENTATIONS,
    MAX_AUGMENTED_OUTSIDE,
    MIN_AUTO_FEATURES,
    augmented_outside,
    auto_gauss_sigma,
    auto_init_features,
    auto_input_size,
    auto_num_workers,
    choose_augmentation,
    cpu_batch_size,
    landmark_spacing,
    search_batch_size,
    supervised_levels_for_sigma,
)
from utils.coordinates import resize_coords, resize_image
from utils.errors import ConfigError

BUDGET = 512 * 512

# (median H, W) of image-size distributions: portrait and landscape X-rays, tiny, huge, a strip.
DISTRIBUTIONS = {
    "portrait cephalogram": (1671, 1340),
    "landscape": (1340, 1671),
    "tiny": (30, 40),
    "huge": (4000, 3000),
    "wide strip": (200, 1600),
    "square": (1024, 1024),
}


@pytest.mark.parametrize("name", DISTRIBUTIONS)
@pytest.mark.parametrize("min_feature_resolution", [4, 8])
def test_auto_input_size_divisible_aspect_preserving_within_budget(name, min_feature_resolution):
    median = DISTRIBUTIONS[name]
    height, width = auto_input_size(median, BUDGET, min_feature_resolution)
    assert height * width <= BUDGET
    # Aspect within 7 % of the median image's (rounding to multiples of 2^k).
    assert abs(math.log((height / width) / (median[0] / median[1]))) < 0.07
    # Not shrunk below 75 % of the budget when the images are larger than it, and never
    # enlarged beyond the rounding when they are smaller.
    area = min(BUDGET, median[0] * median[1])
    assert 0.75 * area <= height * width <= 1.2 * area
    # The U-Net plan halves down to a coarsest map of MIN_FEATURE_RESOLUTION to 4 times it (one
    # level may be given up for the aspect), and every level divides the input exactly.
    features = plan_unet_features((height, width), min_feature_resolution, 4, 64)
    factor = 2 ** (len(features) - 1)
    assert height % factor == 0 and width % factor == 0
    assert min_feature_resolution <= min(height, width) // factor < 4 * min_feature_resolution


def test_auto_input_size_examples():
    assert auto_input_size((1671, 1340), BUDGET, 4) == (576, 448)
    assert auto_input_size((1340, 1671), BUDGET, 4) == (448, 576)
    assert auto_input_size((1671, 1340), 256 * 256, 8) == (288, 224)
    assert auto_input_size((30, 40), BUDGET, 4) == (32, 40)  # tiny: native size, rounded
    assert auto_input_size((200, 1600), BUDGET, 4) == (160, 1280)  # exact aspect, 78 % of it
    assert auto_input_size((6, 6), BUDGET, 4) == (8, 8)  # smallest the U-Net can halve
    assert auto_input_size((1671, 1340), BUDGET, multiple=8) == (568, 456)  # PHD-Net patches


def test_auto_input_size_refuses_a_budget_below_the_smallest_input():
    with pytest.raises(ConfigError, match="MAX_INPUT_PIXELS 100"):
        auto_input_size((1000, 1000), 100, 8)


@pytest.mark.parametrize("name", ["portrait cephalogram", "tiny", "wide strip"])
def test_coordinates_round_trip_exactly_through_the_auto_size(name):
    """Per-axis scaling to the auto size: input pixels -> original pixels is exact, and the
    resized image shows each point where resize_coords puts it."""
    median = DISTRIBUTIONS[name]
    original = (min(median[0], 120), min(median[1], 160))  # small stand-in of that shape
    size = auto_input_size(original, 48 * 64, 4)
    rng = np.random.default_rng(0)
    points = rng.uniform([-0.5, -0.5], [original[1] - 0.5, original[0] - 0.5], (50, 2))
    back = resize_coords(resize_coords(points, original, size), size, original)
    np.testing.assert_allclose(back, points, atol=1e-12)
    centre = np.array([original[1] * 0.37, original[0] * 0.61])
    sigma = 3.0 * max(original[0] / size[0], original[1] / size[1])
    image = gaussian_image(original, centre, sigma=sigma)
    resized = resize_image(image, size)
    np.testing.assert_allclose(
        weighted_centroid(resized), resize_coords(centre, original, size), atol=0.05
    )


def test_auto_sigma_covers_the_coarsest_supervised_level():
    # 5 levels: the coarsest draws sigma / 16, at least half a pixel.
    assert auto_gauss_sigma((576, 448), 5) == 8.0
    assert auto_gauss_sigma((256, 256), 3) == 2.0  # the finest level's floor
    assert auto_gauss_sigma((32, 40), 5) == 2.0  # capped at 1/16 of the shorter side
    assert auto_gauss_sigma((8, 8), 1) == 1.0


def test_auto_workers_follow_cpus_cache_and_device():
    assert auto_num_workers(2, cached=True, device_type="cpu") == 0
    assert auto_num_workers(16, cached=False, device_type="cpu") == 2
    assert auto_num_workers(16, cached=True, device_type="cuda") == 4
    assert auto_num_workers(16, cached=False, device_type="cuda") == 8
    assert auto_num_workers(4, cached=False, device_type="cuda") == 3
    assert auto_num_workers(1, cached=False, device_type="cuda") == 0


def test_cpu_batch_size_is_small():
    assert cpu_batch_size((256, 256), 32) == 8
    assert cpu_batch_size((576, 448), 32) == 2
    assert cpu_batch_size((32, 40), 32) == 32  # capped
    assert cpu_batch_size((32, 40), 4) == 4
    assert cpu_batch_size((2048, 2048), 32) == 2


def fake_probe(fixed: int, per_sample: int, oom_above: int, calls: list):
    """Peak memory fixed + batch * per_sample; out of memory above ``oom_above`` bytes."""

    def probe(batch):
        calls.append(batch)
        peak = fixed + batch * per_sample
        if peak > oom_above:
            raise torch.cuda.OutOfMemoryError(f"fake: {peak} bytes")
        return peak

    return probe


def test_batch_search_with_a_fake_memory_limit():
    calls = []
    # 1000 bytes, 80 % usable = 800 = 100 + 70 * 10: batch 70; the device runs out above 1000.
    size, notes = search_batch_size(fake_probe(100, 10, 1000, calls), 1000, cap=128, headroom=0.8)
    assert size == 70
    assert calls == [1, 2, 4, 8, 16, 32, 64, 128, 70]
    assert notes[-2] == "batch 128: out of memory"
    # The cap wins; peaks above the headroom (but not out of memory) are refused too.
    calls.clear()
    assert search_batch_size(fake_probe(100, 10, 10**9, calls), 1000, 16, 0.8)[0] == 16
    calls.clear()
    size, notes = search_batch_size(fake_probe(100, 10, 10**9, calls), 1000, 128, 0.8)
    assert size == 70 and "too much" in notes[7]


def test_batch_search_when_one_sample_does_not_fit():
    with pytest.raises(ConfigError, match="even a batch of 1"):
        search_batch_size(fake_probe(900, 10, 1000, []), 1000, cap=32, headroom=0.8)


def synthetic_layout(rows: int, columns: int, gap_y: float, gap_x: float | None = None, n=8):
    """(n, rows * columns, 2) fingerprint-style landmarks (unit-image coordinates, -0.5 ... 0.5:
    utils/coordinates.resize_coords to a 1 x 1 image): a grid ``gap_x`` by ``gap_y`` of the
    image apart, centred, the same in every sample."""
    gap_x = gap_y if gap_x is None else gap_x
    ys, xs = np.meshgrid(np.arange(rows) * gap_y, np.arange(columns) * gap_x, indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], axis=-1)
    return np.repeat((grid - grid.mean(axis=0))[None], n, axis=0)


def test_landmark_spacing_in_input_pixels_of_a_tall_input():
    """Points 0.05 of the image apart: 20 px apart in x and 40 in y of a 800 x 400 input."""
    column = synthetic_layout(rows=5, columns=1, gap_y=0.05)
    assert landmark_spacing(column, (800, 400)) == pytest.approx(40.0)
    row = synthetic_layout(rows=1, columns=5, gap_y=0.05)
    assert landmark_spacing(row, (800, 400)) == pytest.approx(20.0)
    missing = column.copy()
    missing[:, 1] = np.nan  # a missing landmark: its neighbours' nearest is farther
    assert landmark_spacing(missing, (800, 400)) == pytest.approx(40.0)
    assert landmark_spacing(column[:, :1], (800, 400)) == math.inf  # one landmark: no cap


def test_spacing_of_many_close_landmarks():
    """68 landmarks 6 px apart in y (a spine's corners at 400 x 144) against 19 landmarks 15 px
    apart (cephalograms at 288 x 224): what the sigma plan's reason reports."""
    many = synthetic_layout(rows=17, columns=4, gap_y=6.0 / 400, gap_x=30.0 / 144)
    assert landmark_spacing(many, (400, 144)) == pytest.approx(6.0, rel=1e-6)
    few = synthetic_layout(rows=5, columns=4, gap_y=15.0 / 288, gap_x=40.0 / 224)
    assert landmark_spacing(few, (288, 224)) == pytest.approx(15.0, rel=1e-6)
    assert auto_gauss_sigma((400, 144), 4) == auto_gauss_sigma((288, 224), 4) == 4.0


def test_supervised_levels_keep_the_coarsest_gaussian_half_a_pixel_wide():
    for sigma, most, levels in [(4.0, 5, 4), (2.0, 5, 3), (2.5, 5, 3), (1.0, 5, 2), (8.0, 3, 3)]:
        assert supervised_levels_for_sigma(sigma, most) == levels
        assert sigma / 2 ** (levels - 1) >= 0.5


def test_augmentation_rule_keeps_landmarks_of_tall_images_in_the_frame():
    """A tall column of landmarks spanning the image leaves it under ±45° rotations; a compact
    layout does not. The rule measures it on the layout and never picks a flip."""
    tall = synthetic_layout(rows=9, columns=2, gap_y=0.1, gap_x=0.3)  # 80 % of the height
    compact = synthetic_layout(rows=3, columns=3, gap_y=0.15)
    out_tall = {s: augmented_outside(s, tall, (400, 144), samples=60) for s in AUTO_AUGMENTATIONS}
    out_compact = {
        s: augmented_outside(s, compact, (288, 224), samples=60) for s in AUTO_AUGMENTATIONS
    }
    assert out_tall["AffineComplexNoFlip"] > MAX_AUGMENTED_OUTSIDE
    assert choose_augmentation(out_tall) == "AffineSimpleNoFlip"
    assert out_compact["AffineComplexNoFlip"] <= MAX_AUGMENTED_OUTSIDE
    assert choose_augmentation(out_compact) == "AffineComplexNoFlip"
    assert all("NoFlip" in scheme for scheme in AUTO_AUGMENTATIONS)
    assert choose_augmentation(dict.fromkeys(AUTO_AUGMENTATIONS, 0.5)) == AUTO_AUGMENTATIONS[-1]


def test_auto_augmentation_flips_horizontally_only_with_flip_pairs():
    """A pure function of the fingerprint's numbers: flip pairs add a horizontal flip (with
    swaps) to the strongest scheme that fits; without them no scheme flips."""
    fits = {"AffineComplexNoFlip": 0.0, "AffineSimpleNoFlip": 0.0}
    too_far = {"AffineComplexNoFlip": 0.2, "AffineSimpleNoFlip": 0.0}
    assert choose_augmentation(fits) == "AffineComplexNoFlip"
    assert choose_augmentation(fits, has_flip_pairs=True) == "AffineComplexHFlip"
    assert choose_augmentation(too_far, has_flip_pairs=True) == "AffineSimpleHFlip"
    assert choose_augmentation(too_far, has_flip_pairs=False) == "AffineSimpleNoFlip"


def test_first_level_features_grow_with_the_landmark_count():
    """One feature per two landmarks, a power of two: few landmarks keep the floor (19
    cephalometric ones: 16), 68 vertebra corners get 32, and MAX_FEATURES caps it."""
    assert [auto_init_features(k, 512) for k in (1, 19, 40, 68, 100, 150)] == [
        MIN_AUTO_FEATURES,
        16,
        16,
        32,
        64,
        64,
    ]
    assert auto_init_features(300, 128) == 128  # 150 -> 128 by the power, capped at 128
    assert auto_init_features(300, 64) == 64
    with pytest.raises(ConfigError, match="INIT_FEATURES"):
        auto_init_features(0, 512)
