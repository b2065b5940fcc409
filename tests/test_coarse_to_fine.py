"""Tests of inference/coarse_to_fine.py: windows around candidates decide which peak is found."""

import numpy as np
import torch
from test_stitching import BlurNet

from inference.coarse_to_fine import candidate_window_corners, refine_around_candidates
from transforms.decoding import heatmap_to_coords
from transforms.stitching import patchify_and_stitch


def test_window_corners_centre_and_clamp():
    candidates = np.array([[50.0, 40.0], [2.0, 3.0], [199.0, 99.0]])
    corners = candidate_window_corners(candidates, (100, 200), (32, 32), multiple=1)
    np.testing.assert_array_equal(corners[0], [24, 34])  # pixel 40 is in row 16 of the window
    np.testing.assert_array_equal(corners[1], [0, 0])
    np.testing.assert_array_equal(corners[2], [68, 168])
    assert (candidate_window_corners(candidates, (104, 200), (32, 32), 8) % 8 == 0).all()


class TwoLandmarkBlur(BlurNet):
    """Both output channels see every bright dot: locally the two landmarks look alike."""

    def forward(self, x):
        blurred = super().forward(x)[0]
        return [torch.cat([blurred, blurred], dim=1)]


def test_candidates_pick_the_right_one_of_two_alike_peaks():
    image = torch.zeros(1, 1, 120, 200)
    image[0, 0, 30, 40] = 1.0  # landmark 0
    image[0, 0, 90, 170] = 1.2  # landmark 1, a little brighter: stitching finds it twice
    net = TwoLandmarkBlur()
    with torch.no_grad():
        stitched = patchify_and_stitch(net, image, (48, 48), (24, 24), batch_size=4)
        refined = refine_around_candidates(
            net, image, np.array([[45.0, 35.0], [160.0, 80.0]]), (48, 48), batch_size=1
        )
    assert refined[0].shape == (1, 2, 120, 200)
    decode = [
        heatmap_to_coords(out[0][0], (120, 200), "scale_heatmap_first", "dark", 1.5).coords
        for out in (stitched, refined)
    ]
    torch.testing.assert_close(decode[0][0], torch.tensor([170.0, 90.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(decode[1][0], torch.tensor([40.0, 30.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(decode[1][1], torch.tensor([170.0, 90.0]), atol=0.05, rtol=0)
