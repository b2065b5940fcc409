"""Augmentation schemes (``SAMPLER.DATA_AUG``): the image and its x,y landmarks move together.

An augmentation is a callable ``(image (H, W) float32, coords (K, 2) x,y in pixels of that image,
seed) -> (image, coords)`` that keeps the image size. Landmarks pushed off the image keep their
(outside) coordinates; a missing landmark (NaN) stays NaN; the dataset marks both invisible.

Flips, by the scheme name's suffix: none (the original's names) a vertical flip half the time;
``NoFlip`` none; ``HFlip`` a horizontal flip half the time that swaps the landmarks of each
declared left/right pair (``flip_pairs``; without pairs a flip never changes which landmark is
which, so a mirrored left landmark is still "left").
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from config import AUGMENTATION_SCHEMES
from utils.coordinates import flip_coords_horizontal, flip_permutation
from utils.errors import ConfigError

Augmentation = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]

# Ranges of the geometric schemes; "Complex" is the original's recommended strength.
_AFFINE_SIMPLE = dict(scale=(0.9, 1.1), translate=(-0.05, 0.05), rotate=(-10, 10), shear=(0, 0))
_AFFINE_COMPLEX = dict(scale=(0.8, 1.2), translate=(-0.07, 0.07), rotate=(-45, 45), shear=(-16, 16))
# Elastic strength as (largest displacement, smoothness), both as fractions of the image side.
_ELASTIC = {"AffineComplexElastic": (0.02, 0.05), "AffineComplexElasticLight": (0.01, 0.05)}

SCHEMES = AUGMENTATION_SCHEMES  # config.py holds the names, for its early check
NO_FLIP = "NoFlip"  # scheme-name suffix: the same transforms without the vertical flip
H_FLIP = "HFlip"  # scheme-name suffix: a horizontal flip (with pair swaps) instead


def flip_axis(scheme: str | None) -> str | None:
    """The flip a SAMPLER.DATA_AUG scheme trains with: "vertical", "horizontal" or None."""
    if scheme in (None, "None", "none", "", "auto") or scheme.endswith(NO_FLIP):
        return None
    return "horizontal" if scheme.endswith(H_FLIP) else "vertical"


def _scheme_parts(scheme: str) -> tuple[dict, tuple[float, float] | None, str | None]:
    """(affine ranges, elastic (displacement, smoothness) or None, flip axis) of a scheme."""
    base = scheme.removesuffix(NO_FLIP).removesuffix(H_FLIP)
    affine = _AFFINE_SIMPLE if base == "AffineSimple" else _AFFINE_COMPLEX
    return affine, _ELASTIC.get(base), flip_axis(scheme)


class HorizontalFlip:
    """Mirror left-right with probability ``p``: ``x -> W - 1 - x``, and the two landmarks of
    each pair (positions in ``coords``) swap places, so that "left" stays left."""

    def __init__(self, flip_pairs: list[tuple[int, int]] = (), p: float = 0.5) -> None:
        self.flip_pairs = [tuple(pair) for pair in flip_pairs]
        self.p = p

    def __call__(self, image: np.ndarray, coords: np.ndarray, seed: int):
        if np.random.default_rng([seed, 2]).random() >= self.p:
            return image, coords
        order = flip_permutation(len(coords), self.flip_pairs)
        moved = flip_coords_horizontal(coords, image.shape[-1])[order]
        return np.ascontiguousarray(image[..., ::-1]), moved


class ElasticDeformation:
    """Smooth random warp whose landmark mapping is exact (inverted by fixed-point iteration).

    albumentations' ElasticTransform moved keypoints ~0.9 px away from where the image content
    went (measured on 96x128 dot images), so the deformation is done here: the output pixel p
    samples the input at ``p + d(p)``; a landmark k therefore moves to the p with
    ``p + d(p) = k``, found by iterating ``p <- k - d(p)`` (a contraction, since ``|grad d| < 1``).
    """

    def __init__(self, max_displacement: float, smoothness: float, p: float = 0.5) -> None:
        self.max_displacement = max_displacement
        self.smoothness = smoothness
        self.p = p

    def __call__(self, image: np.ndarray, coords: np.ndarray, seed: int):
        rng = np.random.default_rng(seed)
        if rng.random() >= self.p:
            return image, coords
        height, width = image.shape[:2]
        side = min(height, width)
        sigma = max(self.smoothness * side, 1.0)
        fields = []
        for _ in range(2):
            noise = cv2.GaussianBlur(
                rng.uniform(-1, 1, (height, width)).astype(np.float32), (0, 0), sigma
            )
            fields.append(noise * (self.max_displacement * side / (np.abs(noise).max() + 1e-8)))
        dx, dy = fields
        grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
        warped = cv2.remap(
            image,
            grid_x + dx,
            grid_y + dy,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        moved = np.array(coords, dtype=np.float64)
        finite = np.isfinite(moved).all(axis=1)
        target = moved[finite]
        points = target.copy()
        for _ in range(20):
            sample_x = np.clip(points[:, 0], 0, width - 1).astype(np.float32)[None]
            sample_y = np.clip(points[:, 1], 0, height - 1).astype(np.float32)[None]
            disp_x = cv2.remap(dx, sample_x, sample_y, cv2.INTER_LINEAR)[0]
            disp_y = cv2.remap(dy, sample_x, sample_y, cv2.INTER_LINEAR)[0]
            points = target - np.stack([disp_x, disp_y], axis=1)
        moved[finite] = points
        return warped, moved


class AlbumentationsAugmentation:
    """Wraps an albumentations pipeline with keypoints in the project's x,y convention.

    albumentations' ``"xy"`` keypoints use integer pixel centres (a vertical flip maps
    ``y -> H - 1 - y``), the same convention as utils/coordinates.py, so no conversion is needed.
    """

    def __init__(self, scheme: str, flip_pairs: list[tuple[int, int]] = ()) -> None:
        import albumentations as A

        affine, elastic, flip = _scheme_parts(scheme)
        transforms = [
            A.Affine(
                scale=affine["scale"],
                translate_percent=affine["translate"],
                rotate=affine["rotate"],
                shear=affine["shear"],
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=0.5,
            ),
            *([A.VerticalFlip(p=0.5)] if flip == "vertical" else []),
        ]
        self.elastic = ElasticDeformation(*elastic) if elastic else None
        self.hflip = HorizontalFlip(flip_pairs) if flip == "horizontal" else None
        self.pipeline = A.Compose(
            transforms,
            keypoint_params=A.KeypointParams(
                format="xy", remove_invisible=False, label_fields=["landmark_ids"]
            ),
        )

    def __call__(self, image: np.ndarray, coords: np.ndarray, seed: int):
        self.pipeline.set_random_seed(seed)
        known = np.flatnonzero(np.isfinite(coords).all(axis=1))  # missing ones stay NaN
        out = self.pipeline(image=image, keypoints=coords[known], landmark_ids=known)
        moved = np.full((len(coords), 2), np.nan)
        kept = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)
        moved[np.asarray(out["landmark_ids"], dtype=int)] = kept
        return _after_affine(self, out["image"], moved, seed)


def _after_affine(augmentation, image: np.ndarray, coords: np.ndarray, seed: int):
    """The elastic warp and the horizontal flip of a scheme, after its affine part."""
    if augmentation.elastic is not None:
        image, coords = augmentation.elastic(image, coords, seed + 1)
    if augmentation.hflip is not None:
        image, coords = augmentation.hflip(image, coords, seed)
    return image, coords


class ImgaugAugmentation:
    """The same schemes with imgaug, the original's package (needs NumPy < 2).

    imgaug puts pixel centres at +0.5 (its keypoint (0.5, 0.5) is the centre of pixel [0, 0]),
    so coordinates are shifted by half a pixel on the way in and out.
    """

    def __init__(self, scheme: str, flip_pairs: list[tuple[int, int]] = ()) -> None:
        try:
            import imgaug.augmenters as iaa
        except Exception as err:  # imgaug 0.4 fails on NumPy 2 with AttributeError, not ImportError
            raise ConfigError(
                f"SAMPLER.DATA_AUG_PACKAGE 'imgaug' cannot be used here (import failed: "
                f"{type(err).__name__}: {err}); set SAMPLER.DATA_AUG_PACKAGE albumentations"
            ) from None
        affine, elastic, flip = _scheme_parts(scheme)
        steps = [
            iaa.Sometimes(
                0.5,
                iaa.Affine(
                    scale=affine["scale"],
                    translate_percent={"x": affine["translate"], "y": affine["translate"]},
                    rotate=affine["rotate"],
                    shear=affine["shear"],
                    order=1,
                    mode="constant",
                    cval=0,
                ),
            ),
            *([iaa.Flipud(0.5)] if flip == "vertical" else []),
        ]
        self.elastic = ElasticDeformation(*elastic) if elastic else None
        self.hflip = HorizontalFlip(flip_pairs) if flip == "horizontal" else None
        self.pipeline = iaa.Sequential(steps)

    def __call__(self, image: np.ndarray, coords: np.ndarray, seed: int):
        from imgaug.augmentables.kps import Keypoint, KeypointsOnImage

        known = np.flatnonzero(np.isfinite(coords).all(axis=1))  # missing ones stay NaN
        points = KeypointsOnImage(
            [Keypoint(x=x + 0.5, y=y + 0.5) for x, y in coords[known]], shape=image.shape
        )
        det = self.pipeline.to_deterministic()
        det.seed_(seed)
        image_out, points_out = det(image=image, keypoints=points)
        moved = np.full((len(coords), 2), np.nan)
        moved[known] = np.array([[p.x - 0.5, p.y - 0.5] for p in points_out.keypoints]).reshape(
            -1, 2
        )
        return _after_affine(self, image_out, moved, seed)


def build_augmentation(
    scheme: str | None, package: str, flip_pairs: list[tuple[int, int]] = ()
) -> Augmentation | None:
    """The augmentation for ``SAMPLER.DATA_AUG`` / ``SAMPLER.DATA_AUG_PACKAGE``; None = none.
    ``flip_pairs``: positions of the left/right pairs in ``coords``, swapped by ``HFlip``
    schemes."""
    if scheme in (None, "None", "none", ""):
        return None
    if scheme not in SCHEMES:
        raise ConfigError(
            f"Unknown SAMPLER.DATA_AUG {scheme!r}; available: {[s for s in SCHEMES if s]} or None"
        )
    if package == "albumentations":
        return AlbumentationsAugmentation(scheme, flip_pairs)
    if package == "imgaug":
        return ImgaugAugmentation(scheme, flip_pairs)
    raise ConfigError(f"Unknown SAMPLER.DATA_AUG_PACKAGE {package!r}; use albumentations or imgaug")
