"""What an experiment tracker receives from a run, and a group that forwards to several.

The trainer and the predictor call these hooks unconditionally; the base class ignores them, so
a run without Comet.ml or TensorBoard pays nothing. ``metrics.csv`` and ``training_curves.png``
are written by the trainer itself, whatever the trackers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn


def redact_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a nested config (section -> key -> value) whose Comet API key, if set, is
    ``"***"``, so that the key never reaches a tracker's server or files."""
    copy = {
        key: dict(value) if isinstance(value, Mapping) else value for key, value in config.items()
    }
    if copy.get("OUTPUT", {}).get("COMET_API_KEY"):
        copy["OUTPUT"]["COMET_API_KEY"] = "***"
    return copy


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"SOLVER": {"BASE_LR": 0.1}}`` -> ``{"SOLVER.BASE_LR": 0.1}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Tracker:
    """Receives a run's config, network, per-epoch metrics and results; this base ignores them."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The merged config as nested dicts (section -> key -> value; the API key redacted),
        once at the start."""

    def log_model(self, network: nn.Module) -> None:
        """The network, once it is built (a text summary of its layers)."""

    def log_epoch(self, metrics: Mapping[str, float]) -> None:
        """One row of metrics.csv: ``epoch`` (1-based, the step) and train_loss, val_loss,
        val_mre_px (pixels of the original images), lr, seconds, samples_per_s,
        landmarks_per_sample (landmarks in the average training sample or patch); NaN = not
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


def measured_metrics(metrics: Mapping[str, float]) -> tuple[int, dict[str, float]]:
    """(epoch, the other metrics of a ``metrics.csv`` row that were measured, i.e. not NaN)."""
    measured = {k: v for k, v in metrics.items() if k != "epoch" and not math.isnan(v)}
    return int(metrics["epoch"]), measured


def code_block(text: str) -> str:
    """``text`` indented by four spaces: a Markdown code block (TensorBoard's text panel)."""
    return "\n".join(f"    {line}" for line in text.splitlines())
