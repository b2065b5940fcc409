"""Tests of inference/shape_model.py: robust Procrustes, shrunk PPCA, conditioning, storage."""

import numpy as np
import pytest
import torch

from inference.shape_model import (
    ShapeModel,
    fit_shape_model,
    fit_similarity,
    to_complex,
    to_xy,
)
from utils.errors import CheckpointError, DataError

K = 8


def known_shapes(n=60, seed=0, missing=0.15):
    """(true unit mean (K, 2), its one mode (2K,), n shapes under random similarities with a
    fraction ``missing`` of NaN landmarks)."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(K, 2))
    mean -= mean.mean(0)
    mean /= np.sqrt((mean**2).sum())
    flat = mean.reshape(-1)
    rotated = to_xy(1j * to_complex(mean)).reshape(-1)
    gauge = np.stack([np.tile([1.0, 0.0], K), np.tile([0.0, 1.0], K), flat, rotated])
    basis, _ = np.linalg.qr(np.c_[gauge.T, rng.normal(size=2 * K)])
    mode = basis[:, -1]  # orthogonal to translation, rotation and scale
    b = rng.normal(scale=0.08, size=n)
    shapes = (flat + b[:, None] * mode + rng.normal(scale=0.005, size=(n, 2 * K))).reshape(n, K, 2)
    angle = rng.uniform(-np.pi, np.pi, n)
    scale = rng.uniform(50, 200, n)
    shift = rng.uniform(0, 500, n) + 1j * rng.uniform(0, 500, n)
    z = scale[:, None] * np.exp(1j * angle)[:, None] * to_complex(shapes) + shift[:, None]
    coords = to_xy(z)
    coords[rng.random((n, K)) < missing] = np.nan
    return mean, mode, coords


def test_recovers_mean_and_mode_despite_missing_landmarks_and_a_slip():
    mean, mode, coords = known_shapes()
    coords[3, 2] += 40.0  # a label slip
    model = fit_shape_model(coords)
    to_model = fit_similarity(to_complex(mean), to_complex(model.mean), np.ones(K))
    assert abs(abs(to_model.scale_rotation) - 1) < 0.01  # both unit size
    assert np.abs(to_model.apply(to_complex(mean)) - to_complex(model.mean)).max() < 0.02
    rotation = to_model.scale_rotation / abs(to_model.scale_rotation)
    mode_in_model = to_xy(rotation * to_complex(mode.reshape(K, 2))).reshape(-1)
    assert abs(mode_in_model @ model.modes[:, 0]) > 0.95
    assert model.mode_variances[0] > 10 * model.residual_variance


def test_small_training_sets_are_shrunk_but_usable():
    _, _, coords = known_shapes(n=4, missing=0.0)
    model = fit_shape_model(coords)
    covariance = model.covariance()
    assert np.linalg.eigvalsh(covariance).min() > 0  # invertible despite 4 shapes in 16 dims
    assert model.num_shapes == 4 and len(model.mode_variances) <= 3


def test_conditional_prediction_of_a_missing_landmark():
    _, _, coords = known_shapes(missing=0.0)
    model = fit_shape_model(coords[1:])
    shape = coords[0]
    observed = np.ones(K, bool)
    observed[5] = False
    transform = model.align(shape, observed.astype(float))
    aligned = to_xy(transform.apply(to_complex(shape)))
    mean, covariance = model.conditional(aligned, observed)
    predicted = to_xy(transform.invert(to_complex(mean[5])))
    size = np.sqrt(((shape - shape.mean(0)) ** 2).sum())
    spread = np.sqrt(np.trace(transform.inverse_covariance(covariance[5])))
    assert np.linalg.norm(predicted - shape[5]) < 3 * spread < 0.2 * size


def test_state_round_trip_and_malformed_state():
    _, _, coords = known_shapes()
    model = fit_shape_model(coords)
    state = model.to_state()
    assert all(isinstance(v, torch.Tensor | int | float) for v in state.values())
    back = ShapeModel.from_state(state)
    np.testing.assert_array_equal(back.covariance(), model.covariance())
    with pytest.raises(CheckpointError, match="shape_model"):
        ShapeModel.from_state({"mean": state["mean"]}, "m.model")
    with pytest.raises(CheckpointError, match="inconsistent"):
        ShapeModel.from_state({**state, "modes": state["modes"][:3]}, "m.model")


def heavy_tailed_shapes(n, seed):
    """known_shapes without missing landmarks, landmark 2 jittered by a heavy-tailed (Student t,
    3 degrees of freedom) offset that no mode explains, as a hard-to-place landmark is."""
    _, _, coords = known_shapes(n=n, seed=seed, missing=0.0)
    rng = np.random.default_rng(seed + 100)
    size = np.sqrt(((coords - coords.mean(1, keepdims=True)) ** 2).sum((1, 2)))
    coords[:, 2] += 0.03 * size[:, None] * rng.standard_t(3, size=(n, 2))
    return coords


def flagged_share(model, shapes, landmark, p_value=1e-3):
    """Share of ``shapes`` whose ``landmark`` fails the shape test at ``p_value``."""
    threshold = -2 * np.log(p_value)
    d2 = [model.residuals(shape, np.ones(K, bool))[3][landmark] for shape in shapes]
    return float(np.mean(np.array(d2) > threshold))


def test_held_out_calibration_widens_a_heavy_tailed_landmark():
    shapes = heavy_tailed_shapes(480, seed=1)  # one mean shape: train on 80, test on 400
    train, unseen = shapes[:80], shapes[80:]
    plain = fit_shape_model(train, calibrate=False)
    calibrated = fit_shape_model(train)
    assert plain.landmark_scales is None
    assert calibrated.landmark_scales[2] > 1.5  # the jittered landmark is widened
    assert np.all(calibrated.landmark_scales >= 1)
    # the in-sample model rejects true positions of that landmark far above 0.1 %
    assert flagged_share(plain, unseen, 2) > 0.03
    assert flagged_share(calibrated, unseen, 2) < flagged_share(plain, unseen, 2) / 2


def test_state_of_an_uncalibrated_checkpoint_still_loads():
    _, _, coords = known_shapes()
    model = fit_shape_model(coords)
    state = model.to_state()
    assert state["landmark_scales"].shape == (K,)
    older = {key: value for key, value in state.items() if key != "landmark_scales"}
    assert ShapeModel.from_state(older).landmark_scales is None
    with pytest.raises(CheckpointError, match="inconsistent"):
        ShapeModel.from_state({**state, "landmark_scales": -state["landmark_scales"]}, "m.model")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_state_loaded_onto_a_gpu():
    # torch.load(map_location="cuda") puts the state's tensors on the GPU when testing there
    _, _, coords = known_shapes()
    model = fit_shape_model(coords)
    state = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in model.to_state().items()}
    back = ShapeModel.from_state(state)
    np.testing.assert_array_equal(back.covariance(), model.covariance())


def test_too_few_shapes_is_a_data_error():
    _, _, coords = known_shapes(n=2, missing=0.0)
    with pytest.raises(DataError, match="at least 3 training shapes"):
        fit_shape_model(coords)
