"""Model bundles ↔ trainers: exporting checkpoints into one bundle, and predicting with one.

The bundle format is inference/bundle.py; this module builds the trainers (through the index)
that turn a run's checkpoints into a bundle and a bundle back into a
:class:`~inference.predictor.Predictor`, the same one main.py tests with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from yacs.config import CfgNode

from config import auto_keys, saved_cfg
from datasets.dataset_base import read_dataset_json
from datasets.landmark_info import read_landmark_info, select_landmarks
from inference.bundle import BundleMember, BundleSettings, ModelBundle
from inference.evaluation import fit_calibrations
from inference.onnx_export import export_onnx
from inference.predictor import Predictor
from trainer.model_trainer_base import ModelTrainerBase
from trainer.model_trainer_index import build_trainer, load_trainer, predictor_of
from utils.checkpoints import load_checkpoint
from utils.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def landmark_metadata(
    json_path: Path, landmark_ids: Sequence[int]
) -> tuple[list[str] | None, list[list[int]] | None]:
    """The dataset JSON's top-level ``landmark_names`` (one string per coordinate of a
    sample) for ``landmark_ids``, and its ``flip_pairs`` ([a, b] JSON indices) with both
    landmarks among them; None where the JSON has no such key. A malformed value is a
    DataError naming the file."""
    # The reader the datasets use (datasets/landmark_info.py), so a bundle accepts exactly
    # the JSON that training accepted.
    info = read_landmark_info(read_dataset_json(json_path), json_path)
    names, positions = select_landmarks(info, list(landmark_ids), json_path)
    pairs = [[landmark_ids[a], landmark_ids[b]] for a, b in positions] if info.flip_pairs else None
    return names, pairs


def fit_bundle_calibration(
    trainer: ModelTrainerBase, predictor: Predictor, methods: Sequence[str], smha_index: int
) -> tuple[dict[str, dict], str]:
    """Uncertainty calibration (per method, as plain values) fitted on the run's validation
    list as main.py fits it, and a line saying on what."""
    if trainer.inference.evaluation_mode == "use_input_size":
        raise ConfigError(
            "--calibrate: with INFERENCE.EVALUATION_MODE use_input_size the calibration is in "
            "input pixels, but predict.py writes original-image pixels; export a config with "
            "scale_heatmap_first or scale_pred_coords"
        )
    _, calibration_set = trainer.evaluation_sets()
    if calibration_set is None or len(calibration_set) == 0:
        raise DataError(f"{trainer.annotation_file()}: --calibrate needs a validation list")
    table = predictor.tables(calibration_set, methods, smha_index)
    calibrations = fit_calibrations(
        table, trainer.inference.uncertainty_bins, trainer.inference.conformal_alpha
    )
    if not calibrations:
        raise DataError(f"{trainer.annotation_file()}: the validation list is not annotated")
    source = f"{trainer.annotation_file()} validation list, {len(calibration_set)} images"
    return {method: c.to_state() for method, c in calibrations.items()}, source


def export_bundle(
    cfg: CfgNode, checkpoints: Sequence[str | Path], calibrate: bool = False
) -> ModelBundle:
    """A bundle of ``checkpoints`` (one model, or an ensemble) as the run of ``cfg`` (its
    resolved config.yaml) tests them; with ``calibrate``, the uncertainty calibration fitted
    on the run's validation list."""
    remaining = auto_keys(cfg)
    if remaining:
        raise ConfigError(
            f"{remaining} still 'auto': give the run's resolved OUTPUT_DIR/config.yaml"
        )
    if cfg.SAMPLER.SAMPLE_MODE != "full" and cfg.SAMPLER.PATCH.INFERENCE_MODE == "coarse_to_fine":
        raise ConfigError(
            "SAMPLER.PATCH.INFERENCE_MODE coarse_to_fine: bundling the coarse model too is not "
            "built; export with fully_convolutional or patchify_and_stitch"
        )
    trainers = [load_trainer(path, cfg) for path in checkpoints]  # each checked against cfg
    first = trainers[0]
    several = len(checkpoints) > 1
    methods = list(cfg.INFERENCE.ENSEMBLE_UNCERTAINTY_KEYS) if several else ["smha"]
    smha_index = int(cfg.INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX) if several else 0
    if smha_index >= len(checkpoints):
        raise ConfigError(
            f"INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX {smha_index}, but {len(checkpoints)} checkpoints"
        )
    landmark_ids = list(first.landmark_ids)
    names = pairs = None
    try:
        names, pairs = landmark_metadata(first.annotation_file(), landmark_ids)
    except DataError as err:
        if calibrate:
            raise
        logger.warning("no landmark names or flip pairs in the bundle: %s", err)
    calibration, calibration_source = None, ""
    if calibrate:
        predictor = predictor_of(trainers, [str(p) for p in checkpoints])
        calibration, calibration_source = fit_bundle_calibration(
            first, predictor, methods, smha_index
        )
    image_size = first.sampling.image_size
    settings = BundleSettings(
        config=cfg.dump(),
        architecture=cfg.MODEL.ARCHITECTURE,
        methods=methods,
        smha_index=smha_index,
        input_size=None if image_size is None else [int(s) for s in image_size],
        with_position=first.sampling.input_channels == 3,
        default_pixel_size=[float(s) for s in first.data.pixel_size] or None,
        evaluation_mode=first.inference.evaluation_mode,
        decoding=first.inference.decoding,
        fit_gauss=first.inference.fit_gauss,
        landmark_ids=landmark_ids,
        landmark_names=names,
        flip_pairs=pairs,
        calibration=calibration,
        calibration_source=calibration_source,
    )
    members = [
        BundleMember.from_checkpoint(load_checkpoint(path), Path(path).name) for path in checkpoints
    ]
    return ModelBundle(settings, members)


