"""Writing predictions and summaries: CSV, Excel, and a table on the console."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = [
    "id",
    "landmark",
    "method",
    "pred_x",
    "pred_y",
    "uncertainty",
    "target_x",
    "target_y",
    "error_px",
    "error_mm",
]


def unique_results_dir(results_root: Path, name: str) -> Path:
    """``results_root/name``, or ``name_2``, ``name_3``... if earlier results are there (never
    overwritten; a warning says where the new ones go)."""
    candidate, counter = results_root / name, 1
    while candidate.exists() and any(candidate.iterdir()):
        counter += 1
        candidate = results_root / f"{name}_{counter}"
    if counter > 1:
        logger.warning("%s holds earlier results; writing to %s", results_root / name, candidate)
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


def write_results(predictions: pd.DataFrame, summary: pd.DataFrame, folder: Path) -> None:
    """predictions.csv, summary.csv, and both as sheets of results.xlsx in ``folder``."""
    predictions.to_csv(folder / "predictions.csv", index=False)
    summary.to_csv(folder / "summary.csv", index=False)
    with pd.ExcelWriter(folder / "results.xlsx", engine="openpyxl") as writer:
        predictions.to_excel(writer, sheet_name="predictions", index=False)
        summary.to_excel(writer, sheet_name="summary", index=False)


def format_summary(summary: pd.DataFrame, title: str) -> str:
    """The ``all`` rows (one per method) and the per-landmark MRE, as aligned text."""
    if summary.empty:
        return f"{title}: no annotated test samples, so no errors to summarise"
    overall = summary[summary["landmark"] == "all"].drop(columns=["landmark"])
    unit = summary["unit"].iloc[0]
    lines = [
        f"{title} (errors in {unit}; sdr_t = % within t {unit})",
        overall.to_string(index=False, float_format=lambda v: f"{v:.2f}"),
    ]
    rows = summary[summary["landmark"] != "all"]
    per_landmark = rows.pivot(index="landmark", columns="method", values="mre")
    if "landmark_name" in rows.columns:  # the JSON's landmark_names
        names = dict(zip(rows["landmark"], rows["landmark_name"], strict=False))
        per_landmark.index = [f"{lm} {names[lm]}" for lm in per_landmark.index]
    lines.append("MRE per landmark:")
    lines.append(per_landmark.to_string(float_format=lambda v: f"{v:.2f}"))
    return "\n".join(lines)
