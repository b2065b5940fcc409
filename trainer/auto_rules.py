"""The rules behind the "auto" config values, as plain functions of plain numbers.

config_auto.py reads the config and the dataset fingerprint and calls these; each returns the
value and, where it helps the log, the reason. Sizes are (H, W) in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from models.unet_classic import plan_unet_features
from transforms.dataloader_transforms import H_FLIP, NO_FLIP, build_augmentation
from utils.coordinates import coords_inside, resize_coords
from utils.errors import ConfigError

# Samples x pixels per CPU batch: the hand-set CPU benchmark's 8 images of 256 x 256.
CPU_PIXELS_PER_BATCH = 8 * 256 * 256
# Fraction of the free GPU memory a measured batch may use: the rest absorbs the allocator's
# fragmentation, cuDNN workspaces that vary between iterations, and validation.
GPU_MEMORY_HEADROOM = 0.85
# MODEL.UNET.INIT_FEATURES "auto": never fewer first-level features than the CPU benchmark's 16.
MIN_AUTO_FEATURES = 16


def unet_multiple(min_side: float, min_feature_resolution: int) -> int:
    """2^k for the most halvings k >= 1 that keep ``min_side`` >= ``min_feature_resolution``:
    the U-Net's total down-sampling (models/unet_classic.plan_unet_features halves while both
    sides stay even and at least MIN_FEATURE_RESOLUTION)."""
    halvings = max(1, math.floor(math.log2(max(min_side, 1) / min_feature_resolution)))
    return 2**halvings


def auto_input_size(
    median_size: Sequence[float],
    max_pixels: int,
    min_feature_resolution: int | None = None,
    multiple: int | None = None,
) -> tuple[int, int]:
    """The network input (H, W) for images of ``median_size`` (H, W).

    The median image is scaled (never up, except to the smallest usable size) to at most
    ``max_pixels`` pixels, keeping its aspect ratio; each side is then rounded to a multiple of
    ``multiple`` (PHD-Net's patch), or, given ``min_feature_resolution`` (U-Net), of 2^k for
    the most halvings k that keep the coarsest feature map at least that big (or of 2^(k-1),
    one level fewer, when that keeps the aspect ratio much better: a short side of a few
    multiples rounds coarsely). Among the roundings within the budget, the one closest to the
    median's aspect ratio and size wins: cost |log aspect error| + 0.5 |log area error|, plus
    0.1 per U-Net level fewer than the best candidate's (models/unet_classic.plan_unet_features).
    """
    if (min_feature_resolution is None) == (multiple is None):
        raise ValueError("give either min_feature_resolution (U-Net) or multiple")
    height, width = float(median_size[0]), float(median_size[1])
    scale = min(1.0, math.sqrt(max_pixels / (height * width)))
    target_h, target_w = height * scale, width * scale
    aspect, area = target_h / target_w, target_h * target_w
    if multiple is not None:
        steps, smallest = [multiple], 8
    else:
        smallest = max(8, 2 * min_feature_resolution)
        finest = unet_multiple(max(min(target_h, target_w), smallest), min_feature_resolution)
        steps = [finest, finest // 2] if finest >= 4 else [finest]

    def near(target: float, step: int, low_limit: int) -> set[int]:
        low = math.floor(target / step) * step
        return {max(low_limit, n) for n in (low - step, low, low + step, low + 2 * step)}

    sizes = set()
    for step in steps:
        low_limit = step * math.ceil(smallest / step)
        for h in near(target_h, step, low_limit):
            sizes |= {(h, w) for w in near(target_w, step, low_limit) | near(h / aspect, step, 1)}
        for w in near(target_w, step, low_limit):
            sizes |= {(h, w) for h in near(w * aspect, step, low_limit)}
    sizes = {(h, w) for h, w in sizes if h * w <= max_pixels and min(h, w) >= smallest}

    def levels(size: tuple[int, int]) -> int:
        if min_feature_resolution is None:
            return 0
        return len(plan_unet_features(size, min_feature_resolution, 1, 1)) - 1

    most = max((levels(size) for size in sizes), default=0)
    candidates = {
        (h, w): abs(math.log(h / w / aspect))
        + 0.5 * abs(math.log(h * w / area))
        + 0.1 * (most - levels((h, w)))
        for h, w in sizes
    }
    if not candidates:
        raise ConfigError(
            f"SAMPLER.MAX_INPUT_PIXELS {max_pixels} is below the smallest input "
            f"{smallest} x {smallest} that the network can halve; raise it"
        )
    return min(candidates, key=lambda size: (candidates[size], -size[0] * size[1]))


def auto_gauss_sigma(input_size: Sequence[int], supervised_levels: int) -> float:
    """Sigma in input pixels of the target Gaussians.

    Level l of deep supervision draws the same Gaussian at 1/2^l resolution, sigma / 2^l
    (transforms/generate_labels.py). Below ~0.5 px a Gaussian is a single spiky pixel whose
    peak is quantised to 2^l input pixels, so the coarsest supervised level ``L - 1`` needs
    sigma >= 0.5 * 2^(L-1); the finest needs >= 2 px for sub-pixel decoding. A Gaussian wider
    than 1/16 of the shorter input side would blur neighbouring anatomy together, so that caps
    it (never below 1 px). Capping it at a third of the landmarks' spacing
    (:func:`landmark_spacing`) was tried on spine X-rays: 2 px for their 68 corners learned far
    more slowly than 4 px at the CPU budget (docs/benchmarks.md).
    """
    return float(max(1.0, min(sigma_level_floor(supervised_levels), min(input_size) / 16)))


def supervised_levels_for_sigma(sigma: float, most: int) -> int:
    """How many deep-supervision levels (at most ``most``) keep a Gaussian of ``sigma`` input
    pixels at least 0.5 px wide at the coarsest: 1 + floor(log2(sigma / 0.5))."""
    return int(max(1, min(most, 1 + math.floor(math.log2(max(sigma, 0.5) / 0.5) + 1e-9))))


def landmark_spacing(landmarks_rel: np.ndarray, input_size: Sequence[int]) -> float:
    """The median distance from a landmark to its nearest other landmark, in pixels of an
    input of ``input_size`` (H, W).

    Args:
        landmarks_rel: (N, K, 2) x,y in unit-image coordinates (utils/coordinates.resize_coords
            to a 1 x 1 image: -0.5 ... 0.5 across each image; missing landmarks NaN), e.g. the
            fingerprint's ``training_landmarks_rel``.
    Returns:
        the median over samples and landmarks; inf with fewer than two landmarks.
    """
    points = np.asarray(landmarks_rel, dtype=np.float64).reshape(-1, *np.shape(landmarks_rel)[-2:])
    if points.size == 0 or points.shape[1] < 2:
        return math.inf
    scaled = points * np.array([input_size[1], input_size[0]], dtype=np.float64)
    distances = np.linalg.norm(scaled[:, :, None] - scaled[:, None], axis=-1)
    distances[:, np.arange(points.shape[1]), np.arange(points.shape[1])] = np.inf
    nearest = np.nanmin(np.where(np.isnan(distances), np.inf, distances), axis=-1)
    nearest = nearest[np.isfinite(nearest)]
    return float(np.median(nearest)) if nearest.size else math.inf


# SAMPLER.DATA_AUG "auto": the schemes tried, strongest first. None flips vertically: a vertical
# flip turns a spine's T1 into its lowest vertebra and a skull upside down, an image no scanner
# makes; with flip pairs, choose_augmentation adds a horizontal flip that swaps them.
AUTO_AUGMENTATIONS = ("AffineComplexNoFlip", "AffineSimpleNoFlip")
# The share of augmented training landmarks a scheme may push out of the input.
MAX_AUGMENTED_OUTSIDE = 0.01


def augmented_outside(
    scheme: str, landmarks_rel: np.ndarray, image_size: Sequence[int], samples: int = 200
) -> float:
    """The share of training landmarks that ``scheme`` pushes out of an image of
    ``image_size`` (H, W), over ``samples`` seeded augmentations of the training shapes
    (``landmarks_rel`` (N, K, 2) unit-image coordinates as :func:`landmark_spacing` takes them;
    missing ones NaN)."""
    shapes = np.asarray(landmarks_rel, dtype=np.float64)
    if shapes.size == 0:
        return 0.0
    height, width = int(image_size[0]), int(image_size[1])
    augment = build_augmentation(scheme, "albumentations")
    blank = np.zeros((height, width), np.float32)
    outside = []
    for n in range(samples):
        shape = resize_coords(shapes[n % len(shapes)], (1, 1), (height, width))
        known = np.isfinite(shape).all(axis=1)
        _, moved = augment(blank, np.where(known[:, None], shape, 0.0), seed=n)
        moved = moved[known]
        inside = coords_inside(np.nan_to_num(moved, nan=-1.0), (height, width))
        outside.append(1 - inside.mean())
    return float(np.mean(outside))


def choose_augmentation(outside: dict[str, float], has_flip_pairs: bool = False) -> str:
    """The strongest of AUTO_AUGMENTATIONS whose augmentation of the training landmarks pushes
    at most MAX_AUGMENTED_OUTSIDE of them out of the input (``outside``: scheme -> share), or
    the weakest: a ±45° rotation of a tall, narrow image (a spine) turns its ends out of the
    frame, a rotation no patient shows. With ``has_flip_pairs`` (the dataset declares
    left/right pairs), the same scheme with a horizontal flip that swaps them (``...HFlip``):
    a mirrored image with its pairs swapped is an anatomically possible one; without pairs no
    flip is."""
    chosen = next(
        (s for s in AUTO_AUGMENTATIONS if outside[s] <= MAX_AUGMENTED_OUTSIDE),
        AUTO_AUGMENTATIONS[-1],
    )
    return chosen.removesuffix(NO_FLIP) + H_FLIP if has_flip_pairs else chosen


def auto_init_features(num_landmarks: int, max_features: int) -> int:
    """Features of the U-Net's first (finest) level: one per two landmarks, rounded to the
    nearest power of two, at least MIN_AUTO_FEATURES, at most ``max_features``.

    The output layer reads every landmark's heatmap from the finest level's features with a
    1 x 1 convolution, so those features are shared by all K heatmaps: 16 serve the 19
    cephalometric landmarks, but with the spine's 68 vertebra corners at 16 features the
    validation error after 8 of 30 epochs was 200 px against 129 px at 32 (docs/benchmarks.md).
    19 landmarks -> 16, 68 -> 32, 150 -> 64.
    """
    if num_landmarks < 1:
        raise ConfigError(f'MODEL.UNET.INIT_FEATURES "auto" needs landmarks; got {num_landmarks}')
    nearest_power = 2 ** round(math.log2(max(num_landmarks / 2, 1.0)))
    return int(min(max(MIN_AUTO_FEATURES, nearest_power), max_features))


def sigma_level_floor(supervised_levels: int) -> float:
    """The least sigma (input pixels) that ``supervised_levels`` deep-supervision levels and
    sub-pixel decoding allow: max(2, 0.5 * 2^(L-1)) (see :func:`auto_gauss_sigma`)."""
    return max(2.0, 0.5 * 2.0 ** (max(supervised_levels, 1) - 1))


def auto_num_workers(cpu_count: int, cached: bool, device_type: str) -> int:
    """Data loader worker processes.

    On a CPU device the training itself uses every core: with cached images (augmentation is
    cheap next to a CPU forward/backward) no workers; without, at most 2 to decode. On a GPU,
    workers keep it fed: up to 4 with cached images (augmentation only), up to 8 when every
    image is decoded each time; always leaving one core to the main process.
    """
    spare = max(cpu_count - 1, 0)
    if device_type == "cpu":
        return 0 if cached else min(2, spare)
    return min(4 if cached else 8, spare)


def cpu_batch_size(input_size: Sequence[int], cap: int) -> int:
    """A small power-of-two batch on a CPU: the benchmark's 8 x 256 x 256 pixels per batch, at
    least 2 (a CPU gains nothing from large batches; more, smaller steps learn faster)."""
    fits = CPU_PIXELS_PER_BATCH / (int(input_size[0]) * int(input_size[1]))
    batch = 2 ** max(0, math.floor(math.log2(max(fits, 1))))
    return int(max(1, min(cap, max(2, batch))))


def search_batch_size(
    probe: Callable[[int], int], memory_limit: int, cap: int, headroom: float = GPU_MEMORY_HEADROOM
) -> tuple[int, list[str]]:
    """The largest batch size <= ``cap`` whose training step fits ``headroom * memory_limit``.

    ``probe(batch)`` runs one forward + backward + optimizer step at that batch size and returns
    its peak memory in bytes, or raises ``torch.cuda.OutOfMemoryError``. Batch sizes double from
    1 until one does not fit or ``cap`` is reached; between the last fitting and the first
    failing size, the linear fit of the last two measured peaks proposes one more size, which is
    measured before it is taken. Returns the size and one line per measurement.
    """
    budget = headroom * memory_limit
    measured: dict[int, int] = {}
    notes: list[str] = []
    best, batch, failed = 0, 1, None

    def fits(size: int) -> bool:
        try:
            peak = probe(size)
        except torch.cuda.OutOfMemoryError:
            notes.append(f"batch {size}: out of memory")
            return False
        measured[size] = peak
        ok = peak <= budget
        notes.append(f"batch {size}: peak {peak / 2**20:.0f} MiB{'' if ok else ' (too much)'}")
        return ok

    while batch <= cap:
        if not fits(batch):
            failed = batch
            break
        best = batch
        batch *= 2
    if best == 0:
        raise ConfigError(
            f"SOLVER.DATA_LOADER_BATCH_SIZE auto: even a batch of 1 does not fit in "
            f"{headroom:.0%} of {memory_limit / 2**30:.1f} GiB; lower the input size"
        )
    upper = min(cap, (failed - 1) if failed else cap)
    fitting = sorted((size, peak) for size, peak in measured.items() if size <= best)
    if best < upper and len(fitting) >= 2:
        (b1, p1), (b2, p2) = fitting[-2:]
        per_sample = max((p2 - p1) / (b2 - b1), 1.0)
        guess = min(upper, int(best + (budget - measured[best]) / per_sample))
        if guess > best and fits(guess):
            best = guess
    return best, notes
