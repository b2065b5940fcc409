"""Seconds and peak memory of one whole-image prediction, as a config's inference runs it.

python scripts/benchmark_inference.py --cfg configs/examples/cephalometric_patches.yaml
    [--landmarks 19] [--image-size 1671 1340] [--repeats 3] [KEY VALUE ...]

Builds the config's trainer on TRAINER.DEVICE with untrained weights (speed and memory do not
depend on them), and times ``inference_forward`` + decoding of one random image: at
SAMPLER.INPUT_SIZE for whole-image models, at ``--image-size`` (or INPUT_SIZE with
RESOLUTION_TO_SAMPLE_FROM input_size) after patch training, stitched or fully convolutional as
SAMPLER.PATCH.INFERENCE_MODE says. Image loading and resizing are not included: the predictor's
log ("s per image, loading and decoding included") measures a real run. Peak memory: CUDA
``max_memory_allocated``; CPU the growth of the process's peak resident memory over what it held
before the first prediction (``resource.getrusage``; Linux).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from config import load_cfg  # noqa: E402
from inference.timing import time_whole_image_prediction  # noqa: E402
from trainer.model_trainer_index import build_trainer  # noqa: E402
from utils.errors import run_command  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--landmarks", type=int, default=19)
    parser.add_argument("--image-size", type=int, nargs=2, default=[1671, 1340], metavar="H W")
    parser.add_argument("--repeats", type=int, default=3, help="timed predictions after one")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_cfg(args.cfg, args.opts)
    trainer = build_trainer(cfg)
    trainer.initialize(args.landmarks)
    result = time_whole_image_prediction(trainer, args.image_size, max(1, args.repeats))
    mode = trainer.sampling.inference_mode if trainer.sampling.patches else "whole resized image"
    memory = "peak GPU memory" if trainer.device.type == "cuda" else "peak RSS growth"
    print(
        f"{args.cfg} ({mode}) on {trainer.device}, {torch.get_num_threads()} threads: one "
        f"{result['size'][0]} x {result['size'][1]} image in {result['seconds']:.3f} s "
        f"(median of {max(1, args.repeats)}), {memory} {result['peak_gib']:.2f} GiB, "
        f"coordinates finite {result['finite']}"
    )
    return 0 if result["finite"] else 1


def main(argv: list[str] | None = None) -> int:
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
