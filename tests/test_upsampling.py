"""Bicubic upsampling in windows: the same weights as F.interpolate, and the same decoded
coordinates as upsampling whole heatmaps, also where the upsampled maximum is near another
low-resolution maximum than the low-resolution argmax."""

import pytest
import torch

from transforms import upsampling
from transforms.decoding import DECODERS, decode_heatmaps, decode_upsampled
from transforms.generate_labels import gaussian_heatmaps
from transforms.upsampling import (
    bicubic_matrix,
    candidate_regions,
    upsample_region,
    upsample_regions,
)
from utils.coordinates import resize_heatmaps

SIZE, UP = (30, 44), (97, 131)  # non-square, non-integer factors


def peaks(centres, amplitudes, sigma=1.0, size=SIZE) -> torch.Tensor:
    """(1, h, w): a sum of Gaussians at sub-pixel x,y ``centres``."""
    centres = torch.tensor(centres, dtype=torch.float32)[None]
    maps = gaussian_heatmaps(centres, sigma, size, torch.tensor(amplitudes))
    return maps.sum(dim=1)


def test_region_equals_the_same_pixels_of_f_interpolate():
    torch.manual_seed(0)
    heatmap = torch.rand(*SIZE)
    full = resize_heatmaps(heatmap[None, None], UP)[0, 0]
    for region in ((0, 97, 0, 131), (10, 23, 50, 71), (90, 97, 0, 3)):
        y0, y1, x0, x1 = region
        torch.testing.assert_close(
            upsample_region(heatmap, UP, region), full[y0:y1, x0:x1], atol=1e-5, rtol=1e-5
        )
    rows = bicubic_matrix(SIZE[1], UP[1]).sum(dim=1)
    assert rows.allclose(torch.ones(UP[1], dtype=torch.float64))  # weights sum to 1


def test_batched_windows_hold_their_regions_and_equal_f_interpolate():
    torch.manual_seed(2)
    maps = torch.rand(3, *SIZE)
    full = resize_heatmaps(maps[None], UP)[0]
    regions = [(0, 97, 0, 131), (10, 20, 120, 131), (90, 97, 3, 9)]  # whole, edges, corner
    windows, corners = upsample_regions(maps, UP, regions)
    assert windows.shape == (3, 97, 131)  # the largest region's size
    for n, (y0, y1, x0, x1) in enumerate(regions):
        cx, cy = int(corners[n, 0]), int(corners[n, 1])
        assert cx <= x0 and x1 <= cx + 131 and cy <= y0 and y1 <= cy + 97
        expected = full[n, cy : cy + 97, cx : cx + 131]
        torch.testing.assert_close(windows[n], expected, atol=1e-5, rtol=1e-5)
    small, corners = upsample_regions(maps[1:], UP, regions[1:])
    assert small.shape == (2, 10, 11) and corners[0].tolist() == [120, 10]
    assert corners[1].tolist() == [3, 87]  # widened upwards, inside the map
    torch.testing.assert_close(small[1], full[2, 87:97, 3:14], atol=1e-5, rtol=1e-5)


def test_a_peak_between_pixels_that_wins_only_after_upsampling():
    # Low resolution: A (on a pixel centre, 1.0) beats B (1.1 but between pixels: ~0.86 there).
    heatmap = peaks([[12.0, 10.0], [17.5, 13.5]], [1.0, 1.1])
    flat = int(heatmap[0].argmax())
    assert (flat % SIZE[1], flat // SIZE[1]) == (12, 10)
    full = resize_heatmaps(heatmap[None], UP)
    winner, _ = decode_heatmaps(full, "argmax")
    assert winner[0, 0, 0] > 50  # B's side: x ~ (17.5 + 0.5) * 131 / 44 - 0.5
    (region,) = candidate_regions(heatmap, UP, margin=3)
    assert region is not None  # a window, not the fallback
    y0, y1, x0, x1 = region
    assert x0 <= winner[0, 0, 0] < x1 and y0 <= winner[0, 0, 1] < y1
    assert (y1 - y0) * (x1 - x0) < 0.25 * UP[0] * UP[1]


@pytest.mark.parametrize("fraction", [upsampling.MAX_REGION_FRACTION, 1.0])  # 1: always windows
@pytest.mark.parametrize("method", DECODERS)
def test_windowed_decoding_equals_whole_upsampling(method, fraction, monkeypatch):
    monkeypatch.setattr(upsampling, "MAX_REGION_FRACTION", fraction)
    torch.manual_seed(1)
    maps = torch.cat(
        [
            peaks([[12.0, 10.0], [17.5, 13.5]], [1.0, 1.1]),  # the winner moves
            peaks([[3.0, 25.0], [40.0, 4.0]], [1.0, 1.0 - 1e-6]),  # far apart: whole map
            peaks([[0.2, 0.4]], [2.0]),  # at the corner: decoders' border rules
            peaks([[43.0, 15.3]], [1.0], sigma=2.0),  # at the right edge
            peaks([[20.3, 14.7]], [100.0], sigma=1.5) + 0.5 * torch.rand(1, *SIZE),  # noisy
        ]
    )
    sigma = 1.5 * max(UP[0] / SIZE[0], UP[1] / SIZE[1])
    expected, _ = decode_heatmaps(resize_heatmaps(maps[None], UP), method, sigma)
    got = decode_upsampled(maps, UP, method, sigma)
    torch.testing.assert_close(got, expected[0], atol=1e-3, rtol=0)


def test_an_image_smaller_than_the_input_is_resized_whole():
    maps = peaks([[12.0, 10.0]], [1.0])
    assert candidate_regions(maps, (20, 60), margin=2) == [None]
    expected, _ = decode_heatmaps(resize_heatmaps(maps[None], (20, 60)), "dark", 1.0)
    torch.testing.assert_close(decode_upsampled(maps, (20, 60), "dark", 1.0), expected[0])


def test_large_candidate_regions_fall_back_to_the_whole_map(monkeypatch):
    maps = peaks([[3.0, 25.0], [40.0, 4.0]], [1.0, 1.0 - 1e-6])
    assert candidate_regions(maps, UP, margin=2) == [None]
    monkeypatch.setattr(upsampling, "MAX_REGION_FRACTION", 1.0)
    (region,) = candidate_regions(maps, UP, margin=2)
    assert region[1] - region[0] > 0.6 * UP[0]  # both peaks are candidates
