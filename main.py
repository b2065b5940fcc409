"""LaNNU-Net: train and evaluate landmark localisation from a YAML config.

python main.py --cfg configs/examples/demo.yaml [--check-data | --print-config] [KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from config import is_auto, load_cfg, unused_keys
from config_auto import check_data, prepare_config
from datasets.dataset_base import read_dataset_json
from inference.cross_validation import fold_config, fold_numbers, summarise_cross_validation
from inference.predictor import run_inference
from tracking import open_tracker
from trainer.model_trainer_base import ModelTrainerBase
from trainer.model_trainer_index import build_trainer, get_trainer_class, load_predictor
from trainer.preemption import PREEMPTED_EXIT_CODE, Preempted, latest_checkpoint, stop_on_signals
from utils.devices import seed_everything
from utils.distributed import close_distributed, init_distributed
from utils.errors import ConfigError, run_command
from utils.logging_setup import setup_logging

logger = logging.getLogger("lannunet")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train and evaluate landmark localisation.")
    parser.add_argument("--cfg", required=True, help="YAML file overriding config.py's defaults")
    parser.add_argument(
        "--check-data",
        action="store_true",
        help="read every sample once, report the dataset and its defects; exit 2 on errors",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help='check the data, resolve the "auto" values, print the config, and stop',
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="KEY VALUE pairs overriding the YAML, e.g. SOLVER.MAX_EPOCHS 10",
    )
    args = parser.parse_args(argv)
    for flag in ("--check-data", "--print-config"):  # also accepted after the KEY VALUE pairs
        if flag in args.opts:
            args.opts.remove(flag)
            setattr(args, flag[2:].replace("-", "_"), True)
    return args


def test_checkpoints(
    trainer: ModelTrainerBase,
    checkpoints: list[Path],
    methods: tuple[str, ...] = ("smha",),
    smha_index: int = 0,
    name: str | None = None,
    sets: tuple | None = None,
) -> Path:
    """Predict the testing list with ``checkpoints`` together (one model, or an ensemble
    named ``name``), calibrated on the validation list, into a new results folder; ``sets``:
    the trainer's ``evaluation_sets()`` if already made (their images stay cached)."""
    test_set, calibration_set = sets or trainer.evaluation_sets()
    predictor = load_predictor(checkpoints, trainer.cfg)
    return run_inference(
        predictor,
        test_set,
        trainer.results_settings(),
        calibration_set,
        methods=methods,
        smha_index=smha_index,
        name=name or Path(checkpoints[0]).stem,
        tracker=trainer.tracker,
    )


def train_and_test(trainer: ModelTrainerBase, checkpoint: str | None) -> list[Path]:
    """Train (resuming from ``checkpoint`` if given), then test the best and latest models.
    Returns the results folders."""
    if checkpoint:
        trainer.load_checkpoint(checkpoint, resume_training=True)
    with stop_on_signals():  # SIGTERM/SIGUSR1: stop after the step (trainer/preemption.py)
        trainer.run_training()
    if not trainer.process_group.is_main:  # rank 0 tests; the others are done
        return []
    if not read_dataset_json(trainer.annotation_file()).get("testing"):
        logger.info("no testing list in %s: skipping inference", trainer.annotation_file())
        return []
    sets = trainer.evaluation_sets()
    return [
        test_checkpoints(trainer, [trainer.checkpoint_path(kind)], sets=sets)
        for kind in ("best", "latest")
    ]


def test_only(trainer: ModelTrainerBase, checkpoints: list[Path]) -> None:
    """Test each checkpoint on the testing list, each with its own results folder."""
    sets = trainer.evaluation_sets()
    for path in checkpoints:
        test_checkpoints(trainer, [path], sets=sets)


def test_ensemble(trainer: ModelTrainerBase, cfg) -> None:
    """INFERENCE.ENSEMBLE_INFERENCE: all checkpoints together, one results folder."""
    test_checkpoints(
        trainer,
        [Path(p) for p in cfg.INFERENCE.ENSEMBLE_CHECKPOINTS],
        methods=tuple(cfg.INFERENCE.ENSEMBLE_UNCERTAINTY_KEYS),
        smha_index=cfg.INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX,
        name="ensemble",
    )


