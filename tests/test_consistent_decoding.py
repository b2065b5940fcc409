"""Tests of inference/consistent_decoding.py through decode_methods, on synthetic heatmaps."""

import numpy as np
import pytest
import torch

from inference.consistent_decoding import shape_residuals
from inference.ensemble import decode_methods
from inference.layout import LayoutDecoder
from inference.shape_model import fit_shape_model
from transforms.decoding import HeatmapDecoder, heatmap_candidates
from transforms.generate_labels import gaussian_heatmaps

MAP_SIZE = (48, 64)  # H, W of the heatmaps (the network input)
ORIGINAL = (96, 128)  # H, W of the images: predictions are mapped to these pixels
LAYOUT = np.array(
    [[20, 20], [60, 18], [100, 25], [30, 60], [70, 55], [105, 70], [50, 80], [85, 85]], float
)


def training_shapes(n=40, seed=0):
    """Jittered copies of LAYOUT (original pixels) under small random similarities."""
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(n):
        angle, scale = rng.normal(0, 0.05), rng.uniform(0.9, 1.1)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = LAYOUT.mean(0)
        points = (LAYOUT - centre) @ rotation.T * scale + centre + rng.normal(0, 1.5, (2,))
        shapes.append(points + rng.normal(0, 1.0, LAYOUT.shape))
    return np.stack(shapes)


@pytest.fixture(scope="module")
def model():
    return fit_shape_model(training_shapes())


def input_pixels(points):
    """Original-image points → heatmap pixels (x' = (x + 0.5) w / W - 0.5)."""
    scale = np.array([MAP_SIZE[1] / ORIGINAL[1], MAP_SIZE[0] / ORIGINAL[0]])
    return (points + 0.5) * scale - 0.5


def heatmaps(points, extra=None):
    """(1, K, 48, 64) Gaussians (sigma 1.5, peak 1) at ``points``; ``extra``: {k: (x, y, peak)}
    adds a second peak in original pixels."""
    centres = torch.tensor(input_pixels(points), dtype=torch.float32)[None]
    maps = gaussian_heatmaps(centres, 1.5, MAP_SIZE)
    for k, (x, y, peak) in (extra or {}).items():
        centre = torch.tensor(input_pixels(np.array([[x, y]])), dtype=torch.float32)[None]
        maps[0, k] += gaussian_heatmaps(centre, 1.5, MAP_SIZE, peak)[0, 0]
    return maps


DECODER = HeatmapDecoder("scale_pred_coords", "quadratic")
SIZES = torch.tensor([ORIGINAL])


def decode(output, original_sizes):
    return DECODER.decode(output, original_sizes, 1.5)


def run(model, maps, methods=("smha", "shape"), outputs=None):
    layout = LayoutDecoder(model, lambda output, sizes: output, consistent=True)
    return decode_methods(outputs or [maps], SIZES, decode, methods, layout=layout)


def test_candidates_are_the_strongest_local_maxima():
    maps = heatmaps(LAYOUT[:2], {0: (100, 80, 0.5)})
    coords, values = heatmap_candidates(maps, 3, block=4)
    assert coords.shape == (1, 2, 3, 2) and values[0, 0, 0] > values[0, 0, 1] > 0.4
    np.testing.assert_allclose(
        coords[0, 0, 1].numpy(), input_pixels(np.array([[100, 80]]))[0], atol=0.3
    )
    assert (values[0, 1, 1:] == 0).all()  # one peak only: the rest is flat background


def test_no_planted_error_gives_exactly_the_plain_decoding(model):
    truth = training_shapes(1, seed=7)[0]
    maps = heatmaps(truth, {k: (truth[k, 0] + 40, truth[k, 1] - 30, 0.6) for k in range(8)})
    plain = decode(maps, SIZES)[0]
    result = run(model, maps)["smha"]
    assert torch.equal(result.coords, plain)
    assert not result.replaced.any()


