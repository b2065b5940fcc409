"""Tests of transforms/stitching.py: window placement, stitched vs whole-image outputs, memory."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from transforms.decoding import heatmap_to_coords
from transforms.stitching import (
    fully_convolutional,
    gaussian_importance,
    patchify_and_stitch,
    window_starts,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("length", "window", "stride"),
    [(100, 32, 16), (97, 32, 16), (33, 32, 7), (32, 32, 16), (1001, 64, 48)],
)
def test_windows_cover_every_pixel(length, window, stride):
    starts = window_starts(length, window, stride)
    covered = torch.zeros(length, dtype=torch.int64)
    for start in starts:
        covered[start : start + window] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and starts[-1] == length - window
    assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def test_gaussian_importance_peaks_in_the_centre():
    weights = gaussian_importance((9, 16))
    assert weights.shape == (9, 16)
    assert weights[4, 7:9].min() == weights.max()
    assert weights.min() >= 1e-3 and weights[0, 0] <= weights[4, 0] < weights[4, 7]


class PointwiseNet(nn.Module):
    """Per-pixel model: exactly translation-equivariant, so stitching must be exact."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)

    def forward(self, x):
        return [torch.tanh(self.conv(x))]


class LocalNet(nn.Module):
    """3x3 convolutions with a stride-2 branch: equivariant away from window borders; returns a
    full-resolution map and a half-resolution map (two output strides)."""

    def __init__(self) -> None:
        super().__init__()
        self.fine = nn.Conv2d(1, 2, 3, padding=1)
        self.coarse = nn.Conv2d(1, 2, 3, stride=2, padding=1)

    def forward(self, x):
        return {"fine": self.fine(x), "coarse": self.coarse(x)}


def test_stitching_equals_whole_image_for_a_pointwise_model():
    torch.manual_seed(0)
    net = PointwiseNet()
    image = torch.randn(1, 1, 75, 101)  # not divisible by the stride
    with torch.no_grad():
        whole = net(image)
        stitched = patchify_and_stitch(net, image, (32, 32), (16, 16), batch_size=5)
    assert stitched[0].shape == whole[0].shape
    torch.testing.assert_close(stitched[0], whole[0], atol=1e-5, rtol=1e-5)


def test_stitching_equals_whole_image_away_from_window_borders():
    torch.manual_seed(1)
    net = LocalNet()
    image = torch.randn(1, 1, 90, 130)
    with torch.no_grad():
        whole = fully_convolutional(net, image, multiple=2)
        stitched = patchify_and_stitch(net, image, (32, 48), (16, 24), batch_size=3, multiple=2)
    assert stitched["fine"].shape == (1, 2, 90, 130)
    assert stitched["coarse"].shape == (1, 2, 45, 65)
    # Window borders hold zero-padding artefacts with little weight; the image border is real.
    error = (stitched["fine"] - whole["fine"]).abs()
    assert error[..., 1:-1, 1:-1].mean() < 0.02
    assert error.median() < 1e-5  # most pixels are far from every window border
    assert (stitched["coarse"] - whole["coarse"]).abs().median() < 1e-5


def test_stride_must_fit_the_output_grid():
    with pytest.raises(ValueError, match="output stride 2"):
        patchify_and_stitch(LocalNet(), torch.zeros(1, 1, 64, 64), (32, 32), (15, 16), 4, 2)


def test_fully_convolutional_crops_the_padding():
    outputs = fully_convolutional(LocalNet(), torch.zeros(2, 1, 33, 47), multiple=8)
    assert outputs["fine"].shape == (2, 2, 33, 47)
    assert outputs["coarse"].shape == (2, 2, 17, 24)


class BlurNet(nn.Module):
    """A fixed Gaussian blur: a bright dot becomes a heatmap peak at the dot."""

    def __init__(self) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
        kernel = torch.exp(-((xs - 4) ** 2 + (ys - 4) ** 2) / (2 * 1.5**2))
        self.register_buffer("kernel", kernel[None, None])

    def forward(self, x):
        return [nn.functional.conv2d(x, self.kernel, padding=4)]


@pytest.mark.parametrize(("x", "y"), [(200, 37), (15, 140), (31, 32), (249, 159)])
def test_stitched_heatmap_decodes_to_the_original_pixel(x, y):
    image = torch.zeros(1, 1, 160, 250)
    image[0, 0, y, x] = 1.0
    with torch.no_grad():
        stitched = patchify_and_stitch(BlurNet(), image, (64, 64), (32, 32), batch_size=4)
    decoded = heatmap_to_coords(stitched[0][0], (160, 250), "scale_heatmap_first", "dark", 1.5)
    torch.testing.assert_close(
        decoded.coords[0], torch.tensor([float(x), float(y)]), atol=0.05, rtol=0
    )


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from torch import nn
    from transforms.stitching import patchify_and_stitch, fully_convolutional
    torch.set_num_threads(1)
    side, mode = int(sys.argv[1]), sys.argv[2]
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
    forward = lambda x: [net(x)]
    image = torch.randn(1, 1, side, side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        if mode == "stitch":
            out = patchify_and_stitch(forward, image, (512, 512), (384, 384), batch_size=4)
        else:
            out = fully_convolutional(forward, image, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"grown_mb": (peak - before) / 1024, "shape": list(out[0].shape)}))
    """
)


def _peak_growth_mb(side: int, mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(side), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def test_stitched_memory_is_bounded_by_image_and_heatmaps():
    """4000 x 4000: the image is 61 MiB and its two output heatmaps 122 MiB; the stitched
    accumulators, weights and result add a few copies of those, never the activations of the
    whole image (8 channels x 16 M pixels = 488 MiB per layer; run whole, it grew 1.66 GiB)."""
    stitched = _peak_growth_mb(4000, "stitch")
    assert stitched["shape"] == [1, 2, 4000, 4000]
    image_mb, heatmaps_mb = 4000**2 * 4 / 2**20, 2 * 4000**2 * 4 / 2**20
    assert stitched["grown_mb"] < 2 * image_mb + 3 * heatmaps_mb  # measured: 431 MiB
