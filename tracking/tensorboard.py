"""TensorBoard logs in OUTPUT_DIR/tensorboard; ``tensorboard`` is imported only here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from torch import nn

from tracking.base import Tracker, code_block, measured_metrics


class TensorBoardTracker(Tracker):
    """Per-epoch scalars (step = epoch), the config and network as text, each results folder's
    summary as a text table and its figures as images."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.writer.add_text("config", code_block(yaml.safe_dump(dict(config))))

    def log_model(self, network: nn.Module) -> None:
        self.writer.add_text("model", code_block(str(network)))

    def log_epoch(self, metrics: Mapping[str, float]) -> None:
        epoch, measured = measured_metrics(metrics)
        for name, value in measured.items():
            self.writer.add_scalar(name, value, epoch)

    def log_results(self, folder: Path, summary: pd.DataFrame, figures: Sequence[Path]) -> None:
        table = summary.to_string(index=False, float_format=lambda v: f"{v:.2f}")
        self.writer.add_text(f"{folder.name}/summary", code_block(table))
        for path in figures:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image(f"{folder.name}/{path.stem}", pixels, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
