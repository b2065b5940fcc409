"""Predicting a dataset with one model or an ensemble, and writing its evaluated results.

Each :class:`InferenceModel` is a network loaded once, with its whole-image runner (flip TTA,
patches) and its decoder; the predictor runs each batch through all of them and combines the
outputs per method (inference/ensemble.py). It never holds or changes a trainer:
trainer/model_trainer_index.load_predictor builds one from checkpoints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets.dataset_base import DatasetBase
from inference.debug_figures import save_debug_batch
from inference.ensemble import decode_methods
from inference.evaluation import evaluate_and_write
from inference.layout import LayoutDecoder
from inference.predictions import Predictions, prediction_table
from inference.whole_image import WholeImageRunner
from tracking.base import Tracker
from transforms.generate_labels import LabelGenerator
from utils.errors import CheckpointError, DataError
from utils.image_io import read_image
from utils.result_figures import save_result_figures
from utils.results import unique_results_dir

logger = logging.getLogger(__name__)


@dataclass
class InferenceModel:
    """One loaded model: ``network`` in eval mode on ``device``, its ``runner`` for whole
    images, ``decode`` (its trainer's ``get_coords_from_heatmap``), its ``label_generator`` and
    the JSON indices of its landmarks; ``source`` names it in errors (its checkpoint);
    ``layout``, the shape model's decoder when INFERENCE.CONSISTENT_DECODING or
    SHAPE_UNCERTAINTY asks for it (an ensemble uses its first model's). An ONNX model
    (inference/onnx_model.py) has its own runner and no label generator (so no
    INFERENCE.DEBUG figures)."""

    network: torch.nn.Module
    runner: WholeImageRunner
    decode: Callable[[Any, torch.Tensor], tuple]
    label_generator: LabelGenerator | None
    landmark_ids: list[int]
    device: torch.device
    source: str = "model"
    layout: LayoutDecoder | None = None


class Predictor:
    """Several models (same architecture and landmarks), each loaded once and kept.

    Args:
        models: the ensemble's members; one model is a single model.
        batch_size: images per batch (1 after patch training: windows are batched instead).
        num_workers: data loader workers.
    """

    def __init__(
        self, models: Sequence[InferenceModel], batch_size: int = 1, num_workers: int = 0
    ) -> None:
        if not models:
            raise ValueError("a predictor needs at least one model")
        first = models[0]
        for model in models[1:]:
            if model.landmark_ids != first.landmark_ids:
                raise CheckpointError(
                    f"{model.source}: predicts landmarks {model.landmark_ids}, the "
                    f"ensemble's first model {first.landmark_ids}"
                )
        self.models = list(models)
        self.batch_size = batch_size if first.runner.mode == "resized" else 1
        self.num_workers = num_workers

    @property
    def evaluation_mode(self) -> str:
        return self.models[0].label_generator.decoder.evaluation_mode

    def check_dataset(self, dataset: DatasetBase) -> None:
        """Refuse a dataset whose landmarks (JSON indices) are not the models'."""
        ids = dataset.landmarks or list(range(dataset.num_landmarks))
        if ids != list(self.models[0].landmark_ids):
            raise DataError(
                f"{dataset.json_path}: landmarks {ids} (DATASET.LANDMARKS), but the model "
                f"predicts landmarks {list(self.models[0].landmark_ids)}"
            )

    @torch.no_grad()
    def predict(
        self,
        dataset: DatasetBase,
        methods: Sequence[str] = ("smha",),
        smha_index: int = 0,
        debug_folder: Path | None = None,
    ) -> dict[str, Predictions]:
        """Predictions of every sample of ``dataset`` for each method, in the space of
        INFERENCE.EVALUATION_MODE. One model gives ``smha``; several also ``emha``, ``ecpv``;
        INFERENCE.SHAPE_UNCERTAINTY adds ``shape``. With ``debug_folder``, INFERENCE.DEBUG
        figures of member ``smha_index``'s heatmaps and the first method's predictions go
        there."""
        first = self.models[0]
        if first.layout is not None and first.layout.shape_uncertainty and "shape" not in methods:
            methods = (*methods, "shape")
        device = first.device
        parts: dict[str, list[Predictions]] = {method: [] for method in methods}
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
        )
        on_cuda = device.type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for batch in tqdm(loader, desc="predicting", leave=False, disable=None):
            images = batch["image"].to(device)
            outputs = [model.runner(model.network, images) for model in self.models]
            decoded = decode_methods(
                outputs, batch["original_size"], first.decode, methods, smha_index, first.layout
            )
            if debug_folder is not None:
                decoded_first = next(iter(decoded.values()))
                save_debug_batch(
                    first.label_generator.display_maps(outputs[smha_index]),
                    dataset,
                    batch,
                    (decoded_first.coords, decoded_first.uncertainty),
                    self.evaluation_mode,
                    first.landmark_ids,
                    debug_folder,
                )
            for method, result in decoded.items():
                parts[method].append(
                    Predictions(
                        coords=as_numpy(result.coords),
                        uncertainty=as_numpy(result.uncertainty),
                        index=batch["index"].numpy(),
                        original_size=batch["original_size"].numpy(),
                        pixel_size=batch["pixel_size"].numpy(),
                        covariance=as_numpy(result.covariance),
                        replaced=None if result.replaced is None else result.replaced.numpy(),
                        shape_covariance=as_numpy(result.shape_covariance),
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
            f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
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
    ) -> pd.DataFrame:
        """``predictions.csv``-style table of ``dataset`` for all methods."""
        return pd.concat(
            [
                prediction_table(
                    dataset, predictions, method, self.evaluation_mode, dataset.input_size
                )
                for method, predictions in self.predict(
                    dataset, methods, smha_index, debug_folder
                ).items()
            ],
            ignore_index=True,
        )


def as_numpy(tensor: torch.Tensor | None) -> np.ndarray | None:
    """A float32 numpy copy of a tensor on any device; None stays None."""
    return None if tensor is None else tensor.float().cpu().numpy()


@dataclass(frozen=True)
class ResultsSettings:
    """Where and how a results folder is written (plain values of OUTPUT and INFERENCE)."""

    output_dir: Path
    sdr_thresholds: Sequence[float]
    uncertainty_bins: int
    conformal_alpha: float
    results_append: str = ""
    dataset_name: str = ""
    debug: bool = False
    prediction_figures: int = 3

    @classmethod
    def from_settings(cls, inference, output_dir: Path, dataset_name: str) -> ResultsSettings:
        """From a trainer's ``InferenceSettings`` (trainer/settings.py)."""
        return cls(
            output_dir=Path(output_dir),
            sdr_thresholds=inference.sdr_thresholds,
            uncertainty_bins=inference.uncertainty_bins,
            conformal_alpha=inference.conformal_alpha,
            results_append=inference.results_append or "",
            dataset_name=dataset_name,
            debug=inference.debug,
            prediction_figures=inference.prediction_figures,
        )


def run_inference(
    predictor: Predictor,
    test_set: DatasetBase,
    results: ResultsSettings,
    calibration_set: DatasetBase | None = None,
    methods: Sequence[str] = ("smha",),
    smha_index: int = 0,
    name: str = "model",
    tracker: Tracker | None = None,
) -> Path:
    """Predict ``test_set`` with one model (method smha) or an ensemble (``methods``),
    calibrate the uncertainty on ``calibration_set`` if given, write the results to
    ``OUTPUT_DIR/results/<name><RESULTS_CSV_APPEND>`` and return that folder."""
    if len(test_set) == 0:
        raise DataError(f"{test_set.json_path}: the testing list is empty")
    predictor.check_dataset(test_set)
    output_dir = Path(results.output_dir)
    folder = unique_results_dir(output_dir / "results", f"{name}{results.results_append}")
    debug_folder = output_dir / "debug" / folder.name if results.debug else None
    test_table = predictor.tables(test_set, methods, smha_index, debug_folder)
    calibration_table = None
    if calibration_set is not None and len(calibration_set):
        calibration_table = predictor.tables(calibration_set, methods, smha_index)
    table, summary, unit = evaluate_and_write(
        test_table,
        calibration_table,
        folder,
        thresholds=list(results.sdr_thresholds),
        num_bins=results.uncertainty_bins,
        alpha=results.conformal_alpha,
        title=f"{results.dataset_name or test_set.json_path.name}: {name} on "
        f"{len(test_set)} test images",
    )
    evaluation_mode = predictor.evaluation_mode
    figures = save_result_figures(
        table,
        unit,
        folder,
        lambda sample_id: figure_image(test_set, sample_id, evaluation_mode),
        results.prediction_figures,
        list(results.sdr_thresholds),
    )
    (tracker or Tracker()).log_results(folder, summary, figures)
    return folder


def figure_image(dataset: DatasetBase, sample_id: str, evaluation_mode: str) -> np.ndarray:
    """The (H, W) image that a sample's predictions are in: the image file, or the resized
    input with ``use_input_size``."""
    index = next(i for i, sample in enumerate(dataset.samples) if sample.id == sample_id)
    if evaluation_mode == "use_input_size":
        return dataset[index]["image"][0].numpy()
    return read_image(dataset.samples[index].image_path).pixels
