"""Cross-validation: which folds exist, and one summary over all folds' test predictions."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from yacs.config import CfgNode

from utils.errors import DataError
from utils.metrics import summarise_errors
from utils.results import format_summary, unique_results_dir, write_results

logger = logging.getLogger(__name__)


def fold_numbers(folder: str | Path) -> list[int]:
    """The N of every ``fold<N>.json`` in ``folder``, sorted; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"TRAINER.CROSS_VALIDATION needs DATASET.SRC_TARGETS to be the folder of "
            f"fold<N>.json files; {folder} is not a folder"
        )
    folds = sorted(
        int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"fold(\d+)\.json", p.name))
    )
    if not folds:
        raise DataError(f"{folder}: no fold<N>.json files for cross-validation")
    return folds


def fold_config(cfg: CfgNode, fold: int, output_dir: Path) -> CfgNode:
    """``cfg`` for one fold: TRAINER.FOLD ``fold``, output in ``output_dir/fold<N>``, frozen."""
    fold_cfg = cfg.clone()
    fold_cfg.defrost()
    fold_cfg.TRAINER.FOLD = fold
    fold_cfg.TRAINER.CROSS_VALIDATION = False
    fold_cfg.OUTPUT.OUTPUT_DIR = str(Path(output_dir) / f"fold{fold}")
    fold_cfg.freeze()
    return fold_cfg


def summarise_cross_validation(
    fold_results: dict[int, Path], output_folder: Path, thresholds: Sequence[float]
) -> Path:
    """Join each fold's predictions.csv (with a ``fold`` column) and summarise them all
    (``fold`` = all) and per fold, into predictions.csv, summary.csv and results.xlsx."""
    tables = []
    for fold, folder in fold_results.items():
        table = pd.read_csv(folder / "predictions.csv", dtype={"id": str})  # keep "007"
        table.insert(0, "fold", fold)
        tables.append(table)
    predictions = pd.concat(tables, ignore_index=True)
    summaries = []
    overall, _ = summarise_errors(predictions, thresholds)
    summaries.append(overall.assign(fold="all"))
    for fold, table in predictions.groupby("fold"):
        summary, _ = summarise_errors(table, thresholds)
        summaries.append(summary.assign(fold=str(fold)))
    summary = pd.concat(summaries, ignore_index=True)
    summary = summary[["fold", *[c for c in summary.columns if c != "fold"]]]
    folder = unique_results_dir(output_folder.parent, output_folder.name)
    write_results(predictions, summary, folder)
    logger.info(
        "%s", format_summary(overall, f"cross-validation over folds {sorted(fold_results)}")
    )
    return folder
