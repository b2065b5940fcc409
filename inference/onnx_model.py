"""Running an exported ONNX graph (inference/onnx_export.py) with ONNX Runtime, as a member of
a :class:`~inference.predictor.Predictor`, so that it predicts and writes what a bundle does.

ONNX Runtime is optional: ``pip install -r requirements/requirements-onnx.txt``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inference.bundle import BundleSettings
from inference.onnx_export import METADATA_KEY, ONNX_FORMAT, ONNX_VERSION
from inference.predictor import InferenceModel, Predictor
from transforms.decoding import HeatmapDecoder
from utils.errors import CheckpointError, ConfigError

ONNX_SUFFIX = ".onnx"


class OnnxNetwork(torch.nn.Module):
    """An ONNX Runtime session as a network: (B, C, H, W) images → its ``heatmaps`` output
    (B, K, h, w), on the CPU (the CUDA provider where asked for and installed)."""

    def __init__(self, session: Any, source: str) -> None:
        super().__init__()
        self.session = session
        self.source = source

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feed = {"images": images.detach().float().cpu().numpy()}
        try:
            heatmaps = self.session.run(["heatmaps"], feed)[0]
        except Exception as err:  # onnxruntime's own error types
            raise CheckpointError(
                f"{self.source}: ONNX Runtime failed ({_first_line(err)})"
            ) from None
        return torch.from_numpy(heatmaps).to(images.device)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@dataclass
class OnnxRunner:
    """The whole-image runner of an ONNX graph: flip TTA and averaging are inside it."""

    mode: str = "resized"

    def __call__(self, network: OnnxNetwork, images: torch.Tensor) -> torch.Tensor:
        return network(images)


def _session(path: Path, device: str):
    try:
        import onnxruntime  # optional: only ONNX models need it
    except ImportError:
        raise ConfigError(
            f"{path}: running an ONNX model needs onnxruntime: "
            "pip install -r requirements/requirements-onnx.txt"
        ) from None
    available = onnxruntime.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" not in available:
        raise ConfigError(f"--device {device}: this onnxruntime has no CUDA ({available})")
    use_cuda = device.startswith("cuda") or (
        device == "auto" and "CUDAExecutionProvider" in available
    )
    providers = ["CUDAExecutionProvider"] if use_cuda else []
    try:
        return onnxruntime.InferenceSession(
            str(path), providers=providers + ["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime raises its own types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable ONNX model ({_first_line(err)})") from None


def read_metadata(session: Any, path: Path) -> dict[str, Any]:
    """The ``lannunet`` metadata of an ONNX model; a graph without it is refused."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        metadata = json.loads(text) if text else None
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != ONNX_FORMAT:
        raise CheckpointError(
            f"{path}: not a LaNNU-Net ONNX model (no '{METADATA_KEY}' metadata); export one "
            "with scripts/export_model.py --onnx"
        )
    if not isinstance(metadata.get("format_version"), int) or (
        metadata["format_version"] > ONNX_VERSION
    ):
        raise CheckpointError(
            f"{path}: ONNX format version {metadata.get('format_version')!r}; this LaNNU-Net "
            f"reads up to {ONNX_VERSION}"
        )
    if not isinstance(metadata.get("graph"), dict) or "sigma" not in metadata["graph"]:
        raise CheckpointError(f"{path}: malformed LaNNU-Net ONNX metadata (no graph sigma)")
    return metadata


def onnx_predictor(
    path: str | Path, device: str = "auto", batch_size: int | None = None
) -> tuple[BundleSettings, Predictor, dict[str, Any]]:
    """The settings (their ``methods``: the one the graph gives), a predictor of the ONNX
    model at ``path``, decoding its heatmaps with the bundle's decoder, and the graph's
    metadata. ``batch_size`` None: the run's SOLVER.DATA_LOADER_BATCH_SIZE is not known here,
    so 1."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model not found: {path}")
    session = _session(path, device)
    metadata = read_metadata(session, path)
    graph = metadata["graph"]
    settings = BundleSettings.from_dict(metadata.get("settings"), str(path))
    settings = dataclasses.replace(settings, methods=[graph["method"]], smha_index=0)
    decoder = HeatmapDecoder(settings.evaluation_mode, settings.decoding, settings.fit_gauss)
    sigma = graph["sigma"]

    def decode(heatmaps: torch.Tensor, original_sizes: torch.Tensor) -> tuple:
        return decoder.decode(heatmaps, original_sizes, sigma)

    model = InferenceModel(
        network=OnnxNetwork(session, str(path)),
        runner=OnnxRunner(),
        decode=decode,
        label_generator=None,
        landmark_ids=list(settings.landmark_ids),
        device=torch.device("cpu"),
        source=str(path),
    )
    return settings, Predictor([model], batch_size=batch_size or 1), metadata
