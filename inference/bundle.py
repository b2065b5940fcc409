"""Model bundles: one file that holds everything needed to predict with a trained model.

A bundle (``.lannu``) is written with ``torch.save`` and read with ``torch.load(...,
weights_only=True)``: a dict of tensors and plain values (str, int, float, bool, None, lists
and dicts of them), never pickled code. It holds

- ``format`` (``"lannunet-model-bundle"``) and ``format_version``;
- ``settings`` (:class:`BundleSettings`, plain values): the run's config as YAML (architecture,
  codec, input size, evaluation mode, decoder, flip TTA...), the ensemble methods, the image
  settings, landmark ids, names and flip pairs, and the uncertainty calibration if fitted;
- ``members``: one entry per checkpoint, ``{"source": file name, "state": ...}`` where
  ``state`` is the checkpoint's dict without its training-only entries (TRAINING_ONLY_KEYS:
  optimizer and gradient-scaler state). Every other entry is kept as it is, so a checkpoint
  that carries more than the network (e.g. a learned shape model under its own key, as tensors
  and plain values) keeps it in the bundle, and the trainer that loads the member sees it.

trainer/model_bundles.py writes bundles from checkpoints and builds predictors from them.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from utils.atomic_files import refuse_existing
from utils.checkpoints import load_torch_file, save_checkpoint
from utils.errors import CheckpointError

BUNDLE_FORMAT = "lannunet-model-bundle"
BUNDLE_VERSION = 1
BUNDLE_SUFFIX = ".lannu"
TRAINING_ONLY_KEYS = ("optimizer", "scaler")


@dataclass
class BundleSettings:
    """What a bundle says about its model, as plain values (also the ONNX metadata).

    Attributes:
        config: the run's config as YAML text; its inference keys (evaluation mode, decoder,
            flip TTA, Gaussian fit) are how the bundle predicts.
        architecture: MODEL.ARCHITECTURE.
        methods: the predictions written: ``["smha"]`` for one model, the ensemble's
            INFERENCE.ENSEMBLE_UNCERTAINTY_KEYS for several.
        smha_index: the member whose heatmap gives S-MHA.
        input_size: (H, W) the images are resized to before the network; None = their
            original size (patch models at full resolution).
        with_position: the network also gets each pixel's x, y channels.
        default_pixel_size: [x, y] mm per pixel of images whose file stores none
            (DATASET.PIXEL_SIZE of the run), or None.
        evaluation_mode, decoding, fit_gauss: INFERENCE.EVALUATION_MODE, DECODING, FIT_GAUSS.
        landmark_ids: the JSON indices of the predicted landmarks.
        landmark_names: their names (the dataset JSON's ``landmark_names``), or None.
        flip_pairs: pairs of JSON indices that swap under a left-right flip (the dataset
            JSON's ``flip_pairs``, those among ``landmark_ids``), or None.
        calibration: per method, UncertaintyCalibration.to_state(); None when not fitted.
        calibration_source: what it was fitted on (JSON file and split, number of images).
    """

    config: str
    architecture: str
    methods: list[str]
    smha_index: int
    input_size: list[int] | None
    with_position: bool
    default_pixel_size: list[float] | None
    evaluation_mode: str
    decoding: str
    fit_gauss: bool
    landmark_ids: list[int]
    landmark_names: list[str] | None = None
    flip_pairs: list[list[int]] | None = None
    calibration: dict[str, dict] | None = None
    calibration_source: str = ""

    @classmethod
    def from_dict(cls, values: Any, source: str) -> BundleSettings:
        """Settings read from a bundle or ONNX metadata; a missing or unknown key is a
        CheckpointError naming ``source``."""
        if not isinstance(values, dict):
            raise CheckpointError(f"{source}: malformed model bundle (settings are not a dict)")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(required - set(values))
        unknown = sorted(set(values) - names)
        if missing or unknown:
            raise CheckpointError(
                f"{source}: malformed model bundle settings (missing {missing}, unknown "
                f"{unknown}); export it again with scripts/export_model.py"
            )
        return cls(**values)

    @property
    def num_landmarks(self) -> int:
        return len(self.landmark_ids)


@dataclass
class BundleMember:
    """One network of a bundle: ``source`` (the checkpoint's file name) and ``state`` (the
    checkpoint without TRAINING_ONLY_KEYS)."""

    source: str
    state: dict[str, Any] = field(repr=False)

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], source: str) -> BundleMember:
        """A member from a checkpoint read with ``weights_only=True``; every entry but the
        training-only ones is kept, tensors moved to the CPU."""
        kept = {key: value for key, value in state.items() if key not in TRAINING_ONLY_KEYS}
        return cls(source=source, state=_to_cpu(kept))


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return type(value)((k, _to_cpu(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


@dataclass
class ModelBundle:
    """A model or an ensemble ready to predict: its settings and members."""

    settings: BundleSettings
    members: list[BundleMember]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "settings": asdict(self.settings),
            "members": [{"source": m.source, "state": m.state} for m in self.members],
        }


def save_bundle(bundle: ModelBundle, path: str | Path) -> None:
    """Write ``bundle`` to ``path`` atomically (never a half-written file); an existing file is
    refused, so an earlier bundle is never overwritten."""
    refuse_existing(path, "--output")
    save_checkpoint(bundle.to_dict(), Path(path))


def load_bundle(path: str | Path) -> ModelBundle:
    """Read a bundle written by :func:`save_bundle`; a missing, corrupt or foreign file (a
    checkpoint, another program's file) raises CheckpointError naming it, in one line."""
    content = load_torch_file(path, "model bundle")
    if not isinstance(content, dict) or content.get("format") != BUNDLE_FORMAT:
        hint = ""
        if isinstance(content, dict) and "network" in content and "config" in content:
            hint = " (it is a training checkpoint: bundle it with scripts/export_model.py)"
        raise CheckpointError(f"{path}: not a LaNNU-Net model bundle{hint}")
    version = content.get("format_version")
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise CheckpointError(
            f"{path}: bundle format version {version!r}; this LaNNU-Net reads up to "
            f"{BUNDLE_VERSION} (update LaNNU-Net)"
        )
    settings = BundleSettings.from_dict(content.get("settings"), str(path))
    members = content.get("members")
    if (
        not isinstance(members, list)
        or not members
        or not all(
            isinstance(m, dict) and isinstance(m.get("state"), dict) and "network" in m["state"]
            for m in members
        )
    ):
        raise CheckpointError(f"{path}: malformed model bundle (no members with weights)")
    if not 0 <= settings.smha_index < len(members):
        raise CheckpointError(
            f"{path}: smha_index {settings.smha_index} but {len(members)} member(s)"
        )
    return ModelBundle(
        settings,
        [
            BundleMember(str(m.get("source", f"member {i}")), m["state"])
            for i, m in enumerate(members)
        ],
    )
