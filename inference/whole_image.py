"""Running a trained network on whole images: resized, fully convolutional, stitched from
windows, or coarse-to-fine; with optional flip TTA.

A :class:`WholeImageRunner` holds plain values and the model's label generator (which says how
outputs are averaged, flipped back and stitched); it is given the network at each call, so one
runner serves a trainer's validation and a predictor's ensemble alike.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from inference.coarse_to_fine import refine_around_candidates
from inference.ensemble import average_outputs
from transforms.dataloader_transforms import flip_axis
from transforms.generate_labels import FLIP_AXES, LabelGenerator
from transforms.stitching import fully_convolutional
from utils.coordinates import resize_image
from utils.errors import ConfigError

# The precisions of forward passes (INFERENCE.PRECISION).
PRECISIONS = ("float32", "bfloat16")
# How a whole image is predicted: "resized" (the network was trained on whole images resized
# to its input), or one of SAMPLER.PATCH.INFERENCE_MODE after patch training.
WHOLE_IMAGE_MODES = ("resized", "fully_convolutional", "patchify_and_stitch", "coarse_to_fine")


def tta_flip_axis(tta_flip: bool, trained_augmentation: str | None) -> str:
    """The axis INFERENCE.TTA_FLIP (``tta_flip``) flips: the one the model was trained to see
    flipped (``trained_augmentation``: its SAMPLER.DATA_AUG); "vertical" (unused) without TTA.
    TTA for a model trained without flips is refused, since a flipped image would be one it
    never saw (a skull upside down)."""
    axis = flip_axis(trained_augmentation)
    if tta_flip and axis is None:
        raise ConfigError(
            f"INFERENCE.TTA_FLIP True, but the model was trained without flips (SAMPLER.DATA_AUG "
            f"{trained_augmentation!r}); set INFERENCE.TTA_FLIP False, or train with a flipping "
            "scheme (an HFlip one with the dataset's flip_pairs)"
        )
    return axis or "vertical"


@dataclass
class CoarseModel:
    """A model trained on whole resized images, whose predictions place the windows of
    coarse-to-fine inference.

    Attributes:
        network: in eval mode, on ``device``.
        runner: its whole-image runner (mode ``resized``).
        decode: ``get_coords_from_heatmap`` of its trainer, decoding into the pixels of the
            size it is given (INFERENCE.EVALUATION_MODE scale_heatmap_first).
        input_size: (H, W) its images are resized to.
        landmark_ids: the JSON indices of its landmarks.
    """

    network: torch.nn.Module
    runner: WholeImageRunner
    decode: Callable[[Any, torch.Tensor], tuple]
    input_size: tuple[int, int]
    landmark_ids: list[int]

    @torch.no_grad()
    def candidates(self, image: torch.Tensor) -> np.ndarray:
        """(K, 2) x,y of each landmark in pixels of the (1, C, H, W) ``image`` (its first
        channel), predicted on the image resized to this model's input."""
        small = resize_image(image[0, 0].float().cpu().numpy(), self.input_size)
        small = torch.from_numpy(small)[None, None].to(image.device)
        whole_size = torch.tensor([image.shape[-2:]])  # decode straight into this image's pixels
        coords = self.decode(self.runner(self.network, small), whole_size)[0]
        return coords[0].float().cpu().numpy()


