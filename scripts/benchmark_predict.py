"""Speed of predict.py end to end (PNG files → predictions.csv), and of scale_heatmap_first's
upsampling in windows against upsampling whole heatmaps.

python scripts/benchmark_predict.py --cfg RUN/config.yaml [--checkpoint A.model]
    [--landmarks 19] [--image-size 1671 1340] [--images 16] [--batch-sizes 1 8] [KEY VALUE ...]

With --checkpoint, that trained model is bundled (--cfg: its run's config.yaml); without, the
config's network with untrained weights (its data paths are not read). Random PNGs of
--image-size (H W) are written to a temporary folder and predicted with the bundle at each
batch size, once with windowed upsampling (the default) and once with whole heatmaps
upsampled. Untrained networks give flat, noisy heatmaps whose maximum can be anywhere, so
there most heatmaps are upsampled whole anyway; the line "windows" says how many were not.
The second table isolates decoding: --landmarks Gaussian peaks (the config's sigma) with 1 %
noise at the input size, decoded into --image-size with INFERENCE.DECODING.
The bundle's load time is measured in a fresh process. Peak memory: the growth of the
process's peak resident memory (``resource``; Linux).
Threads: torch's default, or OMP_NUM_THREADS / torch.set_num_threads as you start it.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from config import load_cfg  # noqa: E402
from inference.bundle import load_bundle, save_bundle  # noqa: E402
from inference.image_prediction import predict_images  # noqa: E402
from inference.prediction_files import write_prediction_files  # noqa: E402
from trainer.model_bundles import bundle_predictor, export_bundle  # noqa: E402
from trainer.model_trainer_index import build_trainer  # noqa: E402
from transforms import upsampling  # noqa: E402
from transforms.decoding import decode_heatmaps, decode_upsampled, decoder_radius  # noqa: E402
from transforms.generate_labels import gaussian_heatmaps  # noqa: E402
from utils.coordinates import resize_heatmaps  # noqa: E402
from utils.errors import run_command  # noqa: E402
from utils.image_discovery import find_images  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--checkpoint", help="a trained model (default: untrained weights)")
    parser.add_argument("--landmarks", type=int, default=19)
    parser.add_argument("--image-size", type=int, nargs=2, default=[1671, 1340], metavar="H W")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def make_bundle(args: argparse.Namespace, folder: Path) -> Path:
    """The checkpoint (or untrained weights) of the config as a bundle in ``folder``."""
    opts = list(args.opts)
    if not args.checkpoint:  # nothing of the config's data is read
        opts += ["DATASET.ROOT", str(folder), "DATASET.SRC_TARGETS", str(folder / "none.json")]
    cfg = load_cfg(args.cfg, opts)
    checkpoint = args.checkpoint
    if not checkpoint:
        trainer = build_trainer(cfg)
        trainer.initialize(args.landmarks)
        checkpoint = folder / "untrained.model"
        trainer.save_checkpoint(checkpoint)
    path = folder / "model.lannu"
    save_bundle(export_bundle(cfg, [checkpoint]), path)
    return path


def fresh_load_seconds(path: Path) -> float:
    """Seconds to read a bundle and build its predictor in a new Python process (modules
    already imported, as by ``predict.py``'s start; the first import of the optimizer's
    torch._dynamo included)."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]);"
        "from inference.bundle import load_bundle;"
        "from trainer.model_bundles import bundle_predictor;"
        "start = time.perf_counter(); bundle_predictor(load_bundle(sys.argv[1]), sys.argv[1]);"
        "print(time.perf_counter() - start)"
    )
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), root], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def write_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for n in range(count):
        pixels = rng.integers(0, 256, size, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{n:03d}.png")


def decoding_table(settings, sigma: float, landmarks: int, size) -> list[str]:
    """ms per image of decoding peaked heatmaps, whole against windowed upsampling."""
    height, width = settings.input_size
    rng = torch.Generator().manual_seed(0)
    centres = torch.rand(1, landmarks, 2, generator=rng) * torch.tensor([width - 1, height - 1])
    maps = gaussian_heatmaps(centres, sigma, (height, width), 100.0)[0]
    maps = maps + torch.rand(maps.shape, generator=rng)
    scale = max(size[0] / height, size[1] / width)
    method = settings.decoding
    lines = []
    timings = {}
    for name, decode in (
        (
            "whole",
            lambda: decode_heatmaps(resize_heatmaps(maps[None], size), method, sigma * scale),
        ),
        ("windowed", lambda: decode_upsampled(maps, size, method, sigma * scale)),
    ):
        decode()
        start = time.perf_counter()
        for _ in range(3):
            coords = decode()
        timings[name] = ((time.perf_counter() - start) / 3 * 1000, coords)
    difference = (timings["whole"][1][0] - timings["windowed"][1]).abs().max()
    for name, (ms, _) in timings.items():
        lines.append(f"  {name:8s} {ms:8.1f} ms per image ({landmarks} heatmaps, {method})")
    lines.append(f"  largest coordinate difference {float(difference):.2e} px")
    return lines


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = tuple(args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bundle_path = make_bundle(args, folder)
        load_seconds = fresh_load_seconds(bundle_path)
        bundle = load_bundle(bundle_path)
        settings = bundle.settings
        write_images(folder / "images", args.images, size)
        images = find_images([folder / "images"])
        print(
            f"bundle {bundle_path.stat().st_size / 1e6:.1f} MB, loaded in {load_seconds:.2f} s; "
            f"{settings.evaluation_mode}, {settings.decoding}; {args.images} PNGs of "
            f"{size[0]} x {size[1]}; {torch.get_num_threads()} threads"
        )
        default_fraction = upsampling.MAX_REGION_FRACTION
        for batch_size in args.batch_sizes:
            predictor = bundle_predictor(bundle, str(bundle_path), "auto", batch_size=batch_size)
            predict_images(predictor, settings, images[:1])  # warm-up
            for name, fraction in (("windowed", default_fraction), ("whole", -1.0)):
                upsampling.MAX_REGION_FRACTION = fraction
                before = peak_kib()
                out = folder / f"out_{batch_size}_{name}"
                start = time.perf_counter()
                result = predict_images(predictor, settings, images)
                write_prediction_files(result, out, str(bundle_path))
                seconds = time.perf_counter() - start
                print(
                    f"batch {batch_size}, {name:8s} upsampling: {len(images) / seconds:6.2f} "
                    f"images per second (PNG to CSV), peak RSS +{(peak_kib() - before) / 1024:.0f}"
                    f" MiB (process peak {peak_kib() / 1024:.0f} MiB)"
                )
            upsampling.MAX_REGION_FRACTION = default_fraction
        model = predictor.models[0]
        first = predictor.models[0].runner(model.network, torch.zeros(1, 1, *settings.input_size))
        maps = model.label_generator.display_maps(first)[0].float()
        sigma = model.label_generator.decoding_sigma()
        sigma = float(np.max(sigma)) * max(size[0] / maps.shape[-2], size[1] / maps.shape[-1])
        regions = upsampling.candidate_regions(maps, size, decoder_radius(settings.decoding, sigma))
        print(
            f"windows: {sum(r is not None for r in regions)} of {len(regions)} heatmaps of a "
            "blank image (the rest upsampled whole)"
        )
        print("decoding only, peaked heatmaps:")
        base_sigma = float(np.max(model.label_generator.decoding_sigma()))
        print("\n".join(decoding_table(settings, base_sigma, args.landmarks, size)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
