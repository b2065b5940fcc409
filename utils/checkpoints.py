"""Checkpoint files: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from utils.errors import CheckpointError

CHECKPOINT_SUFFIX = ".model"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to a temporary file beside ``path``, then rename it into place, so an
    interrupted save never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp's 0600 would hide it from colleagues
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise


def load_torch_file(
    path: str | Path, what: str = "checkpoint", map_location: str | torch.device = "cpu"
) -> Any:
    """``torch.load(path, weights_only=True)`` (tensors and plain values only, no code); a
    missing, corrupt or foreign file raises CheckpointError naming it and ``what`` it is."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load raises many types for a damaged or foreign file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable {what} ({first_line})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; a missing or corrupt file raises CheckpointError naming it."""
    state = load_torch_file(path, "checkpoint", map_location)
    if not isinstance(state, dict) or "network" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a LaNNU-Net checkpoint (no network or config)")
    return state
