"""After a Slurm array trained every fold (and seed): test each fold's model, or the ensemble of
its seeds, on the fold's testing list, then summarise all folds like TRAINER.CROSS_VALIDATION.

python scripts/array_summary.py --folds 0:1:2:3 [--seeds 1:2:3] --output-dir DIR --cfg FILE
    [KEY VALUE ...]

The array's task for fold F (and seed S) trained into ``DIR/fold<F>`` (``DIR/fold<F>/seed<S>``);
results go to ``DIR/fold<F>/results/`` and the summary to ``DIR/cross_validation``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import load_cfg  # noqa: E402
from config_auto import prepare_config  # noqa: E402
from inference.cross_validation import fold_config, summarise_cross_validation  # noqa: E402
from main import test_checkpoints  # noqa: E402
from trainer.model_trainer_index import build_trainer  # noqa: E402
from utils.errors import ConfigError, run_command  # noqa: E402
from utils.logging_setup import setup_logging  # noqa: E402

logger = logging.getLogger("lannunet")


def parse_numbers(text: str, name: str) -> list[int]:
    """``"0:1:2"`` → ``[0, 1, 2]`` (the ":"-joined lists that Slurm's --export allows)."""
    try:
        return [int(part) for part in text.split(":") if part]
    except ValueError:
        raise ConfigError(f"{name} {text!r}: give integers joined by ':'") from None


def fold_checkpoints(trainer, seeds: list[int]) -> list[Path]:
    """The best checkpoint of every seed of ``trainer``'s fold (the fold's one model without
    seeds); the seeds' runs are in ``seed<S>`` folders of the fold's OUTPUT_DIR."""
    best = trainer.checkpoint_path("best")
    return [best.parent / f"seed{seed}" / best.name for seed in seeds] if seeds else [best]


def test_folds(cfg, folds: list[int], seeds: list[int], output_dir: Path) -> dict[int, Path]:
    """Test every fold's model(s) on its testing list; the results folder of each fold."""
    results = {}
    for fold in folds:
        # "auto" values resolved as the fold's array task resolved them (main.py)
        fold_cfg, _ = prepare_config(fold_config(cfg, fold, output_dir))
        trainer = build_trainer(fold_cfg)
        checkpoints = fold_checkpoints(trainer, seeds)
        logger.info("fold %d: testing %s", fold, [str(p) for p in checkpoints])
        if len(checkpoints) == 1:
            results[fold] = test_checkpoints(trainer, checkpoints)
        else:
            results[fold] = test_checkpoints(
                trainer,
                checkpoints,
                methods=tuple(cfg.INFERENCE.ENSEMBLE_UNCERTAINTY_KEYS),
                smha_index=cfg.INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX,
                name="ensemble",
            )
    return results


def run(argv: list[str] | None = None) -> Path:
    """Test all folds and write the summary; returns the summary's folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", required=True, help="fold numbers joined by ':'")
    parser.add_argument("--seeds", default="", help="seeds joined by ':'; none: one model a fold")
    parser.add_argument("--output-dir", required=True, help="the array's OUTPUT_DIR")
    parser.add_argument("--cfg", required=True, help="the config the array trained with")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="its KEY VALUE overrides")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    setup_logging(output_dir / "cross_validation_log.txt")
    cfg = load_cfg(args.cfg, args.opts)
    folds, seeds = parse_numbers(args.folds, "--folds"), parse_numbers(args.seeds, "--seeds")
    results = test_folds(cfg, folds, seeds, output_dir)
    append = cfg.OUTPUT.RESULTS_CSV_APPEND or ""
    folder = summarise_cross_validation(
        results, output_dir / f"cross_validation{append}", cfg.INFERENCE.SDR_THRESHOLDS
    )
    logger.info("cross-validation summary of folds %s written to %s", folds, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
