"""The shape model applied to a batch of network outputs (inference/ensemble.py calls it).

:class:`LayoutDecoder` finds each landmark's candidates on the codec's ``candidate_maps``
(transforms/decoding.py ``heatmap_candidates``), maps them into the original image's pixels,
where the shape model lives, runs consistent decoding (inference/consistent_decoding.py) or
only the shape residuals per image, and maps the result back to the pixels of the plain
decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from inference.consistent_decoding import LayoutResult, consistent_decode, shape_residuals
from inference.shape_model import ShapeModel
from transforms.decoding import heatmap_candidates
from utils.coordinates import resize_coords, scale_factors
from utils.errors import CheckpointError


@dataclass
class LayoutBatch:
    """A batch after the layout check, in the pixels of the plain decoding: coords (B, K, 2),
    replaced (B, K) bool, residual (B, K) squared Mahalanobis residuals, covariance
    (B, K, 2, 2) conditional covariances in pixels², activation (B, K) at the chosen points."""

    coords: torch.Tensor
    replaced: torch.Tensor
    residual: torch.Tensor
    covariance: torch.Tensor
    activation: torch.Tensor


@dataclass(frozen=True)
class LayoutDecoder:
    """The shape model applied to a batch of network outputs.

    Args:
        model: the checkpoint's shape model, in pixels of the original images.
        candidate_maps: the codec's ``candidate_maps(output, original_sizes)``: (B, K, h, w)
            maps at input resolution whose local maxima are the candidates.
        consistent: INFERENCE.CONSISTENT_DECODING: replace implausible landmarks; otherwise
            only residuals and covariances of the plain decoding are computed.
        num_candidates: INFERENCE.NUM_CANDIDATES, candidates per landmark (the plain one
            included).
        outlier_p: INFERENCE.SHAPE_OUTLIER_P.
        noise_px: INFERENCE.SHAPE_NOISE_PX, the predictions' localisation noise (std, pixels
            of the original image).
        use_input_size: coordinates are in input pixels (INFERENCE.EVALUATION_MODE
            use_input_size), not in original pixels.
        block: candidates are maxima of blocks of this side (input pixels), at least that
            far apart (transforms/decoding.py ``heatmap_candidates``).
        shape_uncertainty: INFERENCE.SHAPE_UNCERTAINTY: predictors add the ``shape`` method.
    """

    model: ShapeModel
    candidate_maps: Callable[[Any, torch.Tensor], torch.Tensor]
    consistent: bool = False
    num_candidates: int = 5
    outlier_p: float = 1e-3
    noise_px: float = 0.0
    use_input_size: bool = False
    block: int = 8
    shape_uncertainty: bool = False

    @classmethod
    def from_settings(
        cls,
        model: ShapeModel | None,
        candidate_maps: Callable[[Any, torch.Tensor], torch.Tensor],
        inference: Any,
        source: str = "model",
    ) -> LayoutDecoder | None:
        """The decoder that a trainer's ``InferenceSettings`` (trainer/settings.py) ask for:
        None unless INFERENCE.CONSISTENT_DECODING or SHAPE_UNCERTAINTY; a model without a
        shape model (``source``, its checkpoint) is then refused with a CheckpointError."""
        if not (inference.consistent_decoding or inference.shape_uncertainty):
            return None
        if model is None:
            raise CheckpointError(
                f"{source}: has no shape model (saved before shape models, or trained on too "
                "few annotated images); set INFERENCE.CONSISTENT_DECODING and "
                "INFERENCE.SHAPE_UNCERTAINTY False"
            )
        return cls(
            model,
            candidate_maps,
            consistent=inference.consistent_decoding,
            num_candidates=inference.num_candidates,
            outlier_p=inference.shape_outlier_p,
            noise_px=inference.shape_noise_px,
            use_input_size=inference.evaluation_mode == "use_input_size",
            shape_uncertainty=inference.shape_uncertainty,
        )

    def __call__(
        self,
        output: Any,
        original_sizes: torch.Tensor,
        coords: torch.Tensor,
        activation: torch.Tensor,
    ) -> LayoutBatch:
        """Check the plain decoding ``coords`` (B, K, 2) with max activations (B, K) of
        ``output`` against the shape model (and, if ``consistent``, correct it)."""
        maps = None
        if self.consistent or self.use_input_size:  # the maps' size is the input size
            maps = self.candidate_maps(output, original_sizes)
        input_size = None if maps is None else tuple(maps.shape[-2:])
        if self.consistent:
            candidates, values = heatmap_candidates(maps, self.num_candidates, self.block)
            candidates, values = candidates.double().cpu(), values.double().cpu()
        results = []
        for b, size in enumerate(original_sizes.tolist()):
            plain = coords[b].double().cpu().numpy()
            if self.use_input_size:
                plain = resize_coords(plain, input_size, size)
            if self.consistent:
                points = resize_coords(candidates[b].numpy(), input_size, size)
                points[:, 0] = plain
                scores = values[b].numpy().copy()
                scores[:, 0] = activation[b].double().cpu().numpy()
                result = consistent_decode(
                    self.model, points, scores, self.outlier_p, self.noise_px
                )
            else:
                residual, covariance = shape_residuals(self.model, plain, noise_px=self.noise_px)
                result = LayoutResult(
                    plain,
                    np.zeros(len(plain), bool),
                    residual,
                    covariance,
                    activation[b].double().cpu().numpy(),
                )
            if self.use_input_size:
                sx, sy = scale_factors(size, input_size)
                scale = np.array([sx, sy])
                changed = result.replaced
                result.coords[changed] = resize_coords(result.coords[changed], size, input_size)
                result.coords[~changed] = coords[b].double().cpu().numpy()[~changed]
                result.covariance = result.covariance * scale[:, None] * scale[None, :]
            results.append(result)

        def stack(name: str) -> torch.Tensor:
            return torch.from_numpy(np.stack([getattr(r, name) for r in results]))

        return LayoutBatch(
            coords=stack("coords").to(coords) if self.consistent else coords,
            replaced=stack("replaced"),
            residual=stack("residual"),
            covariance=stack("covariance"),
            activation=stack("activation"),
        )
