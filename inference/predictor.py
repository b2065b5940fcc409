"""Predicting a dataset with one model or an ensemble, and writing its evaluated results.

The trainer supplies what is model-specific (building and loading the network, the forward pass
with optional flip TTA, decoding); the predictor keeps every model's weights in memory, runs each
batch through all of them once, and combines the outputs per method (inference/ensemble.py).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from datasets.dataset_base import DatasetBase
from inference.debug_figures import save_debug_batch
from inference.ensemble import decode_methods
from inference.evaluation import evaluate_and_write
from inference.predictions import Predictions, prediction_table
from utils.errors import CheckpointError, DataError
from utils.image_io import read_image
from utils.result_figures import save_result_figures
from utils.results import unique_results_dir

if TYPE_CHECKING:
    from trainer.model_trainer_base import ModelTrainerBase


logger = logging.getLogger(__name__)


class Predictor:
    """The networks of ``checkpoints`` (same architecture), each loaded once and kept."""

    def __init__(self, trainer: ModelTrainerBase, checkpoints: Sequence[Path]) -> None:
        self.trainer = trainer
        self.networks = []
        landmark_ids = None
        for path in checkpoints:
            trainer.load_checkpoint(path, resume_training=False)
            if landmark_ids is not None and trainer.landmark_ids != landmark_ids:
                raise CheckpointError(
                    f"{path}: predicts landmarks {trainer.landmark_ids}, the "
                    f"ensemble's first model {landmark_ids}"
                )
            landmark_ids = trainer.landmark_ids
            self.networks.append(copy.deepcopy(trainer.network).eval())

    @torch.no_grad()
    def predict(
        self,
        dataset: DatasetBase,
        methods: Sequence[str] = ("smha",),
        smha_index: int = 0,
        debug_folder: Path | None = None,
    ) -> dict[str, Predictions]:
        """Predictions of every sample of ``dataset`` for each method, in the space of
        INFERENCE.EVALUATION_MODE. One network gives ``smha``; several also ``emha``, ``ecpv``.
        With ``debug_folder``, INFERENCE.DEBUG figures of member ``smha_index``'s heatmaps and
        the first method's predictions go there."""
        trainer = self.trainer
        parts: dict[str, list[Predictions]] = {method: [] for method in methods}
        loader = trainer.make_loader(dataset, shuffle=False)
        on_cuda = trainer.device.type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(trainer.device)
        start = time.perf_counter()
        for batch in tqdm(loader, desc="predicting", leave=False, disable=None):
            images = batch["image"].to(trainer.device)
            outputs = [trainer.inference_forward(images, network) for network in self.networks]
            decoded = decode_methods(
                outputs,
                batch["original_size"],
                trainer.get_coords_from_heatmap,
                methods,
                smha_index,
            )
            if debug_folder is not None:
                first = next(iter(decoded.values()))
                save_debug_batch(trainer, dataset, batch, outputs[smha_index], first, debug_folder)
            for method, (coords, uncertainty, covariance) in decoded.items():
                parts[method].append(
                    Predictions(
                        coords=coords.float().cpu().numpy(),
                        uncertainty=uncertainty.float().cpu().numpy(),
                        index=batch["index"].numpy(),
                        original_size=batch["original_size"].numpy(),
                        pixel_size=batch["pixel_size"].numpy(),
                        covariance=None if covariance is None else covariance.float().cpu().numpy(),
                    )
                )
        seconds = time.perf_counter() - start
        logger.info(
            "predicted %d images of %s in %.1f s (%.3f s per image, loading and decoding "
            "included)%s",
            len(dataset),
            dataset.split,
            seconds,
            seconds / max(len(dataset), 1),
            f", peak GPU memory {torch.cuda.max_memory_allocated(trainer.device) / 2**30:.2f} GiB"
            if on_cuda
            else "",
        )
        return {method: Predictions.concatenate(chunks) for method, chunks in parts.items()}

    def tables(
        self,
        dataset: DatasetBase,
        methods: Sequence[str],
        smha_index: int,
        debug_folder: Path | None = None,
    ):
        """``predictions.csv``-style table of ``dataset`` for all methods."""
        trainer = self.trainer
        return pd.concat(
            [
                prediction_table(
                    dataset, predictions, method, trainer.evaluation_mode, trainer.image_size
                )
                for method, predictions in self.predict(
                    dataset, methods, smha_index, debug_folder
                ).items()
            ],
            ignore_index=True,
        )


def run_inference(
    trainer: ModelTrainerBase,
    checkpoints: Sequence[Path],
    test_set: DatasetBase,
    calibration_set: DatasetBase | None = None,
    methods: Sequence[str] = ("smha",),
    smha_index: int = 0,
    name: str | None = None,
) -> Path:
    """Predict ``test_set`` with one checkpoint (method smha) or an ensemble (``methods``),
    calibrate the uncertainty on ``calibration_set`` if given, write the results to
    ``OUTPUT_DIR/results/<name><RESULTS_CSV_APPEND>`` and return that folder."""
    if len(test_set) == 0:
        raise DataError(f"{test_set.json_path}: the testing list is empty")
    predictor = Predictor(trainer, checkpoints)
    trainer.check_landmarks(test_set)
    name = name or Path(checkpoints[0]).stem
    folder = unique_results_dir(trainer.output_dir / "results", f"{name}{trainer.results_append}")
    debug_folder = trainer.output_dir / "debug" / folder.name if trainer.inference_debug else None
    test_table = predictor.tables(test_set, methods, smha_index, debug_folder)
    calibration_table = None
    if calibration_set is not None and len(calibration_set):
        calibration_table = predictor.tables(calibration_set, methods, smha_index)
    table, summary, unit = evaluate_and_write(
        test_table,
        calibration_table,
        folder,
        thresholds=trainer.sdr_thresholds,
        num_bins=trainer.uncertainty_bins,
        alpha=trainer.conformal_alpha,
        title=f"{trainer.dataset_name or test_set.json_path.name}: {name} on "
        f"{len(test_set)} test images",
    )
    figures = save_result_figures(
        table,
        unit,
        folder,
        lambda sample_id: figure_image(test_set, sample_id, trainer.evaluation_mode),
        trainer.prediction_figures,
        trainer.sdr_thresholds,
    )
    trainer.tracker.log_results(folder, summary, figures)
    return folder


def figure_image(dataset: DatasetBase, sample_id: str, evaluation_mode: str) -> np.ndarray:
    """The (H, W) image that a sample's predictions are in: the image file, or the resized
    input with ``use_input_size``."""
    index = next(i for i, sample in enumerate(dataset.samples) if sample.id == sample_id)
    if evaluation_mode == "use_input_size":
        return dataset[index]["image"][0].numpy()
    return read_image(dataset.samples[index].image_path).pixels
