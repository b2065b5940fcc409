"""What an experiment tracker receives from a run, and a group that forwards to several.

The trainer and the predictor call these hooks unconditionally; the base class ignores them, so
a run without Comet.ml or TensorBoard pays nothing. ``metrics.csv`` and ``training_curves.png``
are written by the trainer itself, whatever the trackers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"SOLVER": {"BASE_LR": 0.1}}`` -> ``{"SOLVER.BASE_LR": 0.1}``; the Comet API key is
    replaced by ``"***"`` so that it never reaches a tracker's server or files."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = "***" if name == "OUTPUT.COMET_API_KEY" and value else value
    return flat


class Tracker:
    """Receives a run's config, network, per-epoch metrics and results; this base ignores them."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The flattened config (``SECTION.KEY`` -> value), once at the start."""

    def log_model(self, network: nn.Module) -> None:
        """The network, once it is built (a text summary of its layers)."""

    def log_epoch(self, metrics: Mapping[str, float]) -> None:
        """One row of metrics.csv: ``epoch`` (1-based, the step) and train_loss, val_loss,
        val_mre_px (pixels of the original images), lr, seconds, samples_per_s; NaN = not
        measured (no validation)."""

    def log_results(self, folder: Path, summary: pd.DataFrame, figures: Sequence[Path]) -> None:
        """A results folder after inference: its ``summary`` (summary.csv's rows), its CSV
        files, and the PNG ``figures`` made for it."""

    def close(self) -> None:
        """Flush and finish (Comet's offline archive is written here)."""


class TrackerGroup(Tracker):
    """Forwards every call to each of ``trackers`` in turn."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def log_config(self, config):
        for tracker in self.trackers:
            tracker.log_config(config)

    def log_model(self, network):
        for tracker in self.trackers:
            tracker.log_model(network)

    def log_epoch(self, metrics):
        for tracker in self.trackers:
            tracker.log_epoch(metrics)

    def log_results(self, folder, summary, figures):
        for tracker in self.trackers:
            tracker.log_results(folder, summary, figures)

    def close(self):
        for tracker in self.trackers:
            tracker.close()
