"""Error of predicting every landmark at its mean training position (the floor to beat).

python scripts/mean_position_baseline.py --json data.json --root image_root [--landmarks 0 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.dataset_base import parse_samples, read_dataset_json  # noqa: E402
from inference.baselines import mean_position_predictions  # noqa: E402
from utils.metrics import radial_errors  # noqa: E402


def image_size(path: Path) -> tuple[int, int]:
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        with Image.open(path) as img:
            return img.height, img.width
    from utils.image_io import read_image

    return read_image(path).pixels.shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--landmarks", type=int, nargs="*", default=[])
    args = parser.parse_args()
    data = read_dataset_json(args.json)
    train = parse_samples(data["training"], args.json, args.root, args.landmarks, [])
    test = [
        s
        for s in parse_samples(data.get("testing", []), args.json, args.root, args.landmarks, [])
        if s.has_annotation
    ]
    predictions = mean_position_predictions(
        [s.coords for s in train],
        [image_size(s.image_path) for s in train],
        [image_size(s.image_path) for s in test],
    )
    errors = np.concatenate(
        [radial_errors(p, s.coords) for p, s in zip(predictions, test, strict=True)]
    )
    errors = errors[np.isfinite(errors)]  # missing test landmarks are not scored
    print(
        f"mean training position on {len(test)} test images: MRE {errors.mean():.2f} px, "
        f"median {np.median(errors):.2f} px"
    )


if __name__ == "__main__":
    main()
