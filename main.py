"""LaNNU-Net: train and evaluate landmark localisation from a YAML config.

python main.py --cfg configs/examples/demo.yaml [KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from config import load_cfg
from datasets.dataset_base import read_dataset_json
from datasets.dataset_index import get_dataset_class
from trainer.model_trainer_base import ModelTrainerBase, seed_everything
from trainer.model_trainer_index import get_trainer_class
from transforms.label_generator_index import get_label_generator_class
from utils.errors import ConfigError, LannuError
from utils.logging_setup import setup_logging

logger = logging.getLogger("lannunet")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train and evaluate landmark localisation.")
    parser.add_argument("--cfg", required=True, help="YAML file overriding config.py's defaults")
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="KEY VALUE pairs overriding the YAML, e.g. SOLVER.MAX_EPOCHS 10",
    )
    return parser.parse_args(argv)


def train_and_test(trainer: ModelTrainerBase, checkpoint: str | None) -> None:
    """Train (resuming from ``checkpoint`` if given), then test the best and latest models."""
    if checkpoint:
        trainer.load_checkpoint(checkpoint, resume_training=True)
    trainer.train()
    if not read_dataset_json(trainer.annotation_file()).get("testing"):
        logger.info("no testing list in %s: skipping inference", trainer.annotation_file())
        return
    test_set = trainer.make_dataset("testing")
    for kind in ("best", "latest"):
        trainer.run_inference(trainer.checkpoint_path(kind), test_set)


def test_only(trainer: ModelTrainerBase, checkpoints: list[Path]) -> None:
    """Test each checkpoint on the testing list, each with its own results folder."""
    test_set = trainer.make_dataset("testing")
    for path in checkpoints:
        trainer.run_inference(path, test_set)


def run(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()  # console only until the run is known to be valid
    cfg = load_cfg(args.cfg, args.opts)
    trainer_class = get_trainer_class(cfg.MODEL.ARCHITECTURE)
    trainer = trainer_class(
        cfg,
        dataset_class=get_dataset_class(cfg.DATASET.DATASET_CLASS),
        label_generator_class=get_label_generator_class(cfg.MODEL.ARCHITECTURE),
    )
    existing = trainer.own_checkpoints() if trainer.output_dir.is_dir() else []
    if cfg.TRAINER.INFERENCE_ONLY:
        checkpoints = [Path(cfg.MODEL.CHECKPOINT)] if cfg.MODEL.CHECKPOINT else existing
        if not checkpoints:
            raise ConfigError(
                f"TRAINER.INFERENCE_ONLY: no MODEL.CHECKPOINT given and no "
                f"checkpoints of this fold in {trainer.output_dir}"
            )
    elif existing and not cfg.MODEL.CHECKPOINT:
        raise ConfigError(
            f"{trainer.output_dir} already holds checkpoints ({existing[0].name}): set "
            "MODEL.CHECKPOINT to resume, TRAINER.INFERENCE_ONLY True to test them, or choose "
            "another OUTPUT.OUTPUT_DIR"
        )

    trainer.output_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    setup_logging(trainer.output_dir / f"log_{stamp}.txt", verbose=cfg.OUTPUT.VERBOSE)
    config_name = "config_inference.yaml" if cfg.TRAINER.INFERENCE_ONLY else "config.yaml"
    (trainer.output_dir / config_name).write_text(cfg.dump())
    logger.info(
        "%s (%s): config %s with overrides %s, saved to %s",
        cfg.DATASET.NAME or "dataset",
        cfg.DATASET.IMAGE_MODALITY,
        args.cfg,
        args.opts or "none",
        trainer.output_dir / config_name,
    )
    seed_everything(cfg.SOLVER.SEED)
    if cfg.TRAINER.INFERENCE_ONLY:
        test_only(trainer, checkpoints)
    else:
        train_and_test(trainer, cfg.MODEL.CHECKPOINT)


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except LannuError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: the latest completed epoch is in model_latest*.model; resume with "
            "MODEL.CHECKPOINT",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
