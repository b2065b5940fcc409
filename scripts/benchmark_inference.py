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
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from config import load_cfg  # noqa: E402
from trainer.model_trainer_index import build_trainer  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--landmarks", type=int, default=19)
    parser.add_argument("--image-size", type=int, nargs=2, default=[1671, 1340], metavar="H W")
    parser.add_argument("--repeats", type=int, default=3, help="timed predictions after one")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def benchmark(trainer, image_size: list[int], repeats: int) -> dict:
    """Median seconds per prediction and peak memory (GiB) of ``repeats`` predictions."""
    size = list(trainer.image_size or image_size)
    image = torch.randn(1, trainer.input_channels, *size, device=trainer.device)
    original = torch.tensor([size])
    trainer.network.eval()
    cuda = trainer.device.type == "cuda"
    before = peak_rss_gib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats + 1):  # the first includes one-off set-up (cuDNN search, allocator)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            coords = trainer.get_coords_from_heatmap(trainer.inference_forward(image), original)[0]
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    timed = sorted(seconds[1:])
    return {
        "size": size,
        "seconds": timed[len(timed) // 2],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else peak_rss_gib() - before,
        "finite": bool(torch.isfinite(coords).all()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_cfg(args.cfg, args.opts)
    trainer = build_trainer(cfg)
    trainer.initialize(args.landmarks)
    result = benchmark(trainer, args.image_size, max(1, args.repeats))
    mode = trainer.inference_mode if trainer.patch_sampling else "whole resized image"
    memory = "peak GPU memory" if trainer.device.type == "cuda" else "peak RSS growth"
    print(
        f"{args.cfg} ({mode}) on {trainer.device}, {torch.get_num_threads()} threads: one "
        f"{result['size'][0]} x {result['size'][1]} image in {result['seconds']:.3f} s "
        f"(median of {max(1, args.repeats)}), {memory} {result['peak_gib']:.2f} GiB, "
        f"coordinates finite {result['finite']}"
    )
    return 0 if result["finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
