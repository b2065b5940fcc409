"""Tests of transforms/decoding.py: heatmap maxima to coordinates in the right image's pixels."""

import numpy as np
import pytest
import torch
from conftest import gaussian_image

from transforms.decoding import (
    heatmap_argmax,
    heatmap_to_coords,
)
from utils.coordinates import resize_coords

INPUT = (32, 48)  # H, W of the model input (heatmap)
ORIGINAL = (64, 96)  # H, W of the image file


def heatmap_of(centres, size=INPUT, sigma=2.0, amplitude=1.0):
    """(K, H, W) heatmap with one Gaussian per x,y centre."""
    return torch.stack(
        [torch.from_numpy(gaussian_image(size, c, sigma, amplitude)) for c in centres]
    )


def test_argmax_hand_built():
    heatmaps = torch.zeros(2, 2, 3, 5)
    heatmaps[0, 0, 1, 4] = 3.0  # row 1, column 4 -> (x, y) = (4, 1)
    heatmaps[0, 1, 2, 0] = 1.0
    heatmaps[1, 0, 0, 2] = -1.0  # maximum 0 elsewhere: first pixel
    heatmaps[1, 0] -= 5.0
    heatmaps[1, 0, 0, 2] = 7.0
    heatmaps[1, 1, 2, 3] = 0.5
    coords, values = heatmap_argmax(heatmaps)
    assert coords.shape == (2, 2, 2)
    assert coords.dtype == heatmaps.dtype
    assert coords.tolist() == [[[4.0, 1.0], [0.0, 2.0]], [[2.0, 0.0], [3.0, 2.0]]]
    assert values.tolist() == [[3.0, 1.0], [7.0, 0.5]]


def test_argmax_flat_heatmap_first_pixel_no_nan():
    coords, values = heatmap_argmax(torch.zeros(1, 2, 4, 6))
    assert torch.isfinite(coords).all()
    assert coords.tolist() == [[[0.0, 0.0], [0.0, 0.0]]]
    assert values.tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("centre", [(10.3, 20.4), (33.6, 7.5), (0.2, 30.7)])
def test_sub_pixel_gaussian_within_half_pixel(centre):
    coords = heatmap_to_coords(heatmap_of([centre]), INPUT, "use_input_size").coords
    assert np.linalg.norm(coords[0].numpy() - np.array(centre)) <= 0.5 * np.sqrt(2) + 1e-6
    assert np.abs(coords[0].numpy() - np.array(centre)).max() <= 0.5 + 1e-6


def test_scale_heatmap_first_maps_to_original_pixel():
    centres = [(10.0, 20.0), (40.3, 5.6)]
    coords = heatmap_to_coords(heatmap_of(centres), ORIGINAL, "scale_heatmap_first").coords
    assert coords.shape == (2, 2)
    expected = resize_coords(np.array(centres), INPUT, ORIGINAL)  # (20.5, 40.5), (81.1, 11.7)
    np.testing.assert_allclose(expected[0], [20.5, 40.5])
    assert np.abs(coords.numpy() - expected).max() <= 1.0
    # whole original pixels
    np.testing.assert_array_equal(coords.numpy(), np.round(coords.numpy()))


def test_scale_heatmap_first_non_integer_ratio():
    centre = (17.2, 9.8)
    original = (50, 70)
    coords = heatmap_to_coords(heatmap_of([centre]), original, "scale_heatmap_first").coords
    expected = resize_coords(np.array(centre), INPUT, original)  # (25.31, 15.59)
    # bicubic upsampling leaves rows 15 and 16 within 0.1 % of each other here, so the argmax
    # may pick either: within one original pixel, not necessarily the nearest one
    assert np.abs(coords[0].numpy() - expected).max() <= 1.0


def test_scale_pred_coords_equals_resize_of_argmax():
    centres = [(10.3, 20.4), (45.0, 1.0)]
    heatmap = heatmap_of(centres)
    coords = heatmap_to_coords(heatmap, ORIGINAL, "scale_pred_coords").coords
    argmax, _ = heatmap_argmax(heatmap[None])
    assert argmax[0].tolist() == [[10.0, 20.0], [45.0, 1.0]]
    expected = resize_coords(argmax[0], INPUT, ORIGINAL)
    assert torch.equal(coords, expected)
    # (10 + 0.5) * 96 / 48 - 0.5 = 20.5; (20 + 0.5) * 64 / 32 - 0.5 = 40.5
    assert coords[0].tolist() == [20.5, 40.5]


def test_use_input_size_returns_input_coords():
    heatmap = heatmap_of([(10.0, 20.0), (5.0, 3.0)])
    decoded = heatmap_to_coords(heatmap, ORIGINAL, "use_input_size")
    coords, peak = decoded.coords, decoded.max_activation
    assert coords.tolist() == [[10.0, 20.0], [5.0, 3.0]]
    assert peak.tolist() == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("mode", ["scale_heatmap_first", "scale_pred_coords", "use_input_size"])
def test_smha_is_max_of_input_heatmap(mode):
    heatmap = heatmap_of([(10.3, 20.4), (30.0, 10.0)], amplitude=1.0)
    heatmap[1] *= 55.0
    peak = heatmap_to_coords(heatmap, ORIGINAL, mode).max_activation
    expected = heatmap.reshape(2, -1).max(dim=-1).values
    torch.testing.assert_close(peak, expected)
    assert peak[1].item() == pytest.approx(55.0)


@pytest.mark.parametrize("mode", ["scale_heatmap_first", "scale_pred_coords", "use_input_size"])
def test_flat_heatmap_no_nan(mode):
    decoded = heatmap_to_coords(torch.zeros(3, *INPUT), ORIGINAL, mode)
    coords, peak = decoded.coords, decoded.max_activation
    assert coords.shape == (3, 2)
    assert torch.isfinite(coords).all()
    assert torch.isfinite(peak).all()


def test_half_precision_heatmap_decodes():
    heatmap = heatmap_of([(12.0, 7.0)]).half()
    decoded = heatmap_to_coords(heatmap, ORIGINAL, "scale_pred_coords")
    coords, peak = decoded.coords, decoded.max_activation
    assert coords.dtype == torch.float32
    assert coords[0].tolist() == [24.5, 14.5]
    assert peak.dtype == torch.float32


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="evaluation_mode"):
        heatmap_to_coords(heatmap_of([(1.0, 1.0)]), ORIGINAL, "nearest")
