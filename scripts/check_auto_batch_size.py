"""Print the batch size that SOLVER.DATA_LOADER_BATCH_SIZE "auto" chooses on this machine.

python scripts/check_auto_batch_size.py --cfg x.yaml [KEY VALUE ...]
python scripts/check_auto_batch_size.py --cfg x.yaml --image-size 1671 1340 --landmarks 19

Every other "auto" value of the config is resolved as a run would (from the data check, or,
with ``--image-size`` and ``--landmarks``, from that median image size without reading data);
on CUDA the training step is measured at growing batch sizes, on a CPU the CPU rule applies.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import load_cfg  # noqa: E402
from config_auto import prepare_config, resolve_auto_config  # noqa: E402
from datasets.fingerprint import Fingerprint  # noqa: E402
from utils.devices import resolve_device  # noqa: E402
from utils.errors import LannuError, one_line  # noqa: E402
from utils.logging_setup import setup_logging  # noqa: E402


def planned_fingerprint(height: int, width: int, landmarks: int) -> Fingerprint:
    """A fingerprint of one image of (height, width) with ``landmarks`` landmarks, no data."""
    return Fingerprint(
        json_path=f"(--image-size {height} {width} --landmarks {landmarks})",
        split_counts={"training": 1},
        formats={},
        sizes=[[height, width]],
        intensity=[[0.0, 1.0]],
        pixel_sizes={"unknown": 1},
        num_landmarks=landmarks,
        landmarks_outside=0,
        landmark_std_px=[],
        landmark_std_rel=[],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--landmarks", type=int, help="landmark count (with --image-size)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_cfg(args.cfg, [*args.opts, "SOLVER.DATA_LOADER_BATCH_SIZE", "auto"])
        start = time.perf_counter()
        if args.landmarks and not args.image_size:
            parser.error("--landmarks needs --image-size")
        if args.image_size:
            if not args.landmarks:
                parser.error("--image-size needs --landmarks")
            fingerprint = planned_fingerprint(*args.image_size, args.landmarks)
            device = resolve_device(cfg.TRAINER.DEVICE)
            cfg, choices = resolve_auto_config(cfg, fingerprint, device)
            plan = [f"auto: {choice}" for choice in choices]
        else:
            cfg, plan = prepare_config(cfg)
    except LannuError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    for line in plan:
        logging.getLogger("lannunet").info("%s", line)
    print(
        f"SOLVER.DATA_LOADER_BATCH_SIZE {cfg.SOLVER.DATA_LOADER_BATCH_SIZE} for input "
        f"{list(cfg.SAMPLER.INPUT_SIZE)} on {cfg.TRAINER.DEVICE} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