def test_a_far_higher_peak_is_passed_over_for_the_true_one(model):
    truth = training_shapes(1, seed=8)[0]
    far = (truth[3, 0] + 60, truth[3, 1] - 35)
    maps = heatmaps(truth, {3: (*far, 1.5)})  # the higher peak of landmark 3 is planted far off
    plain = decode(maps, SIZES)[0]
    assert np.linalg.norm(plain[0, 3].numpy() - far) < 2  # plain decoding takes it
    result = run(model, maps)
    smha = result["smha"]
    assert np.linalg.norm(smha.coords[0, 3].numpy() - truth[3]) < 1.0
    assert smha.replaced[0].tolist() == [k == 3 for k in range(8)]
    others = [k for k in range(8) if k != 3]
    assert torch.equal(smha.coords[0, others], plain[0, others])
    assert torch.equal(result["shape"].coords, smha.coords)


def test_a_flat_heatmap_gets_the_conditional_prediction(model):
    truth = training_shapes(1, seed=9)[0]
    maps = heatmaps(truth)
    maps[0, 5] = 0.0
    result = run(model, maps)
    smha, shape = result["smha"], result["shape"]
    assert smha.replaced[0].tolist() == [k == 5 for k in range(8)]
    assert np.linalg.norm(smha.coords[0, 5].numpy() - truth[5]) < 8  # shape spread ~ 3 px
    assert shape.uncertainty[0].argmax() == 5  # the least certain landmark
    assert (smha.shape_covariance[0, 5].diagonal() > 0).all()


def test_ensemble_members_are_each_corrected(model):
    truth = training_shapes(1, seed=10)[0]
    good = heatmaps(truth)
    bad = heatmaps(truth, {2: (truth[2, 0] - 70, truth[2, 1] + 40, 2.0)})
    result = run(model, None, ("smha", "emha", "ecpv"), outputs=[good, bad])
    assert result["ecpv"].replaced[0, 2] and not result["smha"].replaced.any()
    assert np.linalg.norm(result["ecpv"].coords[0, 2].numpy() - truth[2]) < 1.0


def test_use_input_size_keeps_unreplaced_coordinates(model):
    truth = training_shapes(1, seed=11)[0]
    maps = heatmaps(truth, {1: (truth[1, 0] + 50, truth[1, 1] + 40, 1.5)})
    in_input = HeatmapDecoder("use_input_size", "quadratic")
    plain = in_input.decode(maps, SIZES, 1.5)
    layout = LayoutDecoder(
        model, lambda output, sizes: output, consistent=True, use_input_size=True
    )
    checked = layout(maps, SIZES, plain[0], plain[1])
    assert checked.replaced[0].tolist() == [k == 1 for k in range(8)]
    keep = [k for k in range(8) if k != 1]
    assert torch.equal(checked.coords[0, keep], plain[0][0, keep])
    expected = input_pixels(truth[1:2])[0]
    assert np.linalg.norm(checked.coords[0, 1].numpy() - expected) < 0.5


def test_prediction_noise_widens_the_test(model):
    truth = training_shapes(1, seed=12)[0]
    truth[2] += [6.0, -4.0]  # an unusual but not absurd landmark
    tight, tight_cov = shape_residuals(model, truth)
    loose, loose_cov = shape_residuals(model, truth, noise_px=3.0)
    assert loose[2] < tight[2] and (loose_cov[:, 0, 0] > tight_cov[:, 0, 0]).all()


@pytest.mark.parametrize("max_combinations", [64, 1])  # exact joint search, then greedy
def test_two_planted_misses_are_both_corrected(model, monkeypatch, max_combinations):
    monkeypatch.setattr("inference.consistent_decoding.MAX_COMBINATIONS", max_combinations)
    truth = training_shapes(1, seed=13)[0]
    planted = {1: (truth[1, 0] + 45, truth[1, 1] + 35, 1.4), 6: (truth[6, 0] - 40, 30.0, 1.6)}
    result = run(model, heatmaps(truth, planted))["smha"]
    assert result.replaced[0].tolist() == [k in planted for k in range(8)]
    errors = np.linalg.norm(result.coords[0].numpy() - truth, axis=-1)
    assert errors.max() < 1.0
