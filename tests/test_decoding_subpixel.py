"""Sub-pixel decoders, the Gaussian fit and flip test-time augmentation on drawn Gaussians."""

import math

import pytest
import torch

from transforms.decoding import DECODERS, decode_heatmaps, fit_gaussian, heatmap_to_coords
from utils.coordinates import flip_coords_vertical

SIZE = (40, 56)  # (H, W), deliberately not square


def draw(centres, covariance, size=SIZE, amplitude=100.0):
    """(1, N, H, W) Gaussians with a shared 2x2 covariance at x,y ``centres`` (N, 2)."""
    centres = torch.as_tensor(centres, dtype=torch.float64)
    precision = torch.linalg.inv(torch.as_tensor(covariance, dtype=torch.float64))
    ys, xs = torch.meshgrid(
        torch.arange(size[0], dtype=torch.float64),
        torch.arange(size[1], dtype=torch.float64),
        indexing="ij",
    )
    d = torch.stack([xs, ys], -1)[None] - centres[:, None, None, :]  # (N, H, W, 2)
    mahalanobis = torch.einsum("nhwi,ij,nhwj->nhw", d, precision, d)
    return (amplitude * torch.exp(-0.5 * mahalanobis))[None]


def random_centres(n, seed, border=False):
    g = torch.Generator().manual_seed(seed)
    centres = (
        torch.rand(n, 2, generator=g, dtype=torch.float64)
        * torch.tensor([SIZE[1] - 20.0, SIZE[0] - 20.0])
        + 10
    )
    if border:  # the maximum pixel on the first column or last row
        centres[: n // 2, 0] = torch.rand(n // 2, generator=g, dtype=torch.float64) * 0.45
        centres[n // 2 :, 1] = (
            SIZE[0] - 1 - torch.rand(n - n // 2, generator=g, dtype=torch.float64) * 0.45
        )
    return centres


# Sigmas of 3-4 px, as the targets at input resolution (a raw-value parabola is biased for
# narrower peaks; DARK and the fit are exact for any width).
ISOTROPIC = [[9.0, 0.0], [0.0, 9.0]]
ANISOTROPIC = [[16.0, 5.0], [5.0, 9.0]]  # sigma 4 x 3, tilted


@pytest.mark.parametrize("method", DECODERS[1:])
@pytest.mark.parametrize("covariance", [ISOTROPIC, ANISOTROPIC], ids=["isotropic", "anisotropic"])
@pytest.mark.parametrize("border", [False, True], ids=["inside", "border"])
def test_noise_free_decoding_within_005px(method, covariance, border):
    centres = random_centres(40, seed=1, border=border)
    heatmaps = draw(centres, covariance)
    coords, _ = decode_heatmaps(heatmaps, method, sigma=3.0)
    errors = (coords[0] - centres).norm(dim=-1)
    assert errors.max() < 0.05, errors.max()
    argmax_errors = (decode_heatmaps(heatmaps, "argmax")[0][0] - centres).norm(dim=-1)
    assert argmax_errors.max() > 0.3  # the sub-pixel part is really there to recover


@pytest.mark.parametrize("method", DECODERS[1:])
@pytest.mark.parametrize("border", [False, True], ids=["inside", "border"])
def test_noisy_decoding_within_01px(method, border):
    centres = random_centres(60, seed=2, border=border)
    clean = draw(centres, ISOTROPIC)
    noise = torch.randn(
        clean.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    coords, _ = decode_heatmaps(clean + 0.5 * noise, method, sigma=3.0)  # noise 0.5 % of peak
    assert (coords[0] - centres).norm(dim=-1).mean() < 0.1


@pytest.mark.parametrize("method", DECODERS)
def test_flat_and_zero_heatmaps_decode_without_nan(method):
    heatmaps = torch.stack([torch.zeros(SIZE), torch.full(SIZE, 3.0)])[None]
    coords, peak = decode_heatmaps(heatmaps, method, sigma=2.0)
    assert torch.isfinite(coords).all()
    assert peak.tolist() == [[0.0, 3.0]]
    fit = fit_gaussian(heatmaps, sigma=2.0)
    assert torch.isfinite(fit.mean).all() and torch.isinf(fit.covariance).all()


@pytest.mark.parametrize("method", DECODERS)
def test_decoding_is_invariant_under_the_flip_round_trip(method):
    centres = random_centres(20, seed=4)
    heatmaps = draw(centres, ANISOTROPIC)
    direct, _ = decode_heatmaps(heatmaps, method, sigma=2.0)
    flipped, _ = decode_heatmaps(heatmaps.flip(-2), method, sigma=2.0)
    torch.testing.assert_close(flip_coords_vertical(flipped, SIZE[0]), direct, atol=1e-4, rtol=0)
    back, _ = decode_heatmaps(heatmaps.flip(-2).flip(-2), method, sigma=2.0)
    torch.testing.assert_close(back, direct, atol=0, rtol=0)


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_gaussian_fit_recovers_covariance_within_10_percent(noise):
    covariance = torch.tensor(ANISOTROPIC, dtype=torch.float64)
    centres = random_centres(30, seed=5)
    heatmaps = draw(centres, covariance)
    heatmaps = heatmaps + noise * torch.randn(
        heatmaps.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6)
    )
    fit = fit_gaussian(heatmaps, sigma=3.5)
    relative = (fit.covariance[0] - covariance).abs() / covariance.abs().max()
    assert relative.max() < 0.1
    assert (fit.mean[0] - centres).norm(dim=-1).max() < 0.1
    assert fit.amplitude[0].sub(100).abs().max() < 5


def test_fit_gauss_covariance_scales_to_original_pixels():
    heatmap = draw([[20.3, 15.6]], ISOTROPIC)[0].float()  # (1, 40, 56) at input resolution
    original = (80, 168)  # y twice, x three times the input
    decoded = heatmap_to_coords(heatmap, original, "scale_pred_coords", sigma=3.0, fit_gauss=True)
    torch.testing.assert_close(
        decoded.covariance[0], torch.tensor([[81.0, 0.0], [0.0, 36.0]]), atol=0.05, rtol=0
    )
    expected = torch.tensor([(20.3 + 0.5) * 3 - 0.5, (15.6 + 0.5) * 2 - 0.5])
    torch.testing.assert_close(decoded.coords[0], expected, atol=0.01, rtol=0)


@pytest.mark.parametrize("mode", ["scale_heatmap_first", "scale_pred_coords"])
@pytest.mark.parametrize("method", DECODERS[1:])
def test_every_mode_lands_on_the_original_pixel(mode, method):
    heatmap = draw([[20.3, 15.6]], ISOTROPIC)[0].float()
    original = (100, 140)  # 2.5 x both ways
    coords = heatmap_to_coords(heatmap, original, mode, method=method, sigma=3.0).coords[0]
    expected = torch.tensor([(20.3 + 0.5) * 2.5 - 0.5, (15.6 + 0.5) * 2.5 - 0.5])
    assert (coords - expected).norm() < 0.25, (coords, expected)  # 0.1 input px
    assert math.isfinite(coords.sum().item())
