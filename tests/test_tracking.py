"""Tests of tracking/: Comet.ml in offline mode (no network), TensorBoard, the end-to-end run."""

import json
import os
import zipfile
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from torch import nn

from tests.test_main import DEMO_CFG, run_main, tiny_opts
from tracking.base import redact_config
from utils.errors import ConfigError

# Set before comet_ml is imported: it may start error reporting (Sentry) at import time.
os.environ["COMET_ERROR_TRACKING_ENABLE"] = "false"
os.environ["COMET_DISABLE_ANNOUNCEMENT"] = "true"
comet_ml = pytest.importorskip("comet_ml")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Point every Comet endpoint at a closed local port and keep the user's settings out."""
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    for name in ("COMET_URL_OVERRIDE", "COMET_OPTIMIZER_URL", "COMET_OFFLINE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMET_URL_OVERRIDE", "http://127.0.0.1:9/clientlib/")
    monkeypatch.setenv("COMET_OPTIMIZER_URL", "http://127.0.0.1:9/optimizer/")
    monkeypatch.setenv("COMET_CONFIG", str(tmp_path / "no.comet.config"))
    monkeypatch.setenv("COMET_DISABLE_AUTO_LOGGING", "1")
    for name in ("DETAILS", "CPU", "GPU", "HOST", "NETWORK", "DISK"):  # seconds of system probes
        monkeypatch.setenv(f"COMET_AUTO_LOG_ENV_{name}", "false")


def archive_messages(folder: Path) -> list[dict]:
    """The messages of the one offline archive (.zip) in ``folder``."""
    (archive,) = folder.glob("*.zip")
    with zipfile.ZipFile(archive) as z:
        return [json.loads(line) for line in z.read("messages.json").decode().splitlines()]


def metric_steps(messages: list[dict]) -> dict[str, list[int]]:
    steps = defaultdict(list)
    for message in messages:
        if message["type"] == "metric_msg":
            metric = message["payload"]["metric"]
            steps[metric["metricName"]].append(metric["step"])
    return steps


def make_comet(tmp_path, **kwargs):
    from tracking.comet import CometTracker

    options = {"api_key": None, "workspace": "ws", "project_name": "proj", "tags": ["t1"]}
    options.update(offline=True, name="run")
    options.update(kwargs)
    return CometTracker(tmp_path, **options)


def test_comet_offline_records_config_graph_metrics_and_results(tmp_path):
    tracker = make_comet(tmp_path)
    tracker.log_config(
        redact_config({"SOLVER": {"BASE_LR": 0.01}, "OUTPUT": {"COMET_API_KEY": "s"}})
    )
    tracker.log_model(nn.Conv2d(1, 2, 3))
    for epoch in (1, 2, 3):
        row = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": float("nan")}
        tracker.log_epoch({**row, "val_mre_px": 5.0, "lr": 1e-3, "seconds": 0.1})
    results = tmp_path / "results" / "model_best"
    results.mkdir(parents=True)
    summary = pd.DataFrame(
        [{"method": "smha", "landmark": "all", "n": 4, "mre": 2.5, "unit": "px"}]
    )
    summary.to_csv(results / "summary.csv", index=False)
    figure = results / "sdr_curve.png"
    Image.new("RGB", (8, 6)).save(figure)
    tracker.log_results(results, summary, [figure])
    tracker.close()

    messages = archive_messages(tmp_path)
    steps = metric_steps(messages)
    for name in ("train_loss", "val_mre_px", "lr", "seconds"):
        assert steps[name] == [1, 2, 3], name
    assert "val_loss" not in steps  # NaN: not measured, not logged
    assert steps["model_best/smha/mre"] and steps["model_best/smha/n"]
    types = [m["type"] for m in messages]
    assert "graph" in types and "html" in types
    html = next(m["payload"]["html"] for m in messages if m["type"] == "html")
    assert "<table" in html and "model_best" in html
    params = {
        m["payload"]["param"]["paramName"]: m["payload"]["param"]["paramValue"]
        for m in messages
        if m["type"] == "parameter_msg" and "param" in m["payload"]
    }
    assert params["SOLVER.BASE_LR"] == 0.01 and params["OUTPUT.COMET_API_KEY"] == "***"
    uploads = [m["payload"] for m in messages if m["type"] == "file_upload"]
    names = {u["additional_params"].get("fileName") for u in uploads}
    assert {"model_best/summary.csv", "config.yaml"} <= names
    assert "visualization" in {u["upload_type"] for u in uploads}  # comet_ml: an image
    (record,) = tmp_path.glob("comet_experiment_*.txt")
    assert "comet upload" in record.read_text()