@dataclass
class WholeImageRunner:
    """Outputs (in the label generator's ``to_average`` form) of a network for whole images.

    Attributes:
        label_generator: the model's codec (averaging, flipping back, stitching).
        mode: one of WHOLE_IMAGE_MODES.
        window_size: (h, w) of the training patches (patch modes).
        stride: (y, x) step between stitched windows; () = half a window, rounded down to
            ``input_multiple``.
        batch_size: windows per forward pass (patch modes).
        input_multiple: the network's total down-sampling; images are padded to it.
        tta_flip: also predict the flipped image and average (INFERENCE.TTA_FLIP).
        flip_axis: "vertical" or "horizontal": the flip of TTA (the training flip).
        flip_pairs: positions of the left/right landmark pairs, swapped back after a
            horizontal flip.
        position_channels: images carry x, y channels after the image (not flipped by TTA).
        mixed_precision: float16 autocast (CUDA only; SOLVER.AUTO_MIXED_PRECISION).
        precision: "float32", or "bfloat16" to autocast forward passes to bfloat16 on any
            device (INFERENCE.PRECISION); outputs are returned as float32 either way.
        coarse: the coarse model of ``coarse_to_fine``.
    """

    label_generator: LabelGenerator
    mode: str = "resized"
    window_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    batch_size: int = 1
    input_multiple: int = 1
    tta_flip: bool = False
    flip_axis: str = "vertical"
    flip_pairs: tuple[tuple[int, int], ...] = ()
    position_channels: bool = False
    mixed_precision: bool = False
    precision: str = "float32"
    coarse: CoarseModel | None = None

    def __post_init__(self) -> None:
        if self.mode not in WHOLE_IMAGE_MODES:
            raise ValueError(f"mode must be one of {WHOLE_IMAGE_MODES}, got {self.mode!r}")
        if self.mode == "coarse_to_fine" and self.coarse is None:
            raise ValueError("coarse_to_fine needs a coarse model")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.flip_axis not in FLIP_AXES:
            raise ValueError(f"flip_axis must be one of {list(FLIP_AXES)}, got {self.flip_axis!r}")

    def autocast(self, device: torch.device) -> AbstractContextManager:
        if self.precision == "bfloat16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        if self.mixed_precision and device.type == "cuda":
            return torch.autocast(device.type, dtype=torch.float16)
        return nullcontext()

    def __call__(self, network: torch.nn.Module, images: torch.Tensor) -> Any:
        """``network``'s output for (B, C, H, W) images; with ``tta_flip``, averaged with the
        output for the flipped images, flipped back."""
        with self.autocast(images.device):
            output = self.whole(network, images)
            if not self.tta_flip:
                # the "average" of one output is its float32 copy, as the decoders expect
                return average_outputs([output]) if self.precision == "bfloat16" else output
            flipped = self.label_generator.flip_back(
                self.whole(network, self.flip_input(images)), self.flip_axis, self.flip_pairs
            )
        return average_outputs([output, flipped])

    def flip_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images flipped along ``flip_axis`` for TTA. Position channels are not
        flipped: they say where each pixel of the flipped image lies, as in training, where
        they are computed after augmentation."""
        dim = FLIP_AXES[self.flip_axis]
        if not self.position_channels:
            return images.flip(dim)
        return torch.cat([images[:, :1].flip(dim), images[:, 1:]], dim=1)

    def whole(self, network: torch.nn.Module, images: torch.Tensor) -> Any:
        """One forward pass per image (or window), no TTA; patch modes take one image at a
        time."""
        codec = self.label_generator

        def forward(windows: torch.Tensor) -> Any:
            return codec.to_average(network(windows))

        if self.mode == "resized":
            return forward(images)
        if self.mode == "fully_convolutional":
            return fully_convolutional(forward, images, self.input_multiple)
        if self.mode == "coarse_to_fine":
            return refine_around_candidates(
                forward,
                images,
                self.coarse.candidates(images),
                self.window_size,
                self.batch_size,
                self.input_multiple,
            )
        return codec.stitch_heatmap(
            forward,
            images,
            self.window_size,
            self.stitch_stride(),
            self.batch_size,
            self.input_multiple,
        )

    def stitch_stride(self) -> tuple[int, int]:
        """``stride``, or half the window rounded down to ``input_multiple``."""
        if self.stride:
            return tuple(self.stride)
        m = self.input_multiple
        return tuple(max(m, side // 2 // m * m) for side in self.window_size)
