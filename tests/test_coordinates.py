"""Tests of utils/coordinates.py: the centre-aligned resize mapping, flips and borders."""

import numpy as np
import pytest
import torch
from conftest import gaussian_image, weighted_centroid

from utils.coordinates import (
    coords_inside,
    flip_coords_vertical,
    resize_coords,
    resize_heatmaps,
    resize_image,
    scale_factors,
)


def test_scale_factors_are_x_then_y():
    # from (H, W) = (60, 90) to (40, 50): x scales by 50/90, y by 40/60
    assert scale_factors((60, 90), (40, 50)) == pytest.approx((50 / 90, 40 / 60))


def test_resize_coords_hand_example():
    # x' = (x + 0.5) * w / W - 0.5: (10 + 0.5) * 50 / 100 - 0.5 = 4.75
    # y' = (y + 0.5) * h / H - 0.5: (3 + 0.5) * 40 / 20 - 0.5 = 6.5
    out = resize_coords(np.array([10.0, 3.0]), (20, 100), (40, 50))
    np.testing.assert_allclose(out, [4.75, 6.5])


def test_resize_coords_pixel_edges_map_to_edges():
    # the image border -0.5 and W - 0.5 stays the border at any size
    out = resize_coords(np.array([[-0.5, -0.5], [89.5, 59.5]]), (60, 90), (40, 50))
    np.testing.assert_allclose(out, [[-0.5, -0.5], [49.5, 39.5]])


def test_resize_coords_round_trip_numpy():
    rng = np.random.default_rng(0)
    coords = rng.uniform(-0.5, 60, (5, 3, 2))
    there = resize_coords(coords, (61, 77), (32, 48))
    back = resize_coords(there, (32, 48), (61, 77))
    np.testing.assert_allclose(back, coords, atol=1e-10)
    assert not np.allclose(there, coords)


def test_resize_coords_round_trip_torch_keeps_dtype():
    coords = torch.tensor([[[3.25, 17.5], [40.0, 0.0]]], dtype=torch.float64)
    there = resize_coords(coords, (50, 70), (24, 40))
    assert isinstance(there, torch.Tensor)
    assert there.dtype == torch.float64
    back = resize_coords(there, (24, 40), (50, 70))
    torch.testing.assert_close(back, coords)
    expected = resize_coords(coords.numpy(), (50, 70), (24, 40))
    np.testing.assert_allclose(there.numpy(), expected)


def test_resize_coords_accepts_lists():
    out = resize_coords([[0.0, 0.0]], (10, 20), (20, 40))
    np.testing.assert_allclose(out, [[0.5, 0.5]])


@pytest.mark.parametrize(
    ("centre", "from_size", "to_size"),
    [
        ((37.3, 21.6), (60, 90), (40, 50)),
        ((12.8, 40.2), (60, 90), (40, 50)),
        ((20.4, 15.7), (40, 50), (60, 90)),
        ((37.3, 21.6), (60, 90), (30, 120)),  # shrink rows, enlarge columns
        ((37.3, 21.6), (60, 90), (120, 45)),  # enlarge rows, shrink columns
    ],
)
def test_resize_image_centroid_follows_resize_coords(centre, from_size, to_size):
    # a corner-aligned mapping x' = x * w / W would be off by up to 0.22 px here
    image = gaussian_image(from_size, centre, sigma=2.0)
    resized = resize_image(image, to_size)
    assert resized.shape == to_size
    expected = resize_coords(np.array(centre), from_size, to_size)
    np.testing.assert_allclose(weighted_centroid(resized), expected, atol=0.1)


def test_resize_image_same_size_is_identity():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert resize_image(image, (3, 4)) is image


def test_resize_image_block_centroid():
    # a 4x4 bright block centred at (x, y) = (21.5, 11.5) in a 24x32 image, halved to 12x16
    image = np.zeros((24, 32), np.float32)
    image[10:14, 20:24] = 1.0
    resized = resize_image(image, (12, 16))
    expected = resize_coords(np.array([21.5, 11.5]), (24, 32), (12, 16))  # (10.5, 5.5)
    np.testing.assert_allclose(expected, [10.5, 5.5])
    np.testing.assert_allclose(weighted_centroid(resized), expected, atol=1e-6)


def test_resize_heatmaps_centroid_follows_resize_coords():
    centre = (9.3, 6.6)
    heatmap = torch.from_numpy(gaussian_image((20, 30), centre, sigma=2.5))[None, None]
    big = resize_heatmaps(heatmap, (40, 45))
    assert big.shape == (1, 1, 40, 45)
    expected = resize_coords(np.array(centre), (20, 30), (40, 45))
    np.testing.assert_allclose(weighted_centroid(big[0, 0].numpy()), expected, atol=0.15)


def test_flip_coords_vertical_numpy_and_torch():
    coords = np.array([[3.0, 0.0], [5.5, 9.25]])
    flipped = flip_coords_vertical(coords, height=10)
    np.testing.assert_allclose(flipped, [[3.0, 9.0], [5.5, -0.25]])
    np.testing.assert_allclose(coords, [[3.0, 0.0], [5.5, 9.25]])  # input untouched
    tensor = torch.tensor(coords)
    torch.testing.assert_close(flip_coords_vertical(tensor, 10), torch.tensor(flipped))
    np.testing.assert_allclose(flip_coords_vertical(flipped, 10), coords)


def test_flip_coords_matches_flipped_image():
    image = gaussian_image((21, 30), (12.0, 8.3), sigma=1.5)
    flipped_centre = weighted_centroid(image[::-1])
    np.testing.assert_allclose(
        flipped_centre, flip_coords_vertical(np.array([12.0, 8.3]), 21), atol=1e-3
    )


def test_coords_inside_borders_inclusive():
    size = (30, 40)  # H, W
    coords = np.array(
        [
            [-0.5, -0.5],  # top-left corner of the image: inside
            [39.5, 29.5],  # bottom-right corner: inside
            [-0.51, 10.0],  # just left
            [39.51, 10.0],  # just right
            [10.0, -0.51],  # just above
            [10.0, 29.51],  # just below
            [35.0, 25.0],
        ]
    )
    expected = [True, True, False, False, False, False, True]
    np.testing.assert_array_equal(coords_inside(coords, size), expected)
    torch_result = coords_inside(torch.tensor(coords), size)
    assert torch_result.tolist() == expected


def test_coords_inside_uses_height_for_y():
    # x = 35 is inside a 30-row, 40-column image, y = 35 is not
    assert coords_inside(np.array([35.0, 5.0]), (30, 40))
    assert not coords_inside(np.array([5.0, 35.0]), (30, 40))


def test_coords_inside_nan_is_outside():
    assert not coords_inside(np.array([np.nan, 3.0]), (30, 40))


def test_resize_coords_integer_tensor_matches_numpy():
    out = resize_coords(torch.tensor([[10, 20]]), (30, 40), (20, 60))
    # x = 10.5 * 60 / 40 - 0.5 = 15.25, y = 20.5 * 20 / 30 - 0.5 = 13.1667
    np.testing.assert_allclose(out.numpy(), [[15.25, 20.5 * 20 / 30 - 0.5]], rtol=1e-6)
