"""A model or ensemble as one ONNX graph, with its decoded coordinates and the bundle's
settings as metadata (run by inference/onnx_model.py, or by anything that runs ONNX).

The graph takes ``images`` (B, C, H, W) float32 (the normalised, resized images the network
is trained on; B is dynamic) and returns

- ``heatmaps`` (B, K, h, w): what the members' outputs average to (one member: its output),
  flip TTA included when the bundle uses it; what LaNNU-Net's decoders read;
- ``coords`` (B, K, 2): x,y of each heatmap's maximum with the quadratic sub-pixel step, in
  pixels of the network input (transforms/decoding.argmax_quadratic);
- ``max_activation`` (B, K): each heatmap's maximum.

The metadata key ``lannunet`` holds JSON: ``format`` ("lannunet-onnx"), ``format_version``,
``settings`` (inference/bundle.BundleSettings) and ``graph`` (the method the graph's heatmaps
give, the decoder's sigma, flip TTA, the input's shape).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from inference.bundle import BundleSettings
from inference.ensemble import average_outputs
from inference.predictor import InferenceModel
from transforms.decoding import argmax_quadratic
from utils.atomic_files import atomic_path, refuse_existing
from utils.errors import ConfigError

logger = logging.getLogger(__name__)

ONNX_FORMAT = "lannunet-onnx"
ONNX_VERSION = 1
METADATA_KEY = "lannunet"
OUTPUT_NAMES = ["heatmaps", "coords", "max_activation"]
OPSET = 18


class ExportGraph(torch.nn.Module):
    """The members' networks run as the predictor runs them on whole resized images (flip
    TTA included), their outputs averaged, decoded to input pixels."""

    def __init__(self, models: Sequence[InferenceModel]) -> None:
        super().__init__()
        self.networks = torch.nn.ModuleList([model.network for model in models])
        self.runner = models[0].runner
        self.codec = models[0].label_generator

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = [self.runner(network, images) for network in self.networks]
        mean = outputs[0] if len(outputs) == 1 else average_outputs(outputs)
        heatmaps = self.codec.display_maps(mean).float()
        coords, peak = argmax_quadratic(heatmaps)
        return heatmaps, coords, peak


def graph_metadata(settings: BundleSettings, models: Sequence[InferenceModel]) -> dict[str, Any]:
    """The ``lannunet`` metadata of the graph of ``models``; refuses a model the graph cannot
    hold (patch inference, a codec that decodes more than heatmaps)."""
    first = models[0]
    if first.runner.mode != "resized" or settings.input_size is None:
        raise ConfigError(
            f"ONNX export supports models that predict whole resized images; this one uses "
            f"{first.runner.mode} inference (its loop over windows is not part of a graph)"
        )
    sigma = first.label_generator.decoding_sigma()
    if sigma is None:
        raise ConfigError(
            f"ONNX export: the {type(first.label_generator).__name__} codec decodes more than "
            "one heatmap per landmark, which only LaNNU-Net can do; predict with the bundle"
        )
    channels = 3 if settings.with_position else 1
    return {
        "format": ONNX_FORMAT,
        "format_version": ONNX_VERSION,
        "settings": asdict(settings),
        "graph": {
            "method": "smha" if len(models) == 1 else "emha",
            "members": len(models),
            "sigma": sigma,
            "tta_flip": bool(first.runner.tta_flip),
            "input_shape": ["batch", channels, *settings.input_size],
            "outputs": OUTPUT_NAMES,
        },
    }


def export_onnx(
    models: Sequence[InferenceModel], settings: BundleSettings, path: str | Path
) -> dict[str, Any]:
    """Write the graph of ``models`` (on the CPU, in eval mode) to ``path`` with a dynamic
    batch axis and the settings as metadata; returns the metadata. Needs the ``onnx`` and
    ``onnxscript`` packages (requirements/requirements-onnx.txt)."""
    try:
        import onnx  # optional: only ONNX export needs it
    except ImportError:
        raise ConfigError(
            "--onnx needs the onnx package: pip install -r requirements/requirements-onnx.txt"
        ) from None
    path = Path(path)
    refuse_existing(path, "--onnx")
    metadata = graph_metadata(settings, models)
    for noisy in ("onnx_ir", "onnxscript"):  # a line per graph optimisation otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    graph = ExportGraph(models).eval()
    channels = metadata["graph"]["input_shape"][1]
    example = torch.zeros(2, channels, *settings.input_size)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), atomic_path(path) as temporary:
        program = torch.onnx.export(
            graph,
            (example,),
            input_names=["images"],
            output_names=OUTPUT_NAMES,
            dynamic_shapes={"images": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
        )
        model = program.model_proto
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.checker.check_model(model)
        onnx.save(model, temporary)
    return metadata
