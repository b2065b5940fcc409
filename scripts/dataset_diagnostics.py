"""What a config's recipe does to a dataset, measured on its annotations without training.

python scripts/dataset_diagnostics.py --cfg CONFIG [--samples 200] [--schemes A,B,...]
    [KEY VALUE ...]

For the training list at the config's (resolved) input size: how far apart landmarks are
against the target sigma, how much of the input the targets cover, and for each augmentation
scheme how many landmarks it pushes out of the input (the measure SAMPLER.DATA_AUG "auto"
chooses by).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import load_cfg  # noqa: E402
from config_auto import annotation_files, dataset_fingerprint, prepare_config  # noqa: E402
from trainer.auto_rules import augmented_outside, landmark_spacing  # noqa: E402
from utils.coordinates import resize_coords  # noqa: E402
from utils.errors import run_command  # noqa: E402


def spacing_rows(landmarks_rel: np.ndarray, size: tuple[int, int], sigma: float) -> list[str]:
    """Landmark spacing against sigma, and the share of the input the targets cover."""
    shapes = [resize_coords(shape, (1, 1), size) for shape in landmarks_rel]
    nearest, covered = [], []
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    for shape in shapes:
        distances = np.linalg.norm(shape[:, None] - shape[None], axis=-1)
        np.fill_diagonal(distances, np.inf)
        nearest.append(distances.min(axis=1))
        inside = np.zeros(size, bool)
        for x, y in shape:
            inside |= (xx - x) ** 2 + (yy - y) ** 2 <= (2 * sigma) ** 2
        covered.append(inside.mean())
    nearest = np.concatenate(nearest)
    median, low = landmark_spacing(landmarks_rel, size), np.percentile(nearest, 10)
    return [
        f"| input (H x W) | {size[0]} x {size[1]} |",
        f"| sigma (input px) | {sigma:g} |",
        f"| nearest other landmark, median / 10th pct. (input px) | {median:.1f} / {low:.1f} |",
        f"| landmarks with another within 2 sigma | {100 * np.mean(nearest < 2 * sigma):.1f} % |",
        f"| input within 2 sigma of a landmark | {100 * np.mean(covered):.1f} % |",
    ]


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--samples", type=int, default=200, help="augmented samples per scheme")
    parser.add_argument(
        "--schemes",
        default="AffineComplex,AffineComplexNoFlip,AffineSimpleNoFlip",
        help="comma-separated SAMPLER.DATA_AUG schemes",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cfg, _ = prepare_config(load_cfg(args.cfg, args.opts))
    fingerprint = dataset_fingerprint(cfg, annotation_files(cfg)[0])
    landmarks = np.asarray(fingerprint.training_landmarks_rel, dtype=np.float64)
    size = tuple(int(s) for s in cfg.SAMPLER.INPUT_SIZE)
    print("| measure | value |\n|---|---|")
    print("\n".join(spacing_rows(landmarks, size, float(cfg.MODEL.GAUSS_SIGMA))))
    print("\n| scheme | landmarks out of the input |\n|---|---|")
    for scheme in args.schemes.split(","):
        share = augmented_outside(scheme, landmarks, size, args.samples)
        print(f"| {scheme} | {100 * share:.1f} % |")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
