"""Predict landmarks on image files with a model bundle (or its ONNX graph): no JSON needed.

python scripts/predict.py --model MODEL.lannu|MODEL.onnx -i PATH [PATH ...] -o OUT
    [--device auto|cpu|cuda] [--batch-size N] [--tta] [--figures] [--slicer]

PATHs are image files or folders, searched recursively for every format LaNNU-Net reads (PNG,
JPEG, TIFF, BMP, WebP, NPZ, DICOM with or without a suffix). Writes OUT/predictions.csv and
OUT/predictions.json (x = column, y = row in pixels of each image file; id = the file's path
relative to its folder, without the suffix), with --figures one overlay PNG per image, with
--slicer one 3D Slicer markups file per image. An unreadable image is reported and skipped;
the exit status is then 1 (0: all predicted; 2: nothing could be done, one line on stderr).
Details: docs/using-a-model.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.bundle import load_bundle  # noqa: E402
from inference.image_prediction import predict_images  # noqa: E402
from inference.onnx_model import ONNX_SUFFIX, onnx_predictor  # noqa: E402
from inference.prediction_files import check_output_folder, write_prediction_files  # noqa: E402
from inference.whole_image import PRECISIONS  # noqa: E402
from trainer.model_bundles import bundle_predictor  # noqa: E402
from utils.devices import resolve_device  # noqa: E402
from utils.errors import ConfigError, run_command  # noqa: E402
from utils.image_discovery import find_images  # noqa: E402
from utils.logging_setup import setup_logging  # noqa: E402

logger = logging.getLogger("lannunet.predict")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a .lannu bundle or an exported .onnx")
    parser.add_argument("-i", "--input", required=True, nargs="+", help="image files, folders")
    parser.add_argument("-o", "--output", required=True, help="folder for the predictions")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the run's)")
    parser.add_argument("--tta", action="store_true", help="also average the flipped image")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="forward passes in float32 or bfloat16 autocast (default: the run's "
        "INFERENCE.PRECISION); bfloat16 is faster on CPUs with bfloat16 units, coordinates "
        "differ slightly (docs/using-a-model.md)",
    )
    parser.add_argument("--figures", action="store_true", help="one overlay PNG per image")
    parser.add_argument("--slicer", action="store_true", help="3D Slicer .mrk.json per image")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def load_model(args: argparse.Namespace):
    """(settings, predictor) of the bundle or ONNX model ``args.model``."""
    path = Path(args.model)
    if path.suffix.lower() == ONNX_SUFFIX:
        settings, predictor, metadata = onnx_predictor(path, args.device, args.batch_size)
        if args.tta and not metadata["graph"]["tta_flip"]:
            raise ConfigError(
                f"--tta: {path} was exported without flip TTA (it is part of the graph); "
                "export with INFERENCE.TTA_FLIP True, or predict with the bundle"
            )
        if args.precision not in (None, "float32"):
            raise ConfigError(
                f"--precision {args.precision}: {path} runs in the float32 it was exported in; "
                "predict with the bundle for bfloat16"
            )
        return settings, predictor
    bundle = load_bundle(path)
    predictor = bundle_predictor(
        bundle, str(path), args.device, args.tta, args.batch_size, args.precision
    )
    return bundle.settings, predictor


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(verbose=False)
    output = Path(args.output)
    check_output_folder(output)
    if args.device != "auto" and not args.model.lower().endswith(ONNX_SUFFIX):
        try:
            resolve_device(args.device)
        except ConfigError as err:
            raise ConfigError(f"--device {args.device}: {err}") from None
    images = find_images(args.input)
    start = time.perf_counter()
    settings, predictor = load_model(args)
    load_seconds = time.perf_counter() - start
    result = predict_images(predictor, settings, images)
    write_prediction_files(result, output, str(args.model), args.figures, args.slicer)
    predicted = len(result.images)
    print(
        f"predicted {predicted} of {len(images)} images in {result.seconds:.1f} s "
        f"({predicted / max(result.seconds, 1e-9):.1f} images per second, model loaded in "
        f"{load_seconds:.2f} s) -> {output / 'predictions.csv'}"
        + (f"; {len(result.failed)} could not be read (listed above)" if result.failed else "")
    )
    return 1 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
