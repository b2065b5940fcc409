"""Combining several models' outputs: S-MHA, E-MHA and E-CPV (Schobs et al., TMI 2023)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from inference.uncertainty import coordinate_variance

ENSEMBLE_METHODS = ("smha", "emha", "ecpv")


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


def decode_methods(
    outputs: Sequence[Any],
    original_sizes: torch.Tensor,
    decode: Decoder,
    methods: Sequence[str],
    smha_index: int = 0,
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Coordinates (B, K, 2), uncertainty (B, K) and covariance (B, K, 2, 2) or None per method.

    Args:
        outputs: one network output per ensemble member, for the same batch, in the form in
            which outputs are averaged (the trainer's ``inference_forward`` gives it).
        original_sizes: (B, 2) H, W of the images.
        decode: the trainer's ``get_coords_from_heatmap``.
        methods: any of ``smha`` (member ``smha_index``'s prediction and maximum heatmap
            activation), ``emha`` (prediction and maximum activation of the mean output) and
            ``ecpv`` (mean of the members' coordinates; uncertainty: their variance, pixels²).
    """
    unknown = set(methods) - set(ENSEMBLE_METHODS)
    if unknown:
        raise ValueError(f"unknown ensemble methods {sorted(unknown)}; use {ENSEMBLE_METHODS}")

    def unpack(decoded: tuple):
        return decoded[0], decoded[1], decoded[2] if len(decoded) > 2 else None

    results = {}
    if "smha" in methods:
        results["smha"] = unpack(decode(outputs[smha_index], original_sizes))
    if "emha" in methods:
        mean_output = average_outputs(outputs)
        results["emha"] = unpack(decode(mean_output, original_sizes))
    if "ecpv" in methods:
        member_coords = torch.stack([decode(o, original_sizes)[0] for o in outputs])
        mean, variance = coordinate_variance(member_coords)
        results["ecpv"] = (mean, variance, None)
    return results
