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
from transforms.generate_labels import LabelGenerator
from transforms.stitching import fully_convolutional
from utils.coordinates import resize_image

# How a whole image is predicted: "resized" (the network was trained on whole images resized
# to its input), or one of SAMPLER.PATCH.INFERENCE_MODE after patch training.
WHOLE_IMAGE_MODES = ("resized", "fully_convolutional", "patchify_and_stitch", "coarse_to_fine")


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
        tta_flip: also predict the vertically flipped image and average (INFERENCE.TTA_FLIP).
        position_channels: images carry x, y channels after the image (not flipped by TTA).
        mixed_precision: float16 autocast (CUDA only).
        coarse: the coarse model of ``coarse_to_fine``.
    """

    label_generator: LabelGenerator
    mode: str = "resized"
    window_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    batch_size: int = 1
    input_multiple: int = 1
    tta_flip: bool = False
    position_channels: bool = False
    mixed_precision: bool = False
    coarse: CoarseModel | None = None

    def __post_init__(self) -> None:
        if self.mode not in WHOLE_IMAGE_MODES:
            raise ValueError(f"mode must be one of {WHOLE_IMAGE_MODES}, got {self.mode!r}")
        if self.mode == "coarse_to_fine" and self.coarse is None:
            raise ValueError("coarse_to_fine needs a coarse model")

    def autocast(self, device: torch.device) -> AbstractContextManager:
        if self.mixed_precision and device.type == "cuda":
            return torch.autocast(device.type, dtype=torch.float16)
        return nullcontext()

    def __call__(self, network: torch.nn.Module, images: torch.Tensor) -> Any:
        """``network``'s output for (B, C, H, W) images; with ``tta_flip``, averaged with the
        output for the flipped images, flipped back."""
        with self.autocast(images.device):
            output = self.whole(network, images)
            if not self.tta_flip:
                return output
            flipped = self.label_generator.flip_back(self.whole(network, self.flip_input(images)))
        return average_outputs([output, flipped])

    def flip_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images flipped upside down for TTA. Position channels are not flipped:
        they say where each pixel of the flipped image lies, as in training, where they are
        computed after augmentation."""
        if not self.position_channels:
            return images.flip(-2)
        return torch.cat([images[:, :1].flip(-2), images[:, 1:]], dim=1)

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
