"""Label generators: codecs between landmark coordinates and what a network outputs.

A label generator owns both directions, as MMPose's codecs do: ``generate_labels`` makes the
training targets from coordinates (encode), and ``decode`` turns a network's output back into
coordinates and a per-landmark uncertainty. It also owns everything in between that depends on
the encoding: its sigma and scale, the form in which outputs are averaged (flip TTA, ensembles),
undoing a flip, stitching windows, and the maps shown in figures. Targets are made on the
training device, per batch, from the (augmented) coordinates the data loader returns, so a
generator is plain torch code; only its ``from_config`` builder reads the config.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from yacs.config import CfgNode

from config import full_resolution_patches
from transforms.candidate_smoothing import candidate_smoothing
from transforms.decoding import HeatmapDecoder
from transforms.stitching import patchify_and_stitch
from utils.coordinates import flip_permutation, resize_coords
from utils.nested import map_tensors
from utils.plotting import save_sample_figure

DEFAULT_DECODER = HeatmapDecoder()  # scale_heatmap_first, dark, no Gaussian fit


FLIP_AXES = {"vertical": -2, "horizontal": -1}  # the tensor dimension a flip reverses


def flip_maps(output: Any, axis: str, flip_pairs: Sequence[Sequence[int]] = ()) -> Any:
    """Every (B, K, ..., h, w) tensor of a (nested) output flipped along ``axis`` ("vertical"
    or "horizontal"); a horizontal flip also swaps the landmark channels (dim 1) of each pair."""
    dim = FLIP_AXES[axis]
    if axis != "horizontal" or not flip_pairs:
        return map_tensors(lambda tensor: tensor.flip(dim), output)

    def flip(tensor: torch.Tensor) -> torch.Tensor:
        order = flip_permutation(tensor.shape[1], flip_pairs)
        return tensor.flip(dim)[:, order]

    return map_tensors(flip, output)


class LabelGenerator(ABC):
    """Turns landmarks into what the model regresses, and its outputs back into landmarks.

    Subclass it for a new kind of target: implement :meth:`generate_labels` and
    :meth:`from_config`; override :meth:`decode` (or :meth:`display_maps`) when the output is
    not one heatmap per landmark, :meth:`to_average` and :meth:`flip_back` when it is not
    averaged or flipped as a heatmap is. Name it in the trainer's ``label_generator_class``.

    Attributes:
        sigma: the target's Gaussian sigma, in pixels of the network input (U-Net) or of its
            output grid (PHD-Net's patches).
        decoder: how heatmaps at input resolution become coordinates (transforms/decoding.py).
    """

    sigma: float
    decoder: HeatmapDecoder = DEFAULT_DECODER

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: CfgNode, network: torch.nn.Module) -> LabelGenerator:
        """The generator for a resolved config and the network it trains (its outputs)."""

    @abstractmethod
    def generate_labels(
        self,
        landmarks: torch.Tensor,
        landmarks_in_indicator: torch.Tensor,
        image_size: Sequence[int],
        x_y_corner_patch: torch.Tensor | None = None,
    ) -> Any:
        """Targets for a batch.

        Args:
            landmarks: (B, K, 2) x,y in pixels of the image the sample was cut from.
            landmarks_in_indicator: (B, K), 1 where the landmark is annotated and inside the
                model input, 0 elsewhere (its target must then carry no landmark).
                A missing landmark has NaN ``landmarks`` and 0 here: it must carry no loss
                (U-Net: its target maps are NaN, which the heatmap losses leave out).
            image_size: (H, W) of the model input.
            x_y_corner_patch: (B, 2) x,y of the input's top-left pixel in that image; None = 0
                (full-image sampling).
        Returns:
            the targets, in the structure the trainer's loss expects.
        """

    def to_average(self, output: Any) -> Any:
        """The form of a network output in which outputs are averaged (flip TTA, E-MHA) and
        stitched; :meth:`decode` accepts it. The default, the output itself, suits heatmaps."""
        return output

    def flip_back(
        self, output: Any, axis: str = "vertical", flip_pairs: Sequence[Sequence[int]] = ()
    ) -> Any:
        """Undo a flip of the input (``axis`` "vertical" or "horizontal") on an output in
        :meth:`to_average`'s form (flip TTA). The default flips every map back, exact in the
        project's convention (y -> H - 1 - y maps pixel centres onto pixel centres), and after
        a horizontal flip swaps the channels of each left/right pair (positions in the
        output's landmarks)."""
        return flip_maps(output, axis, flip_pairs)

    def display_maps(self, output: Any) -> torch.Tensor:
        """(B, K, h, w) maps of an output in :meth:`to_average`'s form: what :meth:`decode`
        finds the maxima of, and what INFERENCE.DEBUG figures show. The default: the first
        tensor of a list or tuple, a dict's ``heatmap``, or the tensor itself."""
        if isinstance(output, dict):
            return output["heatmap"]
        if isinstance(output, list | tuple):
            return output[0]
        return output

    def candidate_maps(self, output: Any, original_sizes: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) maps at the network input's resolution (h, w: the input size, or the
        original size where the model sees whole images at full resolution) whose local
        maxima are each landmark's candidates for consistent decoding; their values are the
        heatmap evidence. The default: :meth:`display_maps`."""
        return self.display_maps(output)

    def decode(self, output: Any, original_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Coordinates of a batch of outputs (in :meth:`to_average`'s form).

        Args:
            output: the network's output for a (B, C, h, w) batch of whole images.
            original_sizes: (B, 2) H, W of each image file.
        Returns:
            coords (B, K, 2) x,y in pixels of each original image (of the input with
            INFERENCE.EVALUATION_MODE use_input_size), an uncertainty (B, K) per landmark (the
            maximum activation: higher is more certain), and optionally covariances
            (B, K, 2, 2) in pixels² of the same image.
        """
        return self.decoder.decode(self.display_maps(output), original_sizes, self.sigma)

    def decoding_sigma(self) -> float | list[float] | None:
        """The sigma (input pixels; a list: one per landmark) with which :meth:`decode` decodes
        :meth:`display_maps` with ``self.decoder``, or None when ``decode`` does more than
        that (then decoding needs this class, e.g. outside PyTorch: ONNX export refuses)."""
        return self.sigma if type(self).decode is LabelGenerator.decode else None

    def stitch_heatmap(
        self,
        forward: Callable[[torch.Tensor], Any],
        image: torch.Tensor,
        window_size: Sequence[int],
        stride: Sequence[int],
        batch_size: int,
        multiple: int,
    ) -> Any:
        """The output for one (1, C, H, W) image stitched from windows of ``window_size``
        ``stride`` apart (``forward`` gives outputs in :meth:`to_average`'s form): by default
        their Gaussian-weighted mean (transforms/stitching.py)."""
        return patchify_and_stitch(forward, image, window_size, stride, batch_size, multiple)

    def debug_sample(
        self, image: np.ndarray, landmarks: np.ndarray, labels: Any, path: Path
    ) -> None:
        """Save a PNG of one sample: ``image`` (H, W), its ``landmarks`` (K, 2) x,y in input
        pixels, and the maximum over landmarks of ``labels[0]`` (K, H, W) on top (a missing
        landmark's NaN target left out)."""
        maps = np.nan_to_num(np.asarray(labels[0]), nan=0.0)
        save_sample_figure(image, landmarks, maps.max(axis=0), path)


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
    the targets carry the gradient to the sigmas. A missing landmark (NaN coordinates) has NaN
    maps at every level: no target, which the heatmap losses (losses/losses.py) leave out.
    """

    def __init__(
        self,
        sigma: float,
        num_levels: int,
        lambda_scale: float = 100.0,
        learned_sigmas: torch.nn.Module | None = None,
        decoder: HeatmapDecoder = DEFAULT_DECODER,
    ) -> None:
        self.sigma = float(sigma)
        self.num_levels = int(num_levels)
        self.lambda_scale = float(lambda_scale)
        self.learned_sigmas = learned_sigmas
        self.decoder = decoder

    @classmethod
    def from_config(cls, cfg: CfgNode, network: torch.nn.Module) -> UNetLabelGenerator:
        """MODEL.GAUSS_SIGMA and HM_LAMBDA_SCALE; one level per supervised network output; the
        network's learned sigmas with SOLVER.REGRESS_SIGMA."""
        return cls(
            sigma=float(cfg.MODEL.GAUSS_SIGMA),
            num_levels=network.num_outputs,
            lambda_scale=float(cfg.MODEL.HM_LAMBDA_SCALE),
            learned_sigmas=network.sigmas if cfg.SOLVER.REGRESS_SIGMA else None,
            decoder=decoder_from_config(cfg),
        )

    def to_average(self, output: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        """Only the finest heatmap is decoded: averaging (TTA, E-MHA) and stitching skip the
        coarser deep-supervision levels."""
        return output[:1]

    def decode(self, output, original_sizes):
        return self.decoder.decode(output[0], original_sizes, self.decoding_sigma())

    def decoding_sigma(self) -> float | list[float]:
        """With learned sigmas, each landmark's decoder window fits its own sigma."""
        if self.learned_sigmas is not None:
            return self.learned_sigmas().detach().cpu().tolist()
        return self.sigma

    def generate_labels(self, landmarks, landmarks_in_indicator, image_size, x_y_corner_patch=None):
        coords = landmarks.float()
        if x_y_corner_patch is not None:
            coords = coords - x_y_corner_patch[:, None, :].to(coords)
        missing = ~torch.isfinite(coords).all(dim=-1)[..., None, None]  # (B, K, 1, 1)
        coords = torch.nan_to_num(coords, nan=-1e4)  # missing landmarks; masked below anyway
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
            labels.append((heatmaps * visible).masked_fill(missing, math.nan))
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
        decoder: HeatmapDecoder = DEFAULT_DECODER,
        image_size: Sequence[int] | None = None,
    ) -> None:
        if class_label_scheme not in CLASS_LABEL_SCHEMES:
            raise ValueError(f"class_label_scheme must be one of {CLASS_LABEL_SCHEMES}")
        self.patch_size = int(patch_size)
        self.sigma = float(sigma)
        self.class_label_scheme = class_label_scheme
        self.log_transform = log_transform
        self.clamp_dist = clamp_dist
        self.decoder = decoder
        # (H, W) of the images predicted whole (SAMPLER.INPUT_SIZE); None: each image's own
        # size (full-resolution patches), where the patch grid may cover padding.
        self.image_size = None if image_size is None else tuple(int(s) for s in image_size)
        self.vote_sigma = self.patch_size / 2  # blur of each displacement vote, input pixels

    @classmethod
    def from_config(cls, cfg: CfgNode, network: torch.nn.Module) -> PHDNetLabelGenerator:
        """The network's patch size; MODEL.GAUSS_SIGMA in patches; MODEL.PHDNET's target keys."""
        phdnet = cfg.MODEL.PHDNET
        full_resolution = full_resolution_patches(
            cfg.SAMPLER.SAMPLE_MODE, cfg.SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM
        )
        return cls(
            patch_size=network.input_multiple,
            sigma=float(cfg.MODEL.GAUSS_SIGMA),
            class_label_scheme=phdnet.CLASS_LABEL_SCHEME,
            log_transform=bool(phdnet.LOG_TRANSFORM_DISPLACEMENTS),
            clamp_dist=None if phdnet.CLAMP_DIST is None else float(phdnet.CLAMP_DIST),
            decoder=decoder_from_config(cfg),
            image_size=None if full_resolution else cfg.SAMPLER.INPUT_SIZE,
        )

    def grid_size(self, image_size: Sequence[int]) -> tuple[int, int]:
        return int(image_size[0]) // self.patch_size, int(image_size[1]) // self.patch_size

    def generate_labels(self, landmarks, landmarks_in_indicator, image_size, x_y_corner_patch=None):
        coords = landmarks.float()
        if x_y_corner_patch is not None:
            coords = coords - x_y_corner_patch[:, None, :].to(coords)
        known = torch.isfinite(coords).all(dim=-1)
        coords = torch.nan_to_num(coords, nan=-1e4)
        visible = landmarks_in_indicator.to(coords) * known  # a missing landmark: no loss
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

    def to_average(self, output: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Probabilities and displacements in patches: averaging logits or log-displacements
        would bias the mean (log-displacements 2 and 4 patches average to 2.9)."""
        if "probability" in output or "offset" in output:
            return output
        decoded = {}
        if "heatmap" in output:
            logits = output["heatmap"].float()
            decoded["probability"] = (
                logits.clamp_min(0)
                if self.class_label_scheme == "gaussian"
                else torch.sigmoid(logits)
            )
        if "displacement" in output:
            decoded["offset"] = decode_displacement(
                output["displacement"].float(), self.log_transform
            )
        return decoded

    def flip_back(self, output, axis="vertical", flip_pairs=()):
        flipped = super().flip_back(output, axis, flip_pairs)  # every map flipped back
        if "offset" in flipped:  # and a downward (rightward) offset becomes an upward one
            sign = [1.0, -1.0] if axis == "vertical" else [-1.0, 1.0]
            sign = torch.tensor(sign, device=flipped["offset"].device)[:, None, None]
            flipped["offset"] = flipped["offset"] * sign
        return flipped

    def display_maps(self, output):
        """The candidate-smoothed maps (B, K, H, W) at input size: what is decoded."""
        decoded = self.to_average(output)
        grid = next(iter(decoded.values())).shape[-2:]
        return candidate_smoothing(
            decoded.get("probability"),
            decoded.get("offset"),
            [side * self.patch_size for side in grid],
            self.vote_sigma,
            weight_votes_by_heatmap=self.class_label_scheme != "gaussian",  # one-hot heatmaps
            max_displacement=self.clamp_dist,
        )

    def decode(self, output, original_sizes):
        """The maximum of the candidate-smoothed map picks each landmark's candidate and gives
        its uncertainty; the sub-pixel position comes from the displacement votes alone near
        that maximum. The smoothed map is the vote density times the upsampled patch heatmap,
        whose slope would pull the maximum towards the nearest patch centre (by up to ~0.4 px
        for 8-pixel patches); the votes of exact outputs meet at the landmark itself."""
        decoded = self.to_average(output)
        smoothed = self.candidate_maps(decoded, original_sizes)
        height, width = smoothed.shape[-2:]
        maps = smoothed
        if (
            "probability" in decoded
            and "offset" in decoded
            and self.class_label_scheme == "gaussian"
        ):
            votes = self.vote_density(decoded)[..., :height, :width]
            near = near_maximum(smoothed, radius=math.ceil(3 * self.vote_sigma) + 2)
            votes = votes * near
            has_votes = votes.flatten(-2).amax(-1) > 0
            maps = torch.where(has_votes[..., None, None], votes, smoothed)
        coords, _, *covariance = self.decoder.decode(maps, original_sizes, sigma=self.vote_sigma)
        return (coords, smoothed.flatten(-2).amax(-1), *covariance)

    def candidate_maps(self, output, original_sizes):
        """The candidate-smoothed maps without the patch grid's padding."""
        height, width = (  # the grid may cover padding
            self.image_size or tuple(int(s) for s in original_sizes[0].tolist())
        )
        return self.display_maps(output)[..., :height, :width]

    def vote_density(self, decoded: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K, H, W) blurred density of the displacement votes alone, at input size."""
        grid = decoded["offset"].shape[-2:]
        return candidate_smoothing(
            None,
            decoded["offset"],
            [side * self.patch_size for side in grid],
            self.vote_sigma,
            max_displacement=self.clamp_dist,
        )

    def debug_sample(self, image, landmarks, labels, path) -> None:
        heatmap = torch.as_tensor(np.asarray(labels["heatmap"]))[None]
        upsampled = F.interpolate(heatmap, size=image.shape, mode="nearest")[0]
        save_sample_figure(image, landmarks, upsampled.max(dim=0).values.numpy(), path)


def near_maximum(maps: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, K, H, W) mask, 1 within ``radius`` pixels (in x and in y) of each map's maximum."""
    height, width = maps.shape[-2:]
    flat_index = maps.flatten(-2).argmax(-1)
    ys, xs = flat_index // width, flat_index % width
    rows = torch.arange(height, device=maps.device)
    columns = torch.arange(width, device=maps.device)
    near_y = (rows - ys[..., None]).abs() <= radius  # (B, K, H)
    near_x = (columns - xs[..., None]).abs() <= radius  # (B, K, W)
    return (near_y[..., :, None] & near_x[..., None, :]).to(maps.dtype)


def decoder_from_config(cfg: CfgNode) -> HeatmapDecoder:
    """INFERENCE.EVALUATION_MODE, DECODING and FIT_GAUSS."""
    return HeatmapDecoder(
        cfg.INFERENCE.EVALUATION_MODE, cfg.INFERENCE.DECODING, bool(cfg.INFERENCE.FIT_GAUSS)
    )
