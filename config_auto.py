"""Resolve the config's "auto" values from the dataset fingerprint and the device.

main.py calls :func:`prepare_config`: the data check (cached), then :func:`resolve_auto_config`
before the trainer is built,
so the trainer, ``OUTPUT_DIR/config.yaml`` and every checkpoint see concrete numbers, and a run
repeats exactly from its config.yaml. The rules themselves are in trainer/auto_rules.py.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from yacs.config import CfgNode

from config import (
    AUTO_ONLY_KEYS,
    auto_keys,
    full_resolution_patches,
    get_cfg_defaults,
    get_value,
    is_auto,
    set_value,
    validate_cfg,
)
from datasets.dataset_base import prepared_annotation_file
from datasets.dataset_index import get_dataset_class
from datasets.fingerprint import Fingerprint, cached_fingerprint, format_report, raise_on_errors
from inference.cross_validation import fold_numbers
from trainer.auto_batch_size import cuda_batch_probe, probe_config
from trainer.auto_rules import (
    AUTO_AUGMENTATIONS,
    GPU_MEMORY_HEADROOM,
    MAX_AUGMENTED_OUTSIDE,
    augmented_outside,
    auto_num_workers,
    choose_augmentation,
    cpu_batch_size,
    search_batch_size,
)
from trainer.model_trainer_index import build_trainer, get_trainer_class
from trainer.planning import network_input_size
from utils.devices import resolve_device
from utils.errors import ConfigError

logger = logging.getLogger(__name__)

# probe(batch size) -> peak bytes (or torch.cuda.OutOfMemoryError), and the memory limit.
BatchProbe = tuple[Callable[[int], int], int]


def available_cpus() -> int:
    """CPU cores this process may run on (the affinity mask, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _resolve_input_size(cfg: CfgNode, fingerprint: Fingerprint) -> tuple[list[int], str]:
    median = fingerprint.median_size()
    budget = int(cfg.SAMPLER.MAX_INPUT_PIXELS)
    size = get_trainer_class(cfg.MODEL.ARCHITECTURE).plan_input_size(cfg, median)
    reason = (
        f"median image {median[0]:g} x {median[1]:g} (aspect H/W "
        f"{fingerprint.median_aspect():.3f}), at most {budget} pixels: {size[0]} x {size[1]} "
        f"(aspect {size[0] / size[1]:.3f}, {size[0] * size[1]} pixels); every image is scaled "
        "per axis to this size"
    )
    patch = [int(s) for s in cfg.SAMPLER.PATCH.SAMPLE_PATCH_SIZE]
    if cfg.SAMPLER.SAMPLE_MODE == "patch_bias" and any(
        p > s for p, s in zip(patch, size, strict=True)
    ):
        raise ConfigError(
            f'SAMPLER.INPUT_SIZE "auto" chose {list(size)}, smaller than the patches '
            f"SAMPLER.PATCH.SAMPLE_PATCH_SIZE {patch}: raise SAMPLER.MAX_INPUT_PIXELS or "
            "give smaller patches"
        )
    aspects = np.array([h / w for h, w in fingerprint.sizes]) / (size[0] / size[1])
    stretched = int(np.sum(np.abs(np.log(aspects)) > np.log(1.1)))
    if stretched:
        reason += (
            f"; {stretched} of {len(aspects)} images differ from its aspect by more than 10 % "
            f"(up to {np.exp(np.abs(np.log(aspects)).max()):.2f}x) and are stretched"
        )
    return list(size), reason


def _resolve_sigma(cfg: CfgNode, fingerprint: Fingerprint) -> tuple[float, str]:
    trainer_class = get_trainer_class(cfg.MODEL.ARCHITECTURE)
    median = fingerprint.median_size()
    whole_input_size = trainer_class.plan_input_size(cfg, median)  # what "auto" would resize to
    landmarks = np.asarray(fingerprint.training_landmarks_rel, dtype=np.float64)
    return trainer_class.plan_sigma(cfg, median, whole_input_size, landmarks)


def _resolve_augmentation(cfg: CfgNode, fingerprint: Fingerprint) -> tuple[str, str]:
    """The strongest scheme without a vertical flip that keeps the training landmarks in the
    image, simulated at the size images are read at, with a horizontal flip when the dataset
    declares flip pairs (trainer/auto_rules.choose_augmentation)."""
    full_resolution = full_resolution_patches(
        cfg.SAMPLER.SAMPLE_MODE, cfg.SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM
    )
    size = fingerprint.median_size() if full_resolution else tuple(cfg.SAMPLER.INPUT_SIZE)
    size = tuple(int(round(s)) for s in size)
    landmarks = np.asarray(fingerprint.training_landmarks_rel, dtype=np.float64)
    outside = {scheme: augmented_outside(scheme, landmarks, size) for scheme in AUTO_AUGMENTATIONS}
    pairs = len(fingerprint.flip_pairs)
    scheme = choose_augmentation(outside, has_flip_pairs=pairs > 0)
    shares = ", ".join(f"{name} {100 * share:.1f} %" for name, share in outside.items())
    flip = (
        f"a horizontal flip that swaps the {pairs} declared flip pairs"
        if pairs
        else "no flip (none is anatomically possible without left/right pairs)"
    )
    return scheme, (
        f"{flip}; landmarks pushed out of the {size[0]} x {size[1]} image: {shares}; the "
        f"strongest within {100 * MAX_AUGMENTED_OUTSIDE:g} % wins"
    )


def _resolve_batch_size(
    cfg: CfgNode, device: torch.device, num_landmarks: int, probe: BatchProbe | None
) -> tuple[int, str]:
    cap = int(cfg.SOLVER.MAX_AUTO_BATCH_SIZE)
    if probe is None and device.type == "cuda":
        probe = cuda_batch_probe(build_trainer(probe_config(cfg, device)), num_landmarks, device)
    if probe is None:
        size = cpu_batch_size(network_input_size(cfg), cap)
        return size, (
            f"device {device.type}: a small batch (8 x 256 x 256 pixels per batch, 2 to "
            f"SOLVER.MAX_AUTO_BATCH_SIZE {cap}) for input {list(network_input_size(cfg))}"
        )
    measure, limit = probe
    size, notes = search_batch_size(measure, limit, cap)
    del probe, measure  # the probe's trainer: free its weights before the real one is built
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
    return size, (
        f"measured forward + backward ({'mixed' if cfg.SOLVER.AUTO_MIXED_PRECISION else 'full'}"
        f" precision) against {limit / 2**30:.1f} GiB free memory with "
        f"{1 - GPU_MEMORY_HEADROOM:.0%} headroom, cap {cap}: " + "; ".join(notes)
    )


def resolve_auto_config(
    cfg: CfgNode,
    fingerprint: Fingerprint,
    device: torch.device,
    batch_probe: BatchProbe | None = None,
    cpu_count: int | None = None,
) -> tuple[CfgNode, list[str]]:
    """A frozen copy of ``cfg`` with every "auto" value replaced by a concrete one.

    Args:
        cfg: a loaded config (config.load_cfg) that may hold "auto" values.
        fingerprint: the training JSON's fingerprint (datasets/fingerprint.py).
        device: the device the run trains on; on CUDA the batch size is measured.
        batch_probe: (probe, memory limit in bytes) to measure batch sizes with instead of the
            CUDA device, e.g. a fake limit in a test; None = CUDA measurement or the CPU rule.
        cpu_count: cores for the worker rule; None = those this process may use.
    Returns:
        the resolved config, and one line per chosen value saying what and why. Keys read only
        by "auto" (SAMPLER.MAX_INPUT_PIXELS, SOLVER.MAX_AUTO_BATCH_SIZE) return to their
        defaults, so the result loads as a plain config; the lines record them.
    """
    resolved = cfg.clone()
    resolved.defrost()
    choices = []

    def choose(key: str, value, reason: str) -> None:
        set_value(resolved, key, value)
        choices.append(f"{key} = {value}: {reason}")

    trainer_class = get_trainer_class(cfg.MODEL.ARCHITECTURE)
    if is_auto(cfg.MODEL.UNET.INIT_FEATURES):  # first: the level planning below builds U-Nets
        num_landmarks = len(fingerprint.landmark_ids)
        choose("MODEL.UNET.INIT_FEATURES", *trainer_class.plan_init_features(cfg, num_landmarks))
    if "SAMPLER.INPUT_SIZE" in auto_keys(cfg):  # not with full-resolution patches: unused
        choose("SAMPLER.INPUT_SIZE", *_resolve_input_size(resolved, fingerprint))
    if is_auto(cfg.MODEL.GAUSS_SIGMA):
        choose("MODEL.GAUSS_SIGMA", *_resolve_sigma(resolved, fingerprint))
    if is_auto(cfg.SOLVER.NUM_RES_SUPERVISIONS):
        choose("SOLVER.NUM_RES_SUPERVISIONS", *trainer_class.plan_supervised_levels(resolved))
    if is_auto(cfg.SAMPLER.DATA_AUG):
        choose("SAMPLER.DATA_AUG", *_resolve_augmentation(resolved, fingerprint))
    if is_auto(cfg.SAMPLER.NUM_WORKERS):
        cpus = available_cpus() if cpu_count is None else cpu_count
        cached = bool(cfg.TRAINER.CACHE_DATA)
        workers = auto_num_workers(cpus, cached, device.type)
        choose(
            "SAMPLER.NUM_WORKERS",
            workers,
            f"{cpus} CPU cores, images {'cached' if cached else 'decoded every time'}, "
            f"device {device.type}",
        )
    if is_auto(cfg.SOLVER.DATA_LOADER_BATCH_SIZE):
        set_value(resolved, "SOLVER.DATA_LOADER_BATCH_SIZE", 1)  # a number for the probe's trainer
        choose(
            "SOLVER.DATA_LOADER_BATCH_SIZE",
            *_resolve_batch_size(resolved, device, fingerprint.num_landmarks, batch_probe),
        )
    defaults = get_cfg_defaults()
    for key in AUTO_ONLY_KEYS:
        set_value(resolved, key, get_value(defaults, key))
    validate_cfg(resolved)
    resolved.freeze()
    return resolved, choices


def annotation_files(cfg: CfgNode) -> list[Path]:
    """The dataset JSON(s) of a run: every fold's with TRAINER.CROSS_VALIDATION, else the one of
    TRAINER.FOLD; the dataset class prepares its data first (the demo generates itself)."""
    dataset_class = get_dataset_class(cfg.DATASET.DATASET_CLASS)
    folds = (
        fold_numbers(cfg.DATASET.SRC_TARGETS)
        if cfg.TRAINER.CROSS_VALIDATION
        else [int(cfg.TRAINER.FOLD)]
    )
    return [
        prepared_annotation_file(dataset_class, cfg.DATASET.ROOT, cfg.DATASET.SRC_TARGETS, fold)
        for fold in folds
    ]


def cache_dir() -> Path:
    """Where fingerprints are cached: $LANNUNET_CACHE_DIR, else $XDG_CACHE_HOME/lannunet, else
    ~/.cache/lannunet. Not OUTPUT_DIR (a refused run writes nothing there), and not next to the
    data (often read-only); the key holds the JSON's path, so datasets never mix."""
    if os.environ.get("LANNUNET_CACHE_DIR"):
        return Path(os.environ["LANNUNET_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lannunet"


def dataset_fingerprint(cfg: CfgNode, json_path: Path, refresh: bool = False) -> Fingerprint:
    """The fingerprint of ``json_path`` as the config reads it, cached in :func:`cache_dir` by
    the files' paths, modification times and sizes."""
    dataset_class = get_dataset_class(cfg.DATASET.DATASET_CLASS)
    return cached_fingerprint(
        json_path,
        cfg.DATASET.ROOT,
        cache_dir(),
        landmarks=list(cfg.DATASET.LANDMARKS),
        default_pixel_size=tuple(cfg.DATASET.PIXEL_SIZE) or None,
        attribute_keys=list(dataset_class.additional_sample_attribute_keys),
        refresh=refresh,
    )


def check_data(cfg: CfgNode) -> None:
    """``--check-data``: read every sample of the run's JSON(s), log the report, and raise
    DataError (exit status 2) if any file has errors."""
    fingerprints = [dataset_fingerprint(cfg, path, refresh=True) for path in annotation_files(cfg)]
    for fingerprint in fingerprints:
        logger.info("%s", format_report(fingerprint))
    for fingerprint in fingerprints:
        raise_on_errors(fingerprint)


def prepare_config(cfg: CfgNode) -> tuple[CfgNode, list[str]]:
    """Check the run's JSON(s) (cached) and resolve the "auto" values: the config the trainer gets,
    and lines for the log (the data summary, its warnings, each value chosen and why).

    Raises DataError naming the first defect if the data check finds errors."""
    get_trainer_class(cfg.MODEL.ARCHITECTURE).check_config(cfg)  # before reading any data
    fingerprints = [dataset_fingerprint(cfg, path) for path in annotation_files(cfg)]
    lines = []
    for fingerprint in fingerprints:
        raise_on_errors(fingerprint)
        lines += format_report(fingerprint).splitlines()
    # Cross-validation plans once, from the first fold's file, so that every fold trains alike.
    fingerprint = fingerprints[0]
    if not auto_keys(cfg):
        return cfg, lines
    resolved, choices = resolve_auto_config(cfg, fingerprint, resolve_device(cfg.TRAINER.DEVICE))
    return resolved, lines + [f"auto: {choice}" for choice in choices]
