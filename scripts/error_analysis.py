"""Where the errors of a results folder come from: per landmark, per group, and what each gross
miss landed on.

python scripts/error_analysis.py RESULTS_DIR/predictions.csv [--group-size 4] [--gross 40]
    [--method smha]

Landmarks come in groups of ``--group-size`` consecutive indices with the same roles (a
vertebra's four corners; 1 = no groups). A prediction more than ``--gross`` px from its target
is a gross miss, and is counted as landing on
- ``neighbour group``: the target of the same-role landmark of an adjacent group (k ± size;
  off by one vertebra), if it is nearer that than its own and within ``--gross`` of it;
- ``other landmark``: another landmark's target of the same image, within ``--gross``;
- ``elsewhere``: none of these.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def classify_misses(table: pd.DataFrame, group_size: int, gross: float) -> pd.Series:
    """Per row of a predictions table (one method): ``ok``, ``neighbour group``, ``other
    landmark`` or ``elsewhere``; ``unscored`` where the target is unknown."""
    kinds = pd.Series("unscored", index=table.index)
    for _, image in table.groupby("id", sort=False):
        targets = image.set_index("landmark")[["target_x", "target_y"]]
        for index, row in image.iterrows():
            if not np.isfinite(row["error_px"]):
                continue
            if row["error_px"] <= gross:
                kinds[index] = "ok"
                continue
            prediction = np.array([row["pred_x"], row["pred_y"]])
            distances = np.linalg.norm(targets.to_numpy(float) - prediction, axis=1)
            distances = pd.Series(distances, index=targets.index).drop(row["landmark"]).dropna()
            neighbours = [row["landmark"] - group_size, row["landmark"] + group_size]
            near = distances[distances <= gross]
            if group_size > 1 and any(n in near.index for n in neighbours):
                kinds[index] = "neighbour group"
            elif len(near):
                kinds[index] = "other landmark"
            else:
                kinds[index] = "elsewhere"
    return kinds


def analyse(table: pd.DataFrame, group_size: int, gross: float) -> dict[str, pd.DataFrame]:
    """Tables ``landmarks`` (MRE, median, % gross per landmark), ``groups`` (the same per
    group) and ``misses`` (counts and shares of each kind of gross miss)."""
    scored = table[table["error_px"].notna()].copy()
    scored["kind"] = classify_misses(scored, group_size, gross)
    scored["gross"] = scored["error_px"] > gross
    scored["group"] = scored["landmark"] // group_size

    def summary(by: str) -> pd.DataFrame:
        grouped = scored.groupby(by)
        return pd.DataFrame(
            {
                "n": grouped["error_px"].size(),
                "mre_px": grouped["error_px"].mean(),
                "median_px": grouped["error_px"].median(),
                "gross_%": 100 * grouped["gross"].mean(),
            }
        ).round(1)

    counts = scored["kind"].value_counts()
    misses = pd.DataFrame({"count": counts, "% of scored": (100 * counts / len(scored)).round(2)})
    return {"landmarks": summary("landmark"), "groups": summary("group"), "misses": misses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--group-size", type=int, default=1)
    parser.add_argument("--gross", type=float, default=40.0)
    parser.add_argument("--method", default="smha")
    args = parser.parse_args(argv)
    if not args.predictions.is_file():
        print(f"error: {args.predictions} not found", file=sys.stderr)
        return 2
    table = pd.read_csv(args.predictions)
    table = table[table["method"] == args.method]
    for name, frame in analyse(table, args.group_size, args.gross).items():
        print(f"## {name}\n{frame.to_string()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
