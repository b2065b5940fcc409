"""One table of finished runs: test errors, gross misses, time per epoch and peak memory.

python scripts/benchmark_table.py RUN_DIR [RUN_DIR ...] [--results model_best] [--gross 40]

Each RUN_DIR is a training run's OUTPUT_DIR: its ``results/<results>/predictions.csv`` gives the
errors (pixels of the original images, S-MHA rows), ``metrics.csv`` the seconds per epoch, and
an optional ``time.txt`` (``/usr/bin/time -v``'s report of the run) the peak memory.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["run", "n", "MRE px", "median", "SDR@10", "SDR@20", "SDR@40", "> gross %", "s/epoch"]


def peak_memory_gib(time_report: Path) -> float:
    """Peak resident memory from ``/usr/bin/time -v``'s report, GiB (NaN without one)."""
    if not time_report.is_file():
        return float("nan")
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_report.read_text())
    return int(match.group(1)) / 2**20 if match else float("nan")


def run_row(run: Path, results: str = "model_best", gross: float = 40.0) -> dict:
    """The table row of one run; a missing results file is a one-line error naming it."""
    predictions = run / "results" / results / "predictions.csv"
    if not predictions.is_file():
        raise FileNotFoundError(f"{predictions}: no predictions (did the run finish?)")
    table = pd.read_csv(predictions)
    errors = table.loc[table["method"] == "smha", "error_px"].dropna().to_numpy(float)
    metrics = run / "metrics.csv"
    seconds = pd.read_csv(metrics)["seconds"].mean() if metrics.is_file() else float("nan")

    def within(radius: float) -> float:
        return 100 * float(np.mean(errors <= radius))

    return {
        "run": run.name,
        "n": len(errors),
        "MRE px": float(errors.mean()),
        "median": float(np.median(errors)),
        "SDR@10": within(10),
        "SDR@20": within(20),
        "SDR@40": within(40),
        "> gross %": 100 * float(np.mean(errors > gross)),
        "s/epoch": float(seconds),
        "peak GiB": peak_memory_gib(run / "time.txt"),
    }


def format_table(rows: list[dict], gross: float = 40.0) -> str:
    """A Markdown table of ``rows`` (run_row's), numbers to one decimal."""
    header = [*COLUMNS, "peak GiB"]
    header[header.index("> gross %")] = f"> {gross:g} px %"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [row["run"], str(row["n"])]
        values += [f"{row[key]:.1f}" for key in [*COLUMNS[2:], "peak GiB"]]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--results", default="model_best", help="results folder of each run")
    parser.add_argument("--gross", type=float, default=40.0, help="gross-miss radius, px")
    args = parser.parse_args(argv)
    try:
        rows = [run_row(run, args.results, args.gross) for run in args.runs]
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows, args.gross))
    return 0


if __name__ == "__main__":
    sys.exit(main())
