"""Tests of transforms/generate_labels.py: Gaussian heatmap targets for every U-Net level."""

import math

import numpy as np
import pytest
import torch

from inference.layout import LayoutDecoder
from inference.shape_model import fit_shape_model
from trainer.model_trainer_index import MODEL_TRAINER_INDEX
from transforms.decoding import HeatmapDecoder, heatmap_candidates
from transforms.generate_labels import (
    LabelGenerator,
    PHDNetLabelGenerator,
    UNetLabelGenerator,
    gaussian_heatmaps,
)

SIZE = (32, 48)  # H, W of the model input


def batch(coords, visible=None):
    landmarks = torch.tensor(coords, dtype=torch.float32)
    if visible is None:
        visible = torch.ones(landmarks.shape[:2])
    return landmarks, torch.as_tensor(visible, dtype=torch.float32)


def test_level_sizes_non_square():
    generator = UNetLabelGenerator(sigma=2.0, num_levels=4, lambda_scale=100.0)
    landmarks, visible = batch([[[10.0, 20.0], [3.0, 4.0], [40.0, 5.0]]] * 2)
    labels = generator.generate_labels(landmarks, visible, SIZE)
    assert [tuple(level.shape) for level in labels] == [
        (2, 3, 32, 48),
        (2, 3, 16, 24),
        (2, 3, 8, 12),
        (2, 3, 4, 6),
    ]


def test_peak_is_lambda_at_integer_landmark():
    generator = UNetLabelGenerator(sigma=2.0, num_levels=1, lambda_scale=37.5)
    landmarks, visible = batch([[[10.0, 20.0], [47.0, 0.0]]])
    heatmap = generator.generate_labels(landmarks, visible, SIZE)[0]
    assert heatmap[0, 0, 20, 10].item() == 37.5  # heatmap[b, k, y, x]
    assert heatmap[0, 0].max().item() == 37.5
    assert heatmap[0, 1, 0, 47].item() == 37.5
    # one pixel away: lambda * exp(-1 / (2 sigma^2))
    expected = 37.5 * math.exp(-1 / 8)
    assert heatmap[0, 0, 20, 11].item() == pytest.approx(expected, rel=1e-6)
    assert heatmap[0, 0, 21, 10].item() == pytest.approx(expected, rel=1e-6)
    assert heatmap[0, 0, 20, 12].item() == pytest.approx(37.5 * math.exp(-4 / 8), rel=1e-6)
    assert heatmap.min().item() >= 0.0


def test_sub_pixel_landmark_not_rounded():
    generator = UNetLabelGenerator(sigma=1.5, num_levels=1, lambda_scale=100.0)
    # half-way between columns 10 and 11, a quarter below row 20
    landmarks, visible = batch([[[10.5, 20.25]]])
    heatmap = generator.generate_labels(landmarks, visible, SIZE)[0][0, 0]
    assert heatmap[20, 10].item() == pytest.approx(heatmap[20, 11].item(), rel=1e-6)
    assert heatmap[20, 9].item() == pytest.approx(heatmap[20, 12].item(), rel=1e-6)
    assert heatmap[20, 10].item() < 100.0
    expected = 100 * math.exp(-(0.5**2 + 0.25**2) / (2 * 1.5**2))
    assert heatmap[20, 10].item() == pytest.approx(expected, rel=1e-6)
    # row 20 is closer than row 21
    assert heatmap[20, 10].item() > heatmap[21, 10].item()
    assert heatmap[21, 10].item() == pytest.approx(
        100 * math.exp(-(0.5**2 + 0.75**2) / (2 * 1.5**2)), rel=1e-6
    )


def test_coarser_levels_follow_resize_coords():
    generator = UNetLabelGenerator(sigma=4.0, num_levels=3, lambda_scale=100.0)
    # input (x, y) = (9.5, 17.5) -> level 1: (4.5, 8.5) -> level 2: (2.0, 4.0), a pixel centre
    landmarks, visible = batch([[[9.5, 17.5]]])
    labels = generator.generate_labels(landmarks, visible, SIZE)
    level2 = labels[2][0, 0]
    assert level2[4, 2].item() == pytest.approx(100.0)
    # level 2 has sigma 1: one pixel away is 100 * exp(-1/2)
    assert level2[4, 3].item() == pytest.approx(100 * math.exp(-0.5), rel=1e-5)
    level1 = labels[1][0, 0]
    assert level1[8, 4].item() == pytest.approx(level1[9, 5].item(), rel=1e-5)
    assert level1[8, 4].item() == pytest.approx(100 * math.exp(-0.5 / 8), rel=1e-5)


