"""Combining several models' outputs: S-MHA, E-MHA and E-CPV (Schobs et al., TMI 2023), and
the layout-aware ``shape`` measure (inference/layout.py, inference/consistent_decoding.py).

This is the one place where decoded heatmaps meet the shape model: single models, flip TTA
(already averaged into each output) and ensembles all pass through :func:`decode_methods`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from inference.layout import LayoutBatch, LayoutDecoder
from inference.uncertainty import coordinate_variance, shape_uncertainty

ENSEMBLE_METHODS = ("smha", "emha", "ecpv")
METHODS = (*ENSEMBLE_METHODS, "shape")


def average_outputs(outputs: Sequence[Any]) -> Any:
    """Element-wise mean of network outputs of the same structure (tensors, or lists, tuples or
    dicts of them)."""
    first = outputs[0]
    if isinstance(first, dict):
        return {key: average_outputs([o[key] for o in outputs]) for key in first}
    if isinstance(first, list | tuple):
        return type(first)(average_outputs([o[i] for o in outputs]) for i in range(len(first)))
    return torch.stack([o.float() for o in outputs]).mean(dim=0)


Decoder = Callable[[Any, torch.Tensor], tuple]


@dataclass
class MethodDecoding:
    """One method's batch: coords (B, K, 2), uncertainty (B, K), the fitted heatmap covariance
    (B, K, 2, 2) or None; with a shape model, replaced (B, K) bool and the shape model's
    conditional covariance (B, K, 2, 2), in pixels² of the coords' image."""

    coords: torch.Tensor
    uncertainty: torch.Tensor
    covariance: torch.Tensor | None = None
    replaced: torch.Tensor | None = None
    shape_covariance: torch.Tensor | None = None


def decode_methods(
    outputs: Sequence[Any],
    original_sizes: torch.Tensor,
    decode: Decoder,
    methods: Sequence[str],
    smha_index: int = 0,
    layout: LayoutDecoder | None = None,
) -> dict[str, MethodDecoding]:
    """Each method's decoding of a batch.

    Args:
        outputs: one network output per ensemble member, for the same batch, in the form in
            which outputs are averaged (the trainer's ``inference_forward`` gives it).
        original_sizes: (B, 2) H, W of the images.
        decode: the trainer's ``get_coords_from_heatmap``.
        methods: any of ``smha`` (member ``smha_index``'s prediction and maximum heatmap
            activation), ``emha`` (prediction and maximum activation of the mean output),
            ``ecpv`` (mean of the members' coordinates; uncertainty: their variance, pixels²)
            and ``shape`` (the coordinates of ``emha`` if asked for, else of ``smha``;
            uncertainty: :func:`~inference.uncertainty.shape_uncertainty`; needs ``layout``).
        layout: the shape model's decoder; with ``layout.consistent`` every heatmap decoding
            (each member's for ``ecpv``) is corrected by consistent decoding.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown uncertainty methods {sorted(unknown)}; use {METHODS}")
    if "shape" in methods and layout is None:
        raise ValueError("the shape method needs a shape model (layout)")

    def heatmap_method(output: Any) -> tuple[MethodDecoding, LayoutBatch | None]:
        coords, activation, *covariance = decode(output, original_sizes)
        covariance = covariance[0] if covariance else None
        if layout is None:
            return MethodDecoding(coords, activation, covariance), None
        checked = layout(output, original_sizes, coords, activation)
        decoded = MethodDecoding(
            checked.coords, activation, covariance, checked.replaced, checked.covariance
        )
        return decoded, checked

    results: dict[str, MethodDecoding] = {}
    checks: dict[str, LayoutBatch | None] = {}
    if "smha" in methods or ("shape" in methods and "emha" not in methods):
        results["smha"], checks["smha"] = heatmap_method(outputs[smha_index])
    if "emha" in methods:
        results["emha"], checks["emha"] = heatmap_method(average_outputs(outputs))
    if "ecpv" in methods:
        members = [heatmap_method(o)[0] for o in outputs]
        mean, variance = coordinate_variance(torch.stack([m.coords for m in members]))
        replaced = None
        if layout is not None:
            replaced = torch.stack([m.replaced for m in members]).any(dim=0)
        results["ecpv"] = MethodDecoding(mean, variance, None, replaced)
    if "shape" in methods:
        base = "emha" if "emha" in methods else "smha"
        check = checks[base]
        results["shape"] = MethodDecoding(
            results[base].coords,
            shape_uncertainty(check.residual, check.activation),
            results[base].covariance,
            check.replaced,
            check.covariance,
        )
    return {method: results[method] for method in methods}
