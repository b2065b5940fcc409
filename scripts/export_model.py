"""Bundle a trained model (or an ensemble) into one file that predicts anywhere.

python scripts/export_model.py --cfg RUN/config.yaml --checkpoint A.model [B.model ...]
    --output MODEL.lannu [--calibrate] [--onnx MODEL.onnx] [KEY VALUE ...]

One checkpoint is a single model; several are an ensemble (INFERENCE.ENSEMBLE_UNCERTAINTY_KEYS
gives its methods). The bundle holds every member's weights and the run's settings (config,
input size, evaluation mode and decoder, landmark ids, names and flip pairs when the dataset
JSON has ``landmark_names`` / ``flip_pairs``, pixel size); with --calibrate also the
uncertainty calibration fitted on the run's validation list; with --onnx the model is also
written as one ONNX graph. KEY VALUE pairs override the config (e.g. INFERENCE.TTA_FLIP True).
Predict with scripts/predict.py; the format is in docs/using-a-model.md. Bad input is one line
on stderr ("error: ...") and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import load_cfg  # noqa: E402
from inference.bundle import load_bundle, save_bundle  # noqa: E402
from trainer.model_bundles import export_bundle, export_bundle_onnx  # noqa: E402
from utils.atomic_files import refuse_existing  # noqa: E402
from utils.errors import ConfigError, run_command  # noqa: E402
from utils.logging_setup import setup_logging  # noqa: E402

logger = logging.getLogger("lannunet.export")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="the run's config.yaml (OUTPUT_DIR)")
    parser.add_argument("--checkpoint", required=True, nargs="+", help="one or more .model")
    parser.add_argument("--output", required=True, help="the bundle to write (.lannu)")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="fit the uncertainty calibration on the run's validation list into the bundle",
    )
    parser.add_argument("--onnx", help="also write the model as an ONNX graph to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    output = Path(args.output)
    refuse_existing(output, "--output")  # now, not after minutes of calibration
    if args.onnx:
        refuse_existing(args.onnx, "--onnx")
    cfg = load_cfg(args.cfg, args.opts)
    if args.onnx and cfg.INFERENCE.PRECISION != "float32":
        raise ConfigError(
            f"--onnx: the graph is float32, but INFERENCE.PRECISION is "
            f"{cfg.INFERENCE.PRECISION}; export with INFERENCE.PRECISION float32"
        )
    bundle = export_bundle(cfg, args.checkpoint, calibrate=args.calibrate)
    save_bundle(bundle, output)
    start = time.perf_counter()
    load_bundle(output)  # what predict.py will do: refuse to report success otherwise
    logger.info(
        "wrote %s: %d member(s), %d landmarks, %.1f MB (loads in %.2f s)",
        output,
        len(bundle.members),
        bundle.settings.num_landmarks,
        output.stat().st_size / 1e6,
        time.perf_counter() - start,
    )
    if args.onnx:
        metadata = export_bundle_onnx(bundle, str(output), args.onnx)
        logger.info(
            "wrote %s: %s of %d member(s), %.1f MB",
            args.onnx,
            metadata["graph"]["method"],
            metadata["graph"]["members"],
            Path(args.onnx).stat().st_size / 1e6,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