def test_invisible_landmark_gives_zero_heatmap():
    generator = UNetLabelGenerator(sigma=2.0, num_levels=2)
    landmarks, visible = batch([[[10.0, 20.0], [30.0, 5.0]]], [[1.0, 0.0]])
    labels = generator.generate_labels(landmarks, visible, SIZE)
    for level in labels:
        assert level[0, 0].max().item() > 0
        assert torch.count_nonzero(level[0, 1]) == 0


def test_missing_landmark_has_no_target_at_any_level():
    """A missing (NaN) landmark's maps are NaN (no target, left out by the losses); the
    others are untouched."""
    generator = UNetLabelGenerator(sigma=2.0, num_levels=3)
    landmarks, visible = batch([[[float("nan"), float("nan")], [12.0, 6.0]]], [[0.0, 1.0]])
    labels = generator.generate_labels(landmarks, visible, SIZE)
    for level in labels:
        assert torch.isnan(level[0, 0]).all()
        assert torch.isfinite(level[0, 1]).all()
    assert labels[0][0, 1, 6, 12].item() == pytest.approx(100.0)


def test_x_y_corner_patch_shifts():
    generator = UNetLabelGenerator(sigma=2.0, num_levels=1, lambda_scale=10.0)
    landmarks, visible = batch([[[30.0, 25.0]], [[30.0, 25.0]]])
    corner = torch.tensor([[20.0, 5.0], [0.0, 0.0]])
    heatmaps = generator.generate_labels(landmarks, visible, SIZE, x_y_corner_patch=corner)[0]
    assert heatmaps[0, 0, 20, 10].item() == 10.0  # (30 - 20, 25 - 5)
    assert heatmaps[1, 0, 25, 30].item() == 10.0
    unshifted = generator.generate_labels(landmarks, visible, SIZE)[0]
    torch.testing.assert_close(heatmaps[1], unshifted[1])


def test_gaussian_heatmaps_formula():
    centres = torch.tensor([[[2.0, 1.0]]])
    heatmap = gaussian_heatmaps(centres, sigma=1.0, size=(3, 5), amplitude=2.0)
    assert heatmap.shape == (1, 1, 3, 5)
    yy, xx = torch.meshgrid(torch.arange(3.0), torch.arange(5.0), indexing="ij")
    expected = 2.0 * torch.exp(-((xx - 2.0) ** 2 + (yy - 1.0) ** 2) / 2.0)
    torch.testing.assert_close(heatmap[0, 0], expected)


def test_integer_landmarks_accepted():
    generator = UNetLabelGenerator(sigma=2.0, num_levels=1)
    labels = generator.generate_labels(torch.tensor([[[10, 20]]]), torch.tensor([[1]]), SIZE)
    assert labels[0].dtype == torch.float32
    assert labels[0][0, 0, 20, 10].item() == 100.0


def test_label_generator_is_abstract():
    with pytest.raises(TypeError):
        LabelGenerator()


def test_every_trainer_names_its_label_generator():
    assert MODEL_TRAINER_INDEX["U-Net"].label_generator_class is UNetLabelGenerator
    assert MODEL_TRAINER_INDEX["PHD-Net"].label_generator_class is PHDNetLabelGenerator
    for trainer_class in MODEL_TRAINER_INDEX.values():
        assert issubclass(trainer_class.label_generator_class, LabelGenerator)


# Sub-pixel landmarks inside a non-square (H, W) input, away from the border.
ROUND_TRIP = [
    [[10.3, 7.6], [30.55, 20.2], [22.0, 14.45]],
    [[5.7, 24.1], [40.2, 9.9], [17.25, 17.5]],
]


def codecs(evaluation_mode: str) -> list[LabelGenerator]:
    """One label generator of each kind, decoding as ``evaluation_mode`` says."""
    decoder = HeatmapDecoder(evaluation_mode, "dark")
    return [
        UNetLabelGenerator(sigma=2.0, num_levels=3, decoder=decoder),
        PHDNetLabelGenerator(patch_size=8, sigma=1.0, decoder=decoder, image_size=SIZE),
        PHDNetLabelGenerator(
            patch_size=4, sigma=1.0, log_transform=False, decoder=decoder, image_size=SIZE
        ),
    ]


