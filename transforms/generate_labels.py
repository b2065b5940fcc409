"""Label generators: landmark coordinates → training targets (``encode``).

Targets are made on the training device, per batch, from the (augmented) coordinates the data
loader returns, so a generator is plain torch code and never sees files or the config.
The matching ``decode`` for heatmaps lives in inference/decoding.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from utils.coordinates import resize_coords


class LabelGenerator(ABC):
    """Turns landmarks into whatever the model regresses.

    Subclass it for a new kind of target, implement :meth:`generate_labels`, and register the class
    in transforms/label_generator_index.py under the architecture's key.
    """

    @abstractmethod
    def generate_labels(
        self,
        landmarks: torch.Tensor,
        landmarks_in_indicator: torch.Tensor,
        image_size: Sequence[int],
        x_y_corner_patch: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Targets for a batch.

        Args:
            landmarks: (B, K, 2) x,y in pixels of the image the sample was cut from.
            landmarks_in_indicator: (B, K), 1 where the landmark is annotated and inside the
                model input, 0 elsewhere (its target must then carry no landmark).
            image_size: (H, W) of the model input.
            x_y_corner_patch: (B, 2) x,y of the input's top-left pixel in that image; None = 0
                (full-image sampling).
        Returns:
            the targets, in the structure the trainer's loss expects.
        """

    def debug_sample(
        self, image: np.ndarray, landmarks: np.ndarray, labels: Sequence[np.ndarray], path: Path
    ) -> None:
        """Save a PNG of one sample: ``image`` (H, W), its ``landmarks`` (K, 2) x,y in input
        pixels, and the maximum over landmarks of ``labels[0]`` (K, H, W) on top."""
        from utils.plotting import save_sample_figure

        save_sample_figure(image, landmarks, np.asarray(labels[0]).max(axis=0), path)