def cross_validate(cfg) -> None:
    """TRAINER.CROSS_VALIDATION: train and test every fold<N>.json into OUTPUT_DIR/fold<N>,
    then summarise all folds' test predictions (best checkpoints) together."""
    folds = fold_numbers(cfg.DATASET.SRC_TARGETS)
    output_dir = Path(cfg.OUTPUT.OUTPUT_DIR)
    fold_cfgs = {}
    for fold in folds:
        fold_cfg = fold_config(cfg, fold, output_dir)
        check_output_dir(build_trainer(fold_cfg), fold_cfg)  # before any fold trains for hours
        fold_cfgs[fold] = fold_cfg
    fold_results = {}
    for fold, fold_cfg in fold_cfgs.items():
        seed_everything(fold_cfg.SOLVER.SEED)  # fold N here is the same run as TRAINER.FOLD N
        Path(fold_cfg.OUTPUT.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
        (Path(fold_cfg.OUTPUT.OUTPUT_DIR) / "config.yaml").write_text(fold_cfg.dump())
        logger.info("cross-validation: fold %d of %s", fold, folds)
        trainer = build_trainer(fold_cfg)
        with open_tracker(fold_cfg) as trainer.tracker:  # one experiment per fold
            folders = train_and_test(trainer, None)
        if folders:
            fold_results[fold] = folders[0]
    if fold_results:
        append = cfg.OUTPUT.RESULTS_CSV_APPEND or ""
        folder = summarise_cross_validation(
            fold_results, output_dir / f"cross_validation{append}", cfg.INFERENCE.SDR_THRESHOLDS
        )
        logger.info(
            "cross-validation summary of folds %s written to %s", list(fold_results), folder
        )


def check_output_dir(trainer: ModelTrainerBase, cfg) -> list[Path]:
    """Refuse to train over this fold's checkpoints; return the checkpoints to test."""
    existing = trainer.own_checkpoints() if trainer.output_dir.is_dir() else []
    if cfg.TRAINER.INFERENCE_ONLY:
        checkpoints = [Path(cfg.MODEL.CHECKPOINT)] if cfg.MODEL.CHECKPOINT else existing
        if not checkpoints and not cfg.INFERENCE.ENSEMBLE_INFERENCE:
            raise ConfigError(
                f"TRAINER.INFERENCE_ONLY: no MODEL.CHECKPOINT given and no "
                f"checkpoints of this fold in {trainer.output_dir}"
            )
        return checkpoints
    if existing and not cfg.MODEL.CHECKPOINT and not cfg.TRAINER.AUTO_RESUME:
        raise ConfigError(
            f"{trainer.output_dir} already holds checkpoints ({existing[0].name}): set "
            "MODEL.CHECKPOINT or TRAINER.AUTO_RESUME True to resume, TRAINER.INFERENCE_ONLY "
            "True to test them, or choose another OUTPUT.OUTPUT_DIR"
        )
    return []


def run(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()  # console only until the run is known to be valid
    cfg = load_cfg(args.cfg, args.opts)
    if args.check_data:
        check_data(cfg)
        return
    group = init_distributed(cfg.TRAINER.DEVICE)  # torchrun's ranks, or one process
    if group.distributed and (cfg.TRAINER.CROSS_VALIDATION or cfg.TRAINER.INFERENCE_ONLY):
        raise ConfigError(
            "torchrun trains one model: run TRAINER.CROSS_VALIDATION as a job array "
            "(scripts/scripts_bess/submit_folds.py) and TRAINER.INFERENCE_ONLY on one process"
        )
    if group.distributed and is_auto(cfg.SOLVER.DATA_LOADER_BATCH_SIZE):
        raise ConfigError(  # each rank would measure its own and they could disagree
            "SOLVER.DATA_LOADER_BATCH_SIZE auto is measured on one GPU: find it with "
            "scripts/check_auto_batch_size.py and set the number under torchrun"
        )
    cfg, plan = prepare_config(cfg)  # the data check, and concrete values for "auto" ones
    if args.print_config:  # valid YAML: the data summary and reasons as comments
        sys.stdout.write("".join(f"# {line}\n" for line in plan) + cfg.dump())
        return
    if cfg.TRAINER.CROSS_VALIDATION:
        build_trainer(cfg)  # fail early on an unknown architecture or dataset class
        start_run_logging(cfg, args, plan)
        cross_validate(cfg)
        return
    trainer = build_trainer(cfg)
    checkpoints = check_output_dir(trainer, cfg)
    if group.is_main:  # one log file and config.yaml; the other ranks log warnings only
        start_run_logging(cfg, args, plan)
    else:
        logging.getLogger().setLevel(logging.WARNING)
        seed_everything(cfg.SOLVER.SEED)  # every rank builds the same initial network
    with open_tracker(cfg if group.is_main else None) as trainer.tracker:
        if cfg.INFERENCE.ENSEMBLE_INFERENCE:
            test_ensemble(trainer, cfg)
        elif cfg.TRAINER.INFERENCE_ONLY:
            test_only(trainer, checkpoints)
        elif cfg.TRAINER.AUTO_RESUME:
            resume = latest_checkpoint(trainer.own_checkpoints(), trainer.checkpoint_path("latest"))
            train_and_test(trainer, resume)
        else:
            train_and_test(trainer, cfg.MODEL.CHECKPOINT)


def start_run_logging(cfg, args: argparse.Namespace, plan: list[str]) -> None:
    """Log file and merged config in OUTPUT_DIR, once the run is known to be valid; ``plan``:
    the data summary and the "auto" values chosen (config_auto.prepare_config)."""
    output_dir = Path(cfg.OUTPUT.OUTPUT_DIR)
    output_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    setup_logging(output_dir / f"log_{stamp}.txt", verbose=cfg.OUTPUT.VERBOSE)
    config_name = "config_inference.yaml" if cfg.TRAINER.INFERENCE_ONLY else "config.yaml"
    (output_dir / config_name).write_text(cfg.dump())
    logger.info(
        "%s (%s): config %s with overrides %s, saved to %s",
        cfg.DATASET.NAME or "dataset",
        cfg.DATASET.IMAGE_MODALITY,
        args.cfg,
        args.opts or "none",
        output_dir / config_name,
    )
    for line in plan:
        logger.info("%s", line)
    seed_everything(cfg.SOLVER.SEED)
    unused_by_architecture = get_trainer_class(cfg.MODEL.ARCHITECTURE).unused_config_keys
    for key in unused_keys(cfg, unused_by_architecture):
        logger.warning(
            "%s is set but not used by MODEL.ARCHITECTURE %s", key, cfg.MODEL.ARCHITECTURE
        )


def main(argv: list[str] | None = None) -> int:
    try:
        return run_command(run, argv)
    except Preempted as err:
        message = (
            f"preempted: {err}; model_latest*.model holds the latest completed epoch; rerun "
            "with TRAINER.AUTO_RESUME True (the submit scripts requeue on this exit code)"
        )
        logger.warning("%s", message)  # into the run's log file too
        print(message, file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:
        print(
            "interrupted: the latest completed epoch is in model_latest*.model; resume with "
            "MODEL.CHECKPOINT",
            file=sys.stderr,
        )
        return 130
    finally:
        close_distributed()


if __name__ == "__main__":
    sys.exit(main())