@pytest.mark.parametrize("codec_index", range(3))
@pytest.mark.parametrize("evaluation_mode", ["use_input_size", "scale_pred_coords"])
def test_generate_then_decode_returns_the_landmarks(codec_index, evaluation_mode):
    """Targets taken as the network's output decode to the landmarks (input pixels here: the
    original size is the input's), directly and through a flip and ``flip_back``."""
    codec = codecs(evaluation_mode)[codec_index]
    landmarks, visible = batch(ROUND_TRIP)
    sizes = torch.tensor([list(SIZE)] * len(landmarks))
    targets = codec.generate_labels(landmarks, visible, SIZE)
    coords = codec.decode(codec.to_average(targets), sizes)[0]
    torch.testing.assert_close(coords, landmarks, atol=0.05, rtol=0)
    flipped = landmarks.clone()
    flipped[..., 1] = SIZE[0] - 1 - flipped[..., 1]  # the same landmarks in the flipped image
    flipped_targets = codec.to_average(codec.generate_labels(flipped, visible, SIZE))
    coords = codec.decode(codec.flip_back(flipped_targets), sizes)[0]
    torch.testing.assert_close(coords, landmarks, atol=0.05, rtol=0)


def test_unet_round_trip_into_a_larger_original_image():
    """scale_heatmap_first decodes into the original image's pixels (twice the input here)."""
    codec = codecs("scale_heatmap_first")[0]
    landmarks, visible = batch(ROUND_TRIP)
    original = (2 * SIZE[0], 2 * SIZE[1])
    targets = codec.generate_labels(landmarks, visible, SIZE)
    coords = codec.decode(targets, torch.tensor([list(original)] * len(landmarks)))[0]
    expected = (landmarks + 0.5) * 2 - 0.5  # utils/coordinates.py's resize mapping
    torch.testing.assert_close(coords, expected, atol=0.05 * 2, rtol=0)


@pytest.mark.parametrize("codec_name", ["unet", "phdnet"])
def test_horizontal_flip_back_swaps_pairs_and_decodes_the_same(codec_name):
    """Targets of a mirrored image, where the pair (0, 2) swapped, flipped back equal the
    original targets channel for channel; decoded coordinates agree within 0.01 px."""
    from transforms.generate_labels import PHDNetLabelGenerator
    from utils.coordinates import flip_coords_horizontal, flip_permutation

    size = (32, 48)
    coords = torch.tensor([[[10.3, 12.6], [24.2, 20.1], [37.7, 11.4]]])
    visible = torch.ones(1, 3)
    pairs = [(0, 2)]
    mirrored = flip_coords_horizontal(coords, size[1])[:, flip_permutation(3, pairs)]
    if codec_name == "unet":
        codec = UNetLabelGenerator(sigma=2.0, num_levels=1)
    else:
        codec = PHDNetLabelGenerator(patch_size=4, sigma=1.0, image_size=size)
    flipped_output = codec.to_average(codec.generate_labels(mirrored, visible, size))
    original = codec.to_average(codec.generate_labels(coords, visible, size))
    back = codec.flip_back(flipped_output, "horizontal", pairs)
    sizes = torch.tensor([size])
    decoded = codec.decode(back, sizes)[0]
    expected = codec.decode(original, sizes)[0]
    torch.testing.assert_close(decoded, expected, atol=0.01, rtol=0)
    assert (decoded - coords).abs().max() < 0.5
    # without the swap, landmark 0 would decode where landmark 2 is
    wrong = codec.decode(codec.flip_back(flipped_output, "horizontal"), sizes)[0]
    assert (wrong[0, 0] - coords[0, 2]).abs().max() < 0.5


@pytest.mark.parametrize("codec_index", range(3))
def test_candidate_maps_peak_at_the_landmarks_and_keep_the_plain_decoding(codec_index):
    """Each codec's candidate maps are at input size with their strongest candidate on the
    landmark; a layout the shape model accepts is returned untouched."""
    codec = codecs("use_input_size")[codec_index]
    layout = np.asarray(ROUND_TRIP[0])
    landmarks, visible = batch([layout.tolist(), (layout + [5.0, 3.0]).tolist()])  # shifted
    sizes = torch.tensor([list(SIZE)] * len(landmarks))
    output = codec.to_average(codec.generate_labels(landmarks, visible, SIZE))
    maps = codec.candidate_maps(output, sizes)
    assert tuple(maps.shape) == (2, 3, *SIZE)
    candidates, _ = heatmap_candidates(maps, 2)
    assert (candidates[:, :, 0] - landmarks).norm(dim=-1).max() < 1.5
    rng = np.random.default_rng(0)
    shapes = layout + rng.normal(0, 0.5, (10, 3, 2))
    decoder = LayoutDecoder(
        fit_shape_model(shapes), codec.candidate_maps, consistent=True, use_input_size=True
    )
    coords, activation = codec.decode(output, sizes)[:2]
    checked = decoder(output, sizes, coords, activation)
    assert torch.equal(checked.coords, coords) and not checked.replaced.any()