def gaussian_heatmaps(
    centres: torch.Tensor,
    sigma: float | torch.Tensor,
    size: Sequence[int],
    amplitude: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Unnormalised Gaussians ``amplitude * exp(-d^2 / (2 sigma^2))`` at sub-pixel ``centres``.

    Args:
        centres: (B, K, 2) x,y in pixels of the heatmap (not rounded).
        sigma: standard deviation in pixels of the heatmap, one for all or (K,) per landmark.
        size: (H, W) of the heatmap.
        amplitude: the peak, one for all or (K,) per landmark.
    Returns:
        (B, K, H, W) heatmaps, peak ``amplitude`` at a centre that falls on a pixel centre.
    """
    height, width = int(size[0]), int(size[1])
    xs = torch.arange(width, device=centres.device, dtype=centres.dtype)
    ys = torch.arange(height, device=centres.device, dtype=centres.dtype)
    sigma = torch.as_tensor(sigma, device=centres.device, dtype=centres.dtype)
    amplitude = torch.as_tensor(amplitude, device=centres.device, dtype=centres.dtype)
    two_var = 2 * (sigma[..., None] ** 2 if sigma.ndim else sigma**2)
    gx = torch.exp(-((xs - centres[..., 0:1]) ** 2) / two_var)  # (B, K, W)
    gy = torch.exp(-((ys - centres[..., 1:2]) ** 2) / two_var)  # (B, K, H)
    peak = amplitude[..., None, None] if amplitude.ndim else amplitude
    return peak * gy[..., :, None] * gx[..., None, :]


class UNetLabelGenerator(LabelGenerator):
    """One Gaussian heatmap per landmark for each deep-supervision level, finest first.

    Level l has size (H / 2^l, W / 2^l) and sigma ``sigma / 2^l`` (the same Gaussian, seen at a
    coarser resolution); heatmaps peak at ``lambda_scale`` on a background of 0. With
    ``learned_sigmas`` (sigma regression), landmark k's sigma is ``learned_sigmas()[k]`` and its
    peak ``lambda_scale * (sigma / sigma_k)^2`` (constant mass; models/learned_sigmas.py), and
    the targets carry the gradient to the sigmas.
    """

    def __init__(
        self,
        sigma: float,
        num_levels: int,
        lambda_scale: float = 100.0,
        learned_sigmas: torch.nn.Module | None = None,
    ) -> None:
        self.sigma = float(sigma)
        self.num_levels = int(num_levels)
        self.lambda_scale = float(lambda_scale)
        self.learned_sigmas = learned_sigmas

    def generate_labels(self, landmarks, landmarks_in_indicator, image_size, x_y_corner_patch=None):
        coords = landmarks.float()
        if x_y_corner_patch is not None:
            coords = coords - x_y_corner_patch[:, None, :].to(coords)
        coords = torch.nan_to_num(coords, nan=-1e4)  # dropped landmarks; masked below anyway
        visible = landmarks_in_indicator.to(coords)[..., None, None]
        sigma, peak = self.sigma, self.lambda_scale
        if self.learned_sigmas is not None:
            sigma = self.learned_sigmas().to(coords)
            peak = self.lambda_scale * (self.sigma / sigma) ** 2
        height, width = int(image_size[0]), int(image_size[1])
        labels = []
        for level in range(self.num_levels):
            size = (height // 2**level, width // 2**level)
            centres = resize_coords(coords, (height, width), size)
            heatmaps = gaussian_heatmaps(centres, sigma / 2**level, size, peak)
            labels.append(heatmaps * visible)
        return labels


CLASS_LABEL_SCHEMES = ("gaussian", "binary", "binary_weighted")


def encode_displacement(
    displacement: torch.Tensor, log_transform: bool, clamp: float | None
) -> torch.Tensor:
    """Clamp each component to ±``clamp`` patches, then optionally ``sign(d)·log(1 + |d|)``."""
    if clamp is not None:
        displacement = displacement.clamp(-clamp, clamp)
    if log_transform:
        displacement = torch.sign(displacement) * torch.log1p(displacement.abs())
    return displacement


def decode_displacement(encoded: torch.Tensor, log_transform: bool) -> torch.Tensor:
    """Undo :func:`encode_displacement`'s log transform (a clamp cannot be undone)."""
    return torch.sign(encoded) * torch.expm1(encoded.abs()) if log_transform else encoded


class PHDNetLabelGenerator(LabelGenerator):
    """PHD-Net targets on the patch grid of a (H, W) input with square patches of ``patch_size``.

    A patch (i, j) covers input pixels [i·p, (i+1)·p) in x; its centre is the patch-grid point
    (i, j), i.e. input pixel (i + 0.5)·p − 0.5 (utils/coordinates.py's resize mapping). Returns
    a dict: ``heatmap`` (B, K, h, w): a Gaussian of ``sigma`` patches at the landmark's sub-patch
    position (``gaussian``, peak 1) or 1 at the landmark's patch (``binary``,
    ``binary_weighted``); ``displacement`` (B, K, 2, h, w): landmark − patch centre in patches,
    clamped and log-transformed as configured; ``displacement_weight`` (B, K, h, w): the Gaussian
    of ``sigma`` patches, for the displacement loss; ``visible`` (B, K).
    """

    def __init__(
        self,
        patch_size: int,
        sigma: float,
        class_label_scheme: str = "gaussian",
        log_transform: bool = True,
        clamp_dist: float | None = None,
    ) -> None:
        if class_label_scheme not in CLASS_LABEL_SCHEMES:
            raise ValueError(f"class_label_scheme must be one of {CLASS_LABEL_SCHEMES}")
        self.patch_size = int(patch_size)
        self.sigma = float(sigma)
        self.class_label_scheme = class_label_scheme
        self.log_transform = log_transform
        self.clamp_dist = clamp_dist

    def grid_size(self, image_size: Sequence[int]) -> tuple[int, int]:
        return int(image_size[0]) // self.patch_size, int(image_size[1]) // self.patch_size

    def generate_labels(self, landmarks, landmarks_in_indicator, image_size, x_y_corner_patch=None):
        coords = landmarks.float()
        if x_y_corner_patch is not None:
            coords = coords - x_y_corner_patch[:, None, :].to(coords)
        coords = torch.nan_to_num(coords, nan=-1e4)
        visible = landmarks_in_indicator.to(coords)
        grid = self.grid_size(image_size)
        in_patches = resize_coords(coords, tuple(int(s) for s in image_size), grid)  # (B, K, 2)
        ys = torch.arange(grid[0], device=coords.device, dtype=coords.dtype)
        xs = torch.arange(grid[1], device=coords.device, dtype=coords.dtype)
        # Patches near the landmark count most in the displacement loss, whatever the scheme.
        near = gaussian_heatmaps(in_patches, self.sigma, grid)
        if self.class_label_scheme == "gaussian":
            heatmap = near
        else:  # 1 on the patch that contains the landmark
            nearest = torch.stack(
                [
                    torch.round(in_patches[..., 0]).clamp(0, grid[1] - 1),
                    torch.round(in_patches[..., 1]).clamp(0, grid[0] - 1),
                ],
                -1,
            )
            heatmap = (
                (ys[:, None] == nearest[..., 1, None, None])
                & (xs[None, :] == nearest[..., 0, None, None])
            ).to(coords)
        dx = in_patches[..., 0, None, None] - xs[None, None, None, :]  # (B, K, 1, w)
        dy = in_patches[..., 1, None, None] - ys[None, None, :, None]  # (B, K, h, 1)
        displacement = torch.stack(
            [dx.expand(-1, -1, grid[0], -1), dy.expand(-1, -1, -1, grid[1])], dim=2
        )
        displacement = encode_displacement(displacement, self.log_transform, self.clamp_dist)
        return {
            "heatmap": heatmap * visible[..., None, None],
            "displacement": displacement * visible[..., None, None, None],
            "displacement_weight": near * visible[..., None, None],
            "visible": visible,
        }

    def debug_sample(self, image, landmarks, labels, path) -> None:
        import torch.nn.functional as F

        from utils.plotting import save_sample_figure

        heatmap = torch.as_tensor(np.asarray(labels["heatmap"]))[None]
        upsampled = F.interpolate(heatmap, size=image.shape, mode="nearest")[0]
        save_sample_figure(image, landmarks, upsampled.max(dim=0).values.numpy(), path)
