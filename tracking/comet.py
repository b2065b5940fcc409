"""Comet.ml tracking, online or as an offline archive; ``comet_ml`` is imported only here.

Logged: the config (parameters, and config.yaml as an asset), the network's text summary as the
model graph, per-epoch metrics with the epoch as step, each results folder's summary as an HTML
table plus its CSV files as assets and its figures as images.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from torch import nn

from tracking.base import Tracker, flatten_config, measured_metrics
from utils.errors import ConfigError

logger = logging.getLogger(__name__)

# What comet_ml would otherwise collect on its own: we log the config and metrics ourselves,
# and source code, console output and argv are not the run's record.
_EXPERIMENT_OPTIONS = {
    "log_code": False,
    "log_graph": False,
    "parse_args": False,
    "auto_param_logging": False,
    "auto_metric_logging": False,
    "auto_output_logging": False,
    "display_summary_level": 0,
}


def start_experiment(
    comet_ml: Any,
    api_key: str | None,
    workspace: str,
    project_name: str,
    offline: bool,
    offline_directory: Path,
) -> tuple[Any, bool]:
    """A Comet experiment and whether it is offline. An online one that is not alive after
    its start (server unreachable, key refused) is replaced by an offline one, with a warning."""
    if not offline:
        if not api_key:
            raise ConfigError(
                "OUTPUT.USE_COMETML_LOGGING: no API key; set the COMET_API_KEY environment "
                "variable (or OUTPUT.COMET_API_KEY), or OUTPUT.COMET_OFFLINE True"
            )
        experiment = comet_ml.Experiment(
            api_key=api_key, workspace=workspace, project_name=project_name, **_EXPERIMENT_OPTIONS
        )
        if experiment.alive:
            return experiment, False
        logger.warning(
            "Comet.ml: the server cannot be reached or refused the API key; logging offline to "
            "%s instead (upload the archive later with `comet upload`)",
            offline_directory,
        )
        experiment.end()
    experiment = comet_ml.OfflineExperiment(
        workspace=workspace,
        project_name=project_name,
        offline_directory=str(offline_directory),
        **_EXPERIMENT_OPTIONS,
    )
    return experiment, True


class CometTracker(Tracker):
    """One Comet.ml experiment for the run.

    Args:
        output_dir: OUTPUT_DIR; receives ``comet_experiment_<timestamp>.txt`` (the experiment's
            URL, or where the offline archive goes) and, offline, the archive ``<key>.zip``.
        api_key: the Comet API key; may be None only when ``offline``.
        offline: write an offline archive instead of streaming. An online experiment that
            cannot reach the server falls back to this, with a warning.
    """

    def __init__(
        self,
        output_dir: Path,
        api_key: str | None,
        workspace: str,
        project_name: str,
        tags: Sequence[str],
        offline: bool,
        name: str,
    ) -> None:
        if offline:  # a node without network: comet_ml must not try to report its own errors
            os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
        import comet_ml  # optional: only a run with OUTPUT.USE_COMETML_LOGGING True needs it

        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.experiment, self.offline = start_experiment(
            comet_ml, api_key, workspace, project_name, offline, self.output_dir
        )
        self.experiment.set_name(name)
        self.experiment.add_tags(list(tags))
        self.record_file = (
            self.output_dir / f"comet_experiment_{time.strftime('%Y%m%d-%H%M%S')}.txt"
        )
        if self.offline:
            self.archive = self.output_dir / f"{self.experiment.get_key()}.zip"
            self.record_file.write_text(
                f"offline archive (complete when the run ends): {self.archive}\n"
                f"upload it with: comet upload {self.archive}\n"
            )
            logger.info("Comet.ml offline experiment; archive %s at the end", self.archive)
        else:
            self.record_file.write_text(f"{self.experiment.url}\n")
            logger.info(
                "Comet.ml experiment: %s (saved in %s)", self.experiment.url, self.record_file
            )

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.experiment.log_parameters(flatten_config(config))
        self.experiment.log_asset_data(yaml.safe_dump(dict(config)), name="config.yaml")

    def log_model(self, network: nn.Module) -> None:
        self.experiment.set_model_graph(str(network))
        self.experiment.log_other("parameters", sum(p.numel() for p in network.parameters()))

    def log_epoch(self, metrics: Mapping[str, float]) -> None:
        epoch, measured = measured_metrics(metrics)  # NaN: not measured this run
        for name, value in measured.items():
            self.experiment.log_metric(name, value, step=epoch, epoch=epoch)

    def log_results(self, folder: Path, summary: pd.DataFrame, figures: Sequence[Path]) -> None:
        name = folder.name
        table = summary.to_html(index=False, float_format=lambda v: f"{v:.2f}")
        self.experiment.log_html(f"<h3>{name}</h3>\n{table}")
        for path in sorted(folder.glob("*.csv")):
            self.experiment.log_asset(str(path), file_name=f"{name}/{path.name}")
        for path in figures:
            self.experiment.log_image(str(path), name=f"{name}/{path.stem}")
        overall = summary[summary["landmark"] == "all"]
        for _, row in overall.iterrows():
            values = row.drop(["method", "landmark", "unit"]).astype(float)
            for column, value in values.items():
                self.experiment.log_metric(f"{name}/{row['method']}/{column}", value)

    def close(self) -> None:
        self.experiment.end()
        if self.offline:
            logger.info(
                "Comet.ml offline archive: %s (comet upload %s)", self.archive, self.archive
            )