def bundle_config(
    settings: BundleSettings, source: str, device: str, tta: bool, precision: str | None = None
) -> CfgNode:
    """The bundle's config, frozen, on ``device``, with flip TTA if ``tta`` (else as saved) and
    INFERENCE.PRECISION ``precision`` (None: as saved)."""
    cfg = saved_cfg(settings.config, source=source)
    cfg.TRAINER.DEVICE = device
    if tta:
        cfg.INFERENCE.TTA_FLIP = True
    if precision is not None:
        cfg.INFERENCE.PRECISION = precision
    cfg.freeze()
    return cfg


def bundle_predictor(
    bundle: ModelBundle,
    source: str,
    device: str = "auto",
    tta: bool = False,
    batch_size: int | None = None,
    precision: str | None = None,
) -> Predictor:
    """A predictor of ``bundle``'s members (each loaded once), as main.py's
    ``load_predictor`` builds one from checkpoints; ``source`` names the bundle in errors;
    ``tta`` turns flip TTA on (off: as the bundle says); ``batch_size`` None: the run's;
    ``precision`` INFERENCE.PRECISION (None: the run's)."""
    cfg = bundle_config(bundle.settings, source, device, tta, precision)
    trainers = []
    for member in bundle.members:
        trainer = build_trainer(cfg)
        trainer.load_state(member.state, f"{source} ({member.source})", resume_training=False)
        trainer.network.eval()
        trainers.append(trainer)
    return predictor_of(
        trainers, [f"{source} ({m.source})" for m in bundle.members], batch_size, num_workers=0
    )


def export_bundle_onnx(bundle: ModelBundle, source: str, path: str | Path) -> dict:
    """Write ``bundle`` (read from ``source``) as one ONNX graph to ``path``
    (inference/onnx_export.py); returns the graph's metadata."""
    predictor = bundle_predictor(bundle, source, device="cpu")
    return export_onnx(predictor.models, bundle.settings, path)
