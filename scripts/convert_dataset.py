"""Convert landmark annotations (long CSV, COCO keypoints, LabelMe) to LaNNU-Net's dataset JSON.

python scripts/convert_dataset.py --format {csv,coco,labelme} --input PATH --images DIR
    --output OUT.json [--folds K] [--val-fraction F] [--test-fraction F] [--group-regex REGEX]
    [--seed S] [--annotator NAME|mean] [--landmark-order FILE] [--name NAME] [--overwrite]

Image paths in the output are relative to DIR (use it as DATASET.ROOT). Without --folds, OUT.json
holds one training / validation / testing split; with --folds K, fold0.json ... fold<K-1>.json
are written in OUT's folder instead. The formats, their pixel conventions and the splits are
described in docs/dataset-format.md ("Converting annotations from other formats") and in
datasets/converters.py. Bad input is one line on stderr ("error: ...") and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.converters import FORMATS, convert_dataset  # noqa: E402
from utils.errors import run_command  # noqa: E402
from utils.logging_setup import setup_logging  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=FORMATS, help="the input's format")
    parser.add_argument(
        "--input", required=True, type=Path, help="CSV file, COCO JSON, or folder of LabelMe JSON"
    )
    parser.add_argument("--images", required=True, type=Path, help="the images' root folder")
    parser.add_argument("--output", required=True, type=Path, help="the dataset JSON to write")
    parser.add_argument("--folds", type=int, help="write K cross-validation folds")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share")
    parser.add_argument(
        "--test-fraction", type=float, help="testing share without --folds (default 0.2)"
    )
    parser.add_argument("--group-regex", help="its first capture group on the id names the patient")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split")
    parser.add_argument(
        "--annotator", help="csv: that annotator's points, or 'mean' (default) of all"
    )
    parser.add_argument(
        "--landmark-order", type=Path, help="labelme: a file of labels, one per line"
    )
    parser.add_argument("--name", help="the dataset's name (default: OUT's stem)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(verbose=False)
    convert_dataset(
        args.format,
        args.input,
        args.images,
        args.output,
        folds=args.folds,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        group_regex=args.group_regex,
        seed=args.seed,
        annotator=args.annotator,
        landmark_order=args.landmark_order,
        name=args.name,
        overwrite=args.overwrite,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
