"""Experiment tracking: Comet.ml and TensorBoard behind one small interface (tracking/base.py).

``open_tracker(cfg)`` is the only place that reads the tracking config keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from yacs.config import CfgNode

from tracking.base import Tracker, TrackerGroup, flatten_config, redact_config

__all__ = [
    "Tracker",
    "TrackerGroup",
    "build_tracker",
    "flatten_config",
    "open_tracker",
    "redact_config",
]


def build_tracker(cfg: CfgNode | None) -> Tracker:
    """The trackers that OUTPUT.USE_COMETML_LOGGING and OUTPUT.TENSORBOARD ask for, as one
    tracker, with the config already logged. The Comet API key comes from OUTPUT.COMET_API_KEY
    or, when that is None, the COMET_API_KEY environment variable. ``cfg`` None (the ranks other
    than 0 of a distributed run): a tracker that records nothing."""
    if cfg is None:
        return Tracker()
    output_dir = Path(cfg.OUTPUT.OUTPUT_DIR)
    trackers: list[Tracker] = []
    if cfg.OUTPUT.USE_COMETML_LOGGING:
        from tracking.comet import CometTracker

        trackers.append(
            CometTracker(
                output_dir,
                api_key=cfg.OUTPUT.COMET_API_KEY or os.environ.get("COMET_API_KEY"),
                workspace=cfg.OUTPUT.COMET_WORKSPACE,
                project_name=cfg.OUTPUT.COMET_PROJECT_NAME,
                tags=list(cfg.OUTPUT.COMET_TAGS),
                offline=bool(cfg.OUTPUT.COMET_OFFLINE),
                name=output_dir.as_posix(),
            )
        )
    if cfg.OUTPUT.TENSORBOARD:
        from tracking.tensorboard import TensorBoardTracker

        trackers.append(TensorBoardTracker(output_dir / "tensorboard"))
    tracker = TrackerGroup(trackers)
    tracker.log_config(redact_config(yaml.safe_load(cfg.dump())))
    return tracker


@contextmanager
def open_tracker(cfg: CfgNode | None) -> Iterator[Tracker]:
    """:func:`build_tracker`, closed (Comet's experiment ended) however the run ends."""
    tracker = build_tracker(cfg)
    try:
        yield tracker
    finally:
        tracker.close()