def test_unreachable_server_falls_back_to_offline_with_a_warning(tmp_path, monkeypatch, caplog):
    class Unreachable:
        alive = False

        def __init__(self, **kwargs):
            assert kwargs["api_key"] == "key"

        def end(self):
            pass

    monkeypatch.setattr(comet_ml, "Experiment", Unreachable)
    tracker = make_comet(tmp_path, api_key="key", offline=False)
    tracker.log_epoch({"epoch": 1, "train_loss": 1.0})
    tracker.close()
    assert "cannot be reached" in caplog.text
    assert metric_steps(archive_messages(tmp_path))["train_loss"] == [1]


def test_online_without_api_key_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="COMET_API_KEY"):
        make_comet(tmp_path, offline=False)


def test_tiny_run_with_every_output(tiny_data, tmp_path, capsys):
    """Comet offline, TensorBoard, debug figures and all prediction figures in one tiny run."""
    data, out = tiny_data, tmp_path / "run"
    opts = [
        *tiny_opts(data, out, epochs=2),
        "OUTPUT.USE_COMETML_LOGGING", "True",
        "OUTPUT.COMET_OFFLINE", "True",
        "OUTPUT.COMET_TAGS", '["tiny"]',
        "OUTPUT.TENSORBOARD", "True",
        "OUTPUT.PREDICTION_FIGURES", "-1",
        "INFERENCE.DEBUG", "True",
        "SAMPLER.DEBUG", "True",
    ]  # fmt: skip
    code, err = run_main(["--cfg", DEMO_CFG, *opts], capsys)
    assert code == 0, err
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns[:6]) == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_mre_px",
        "lr",
        "seconds",
    ]
    steps = metric_steps(archive_messages(out))
    assert steps["train_loss"] == steps["val_mre_px"] == [1, 2]
    assert steps["model_best/smha/mre"] and steps["model_latest/smha/mre"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("val_mre_px")] == [1, 2]
    assert "model_best/sdr_curve" in events.Tags()["images"]
    ids = sorted(pd.read_csv(out / "results" / "model_best" / "predictions.csv")["id"].unique())
    for kind in ("best", "latest"):
        folder = out / "results" / f"model_{kind}"
        assert sorted(p.stem for p in (folder / "predictions").glob("*.png")) == ids
        assert (folder / "error_boxplot.png").is_file() and (folder / "sdr_curve.png").is_file()
        debug = sorted(p.stem for p in (out / "debug" / f"model_{kind}").glob("*.png"))
        assert debug == ids  # one INFERENCE.DEBUG figure per test image
    with Image.open(out / "results" / "model_best" / "predictions" / f"{ids[0]}.png") as image:
        assert max(image.size) == 800
    assert len(list((out / "debug").glob("training_sample_*.png"))) == 4


def test_online_experiment_url_is_printed_and_saved(tmp_path, monkeypatch, caplog):
    class Online:
        alive, url = True, "https://www.comet.com/ws/proj/abc123"

        def __init__(self, **kwargs):
            self.calls = []

        def __getattr__(self, name):  # set_name, add_tags, log_metric...: recorded, no network
            return lambda *args, **kwargs: self.calls.append(name)

    monkeypatch.setattr(comet_ml, "Experiment", Online)
    caplog.set_level("INFO")
    tracker = make_comet(tmp_path, api_key="key", offline=False)
    tracker.close()
    (record,) = tmp_path.glob("comet_experiment_*.txt")
    assert record.read_text().strip() == Online.url and Online.url in caplog.text
    assert tracker.experiment.calls == ["set_name", "add_tags", "end"]
    assert not list(tmp_path.glob("*.zip"))
