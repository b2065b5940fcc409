"""Measure consistent decoding and the layout-aware uncertainty on trained checkpoints.

    python scripts/evaluate_consistent_decoding.py --cfg output/run/config.yaml \
        --checkpoints output/run/model_best.model [more.model ...] [--fit-shape-model] \
        [--out table.csv] [--opts KEY VALUE ...]

Predicts the testing list twice, with INFERENCE.CONSISTENT_DECODING off and on (both with
INFERENCE.SHAPE_UNCERTAINTY, so the ``shape`` method is there too), calibrated on the
validation list, and prints per variant and method: MRE, median, SDR at 10/20/40 px, the number
of landmarks more than 40 px off, landmarks replaced, Spearman of the uncertainty with the
error, coverage and mean area (px²) of the conformal circles and of the ellipses (heatmap
covariance with INFERENCE.FIT_GAUSS True, shape model's conditional covariance), and the cost
of the layout step per image (ms). Errors are in pixels of the evaluation space.
Several checkpoints form an ensemble (smha, emha, ecpv and shape). A checkpoint saved before
shape models has none: ``--fit-shape-model`` fits it from the training list as training now
does (the annotations only; no weights change), replacing a checkpoint's own shape model too
(one fitted by an older version).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import load_cfg  # noqa: E402
from config_auto import prepare_config  # noqa: E402
from inference.evaluation import fit_calibrations  # noqa: E402
from inference.predictor import Predictor  # noqa: E402
from inference.shape_model import fit_dataset_shape_model  # noqa: E402
from inference.uncertainty import evaluate_uncertainty, fit_ellipses  # noqa: E402
from trainer.model_trainer_index import load_trainer  # noqa: E402
from utils.errors import CheckpointError, run_command  # noqa: E402


class TimedLayout:
    """A layout decoder that adds up the seconds spent in it and the images it saw."""

    def __init__(self, layout) -> None:
        self.layout, self.seconds, self.images = layout, 0.0, 0

    def __getattr__(self, name):
        return getattr(self.layout, name)

    def __call__(self, output, original_sizes, coords, activation):
        start = time.perf_counter()
        result = self.layout(output, original_sizes, coords, activation)
        self.seconds += time.perf_counter() - start
        self.images += len(original_sizes)
        return result


def error_rows(table: pd.DataFrame) -> list[dict]:
    rows = []
    for method, group in table[table["error_px"].notna()].groupby("method", sort=False):
        errors = group["error_px"].to_numpy(float)
        row = {"method": method, "n": len(errors), "mre": errors.mean()}
        row["median"] = float(np.median(errors))
        for t in (10, 20, 40):
            row[f"sdr_{t}"] = 100 * float((errors <= t).mean())
        row["over_40"] = int((errors > 40).sum())
        if "replaced" in group:
            row["replaced"] = int(group["replaced"].astype(bool).sum())
        rows.append(row)
    return rows


def run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--checkpoints", nargs="+", required=True)
    parser.add_argument("--fit-shape-model", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--opts", nargs="*", default=[], help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg, _ = prepare_config(load_cfg(args.cfg, args.opts))
    trainers = [load_trainer(path, cfg) for path in args.checkpoints]
    for trainer, path in zip(trainers, args.checkpoints, strict=True):
        if trainer.shape_model is None and not args.fit_shape_model:
            raise CheckpointError(f"{path}: has no shape model; add --fit-shape-model")
        if args.fit_shape_model:  # also replaces a checkpoint's own, fitted by older code
            trainer.shape_model = fit_dataset_shape_model(trainer.make_dataset("training"))
    test_set, calibration_set = trainers[0].evaluation_sets()
    methods = ("smha",) if len(trainers) == 1 else ("smha", "emha", "ecpv")
    alpha = float(cfg.INFERENCE.CONFORMAL_ALPHA)
    results = []
    for consistent in (False, True):
        models = []
        for trainer, path in zip(trainers, args.checkpoints, strict=True):
            trainer.inference = dataclasses.replace(
                trainer.inference, consistent_decoding=consistent, shape_uncertainty=True
            )
            model = trainer.inference_model(str(path))
            model.layout = TimedLayout(model.layout)
            models.append(model)
        predictor = Predictor(models, trainers[0].solver.batch_size, trainers[0].data.num_workers)
        table = predictor.tables(test_set, methods, 0)
        timer = models[0].layout
        ms = 1000 * timer.seconds / max(timer.images, 1)
        calibrations, ellipses = {}, {}
        if calibration_set is not None:
            calibration_table = predictor.tables(calibration_set, methods, 0)
            calibrations = fit_calibrations(
                calibration_table, cfg.INFERENCE.UNCERTAINTY_BINS, alpha
            )
            ellipses = fit_ellipses(calibration_table, alpha)
        uncertainty, _ = evaluate_uncertainty(table, calibrations, ellipses)
        merged = pd.DataFrame(error_rows(table)).merge(
            uncertainty.drop(columns=["n", "mre"]), on="method", how="left"
        )
        merged.insert(0, "consistent_decoding", consistent)
        merged["layout_ms_per_image"] = ms
        results.append(merged)
    table = pd.concat(results, ignore_index=True)
    with pd.option_context("display.width", 250, "display.max_columns", 60):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Bad input (a config, checkpoint or dataset) is one line on stderr, exit code 2."""
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
