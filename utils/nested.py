"""Network outputs as nested lists, tuples or dicts of tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def map_tensors(fn: Callable[[torch.Tensor], Any], output: Any) -> Any:
    """``fn`` applied to every tensor of a (nested list, tuple or dict of) tensor(s)."""
    if isinstance(output, dict):
        return {key: map_tensors(fn, value) for key, value in output.items()}
    if isinstance(output, list | tuple):
        return type(output)(map_tensors(fn, value) for value in output)
    return fn(output)


def tensor_leaves(output: Any) -> list[torch.Tensor]:
    """The tensors of a nested output, in ``map_tensors``' order."""
    found: list[torch.Tensor] = []
    map_tensors(found.append, output)
    return found


def select_sample(batch_output: Any, row: int) -> Any:
    """Row ``row`` of every tensor in a (nested list, tuple or dict of) batched tensor(s), as
    NumPy arrays."""
    return map_tensors(lambda tensor: tensor[row].float().cpu().numpy(), batch_output)
