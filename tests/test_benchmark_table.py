"""scripts/benchmark_table.py: the one table of scripts/benchmark_datasets.sh, from run folders."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_table.py"
spec = importlib.util.spec_from_file_location("benchmark_table", SCRIPT)
benchmark_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark_table)


def make_run(folder: Path, errors: list[float], seconds: list[float], rss_kib: int | None):
    """A run folder as main.py leaves it: predictions (S-MHA and an E-CPV row that must be
    ignored), metrics.csv, and optionally /usr/bin/time -v's report."""
    results = folder / "results" / "model_best"
    results.mkdir(parents=True)
    rows = [{"method": "smha", "error_px": e} for e in errors]
    rows += [{"method": "smha", "error_px": float("nan")}, {"method": "ecpv", "error_px": 999.0}]
    pd.DataFrame(rows).to_csv(results / "predictions.csv", index=False)
    pd.DataFrame({"epoch": range(1, len(seconds) + 1), "seconds": seconds}).to_csv(
        folder / "metrics.csv", index=False
    )
    if rss_kib is not None:
        report = "\tCommand being timed: python main.py\n"
        report += f"\tMaximum resident set size (kbytes): {rss_kib}\n"
        (folder / "time.txt").write_text(report)
    return folder


def test_row_counts_scored_landmarks_and_gross_misses(tmp_path):
    run = make_run(tmp_path / "spine", [5.0, 15.0, 30.0, 50.0], [10.0, 20.0], 2 * 2**20)
    row = benchmark_table.run_row(run, gross=40.0)
    assert row["n"] == 4 and row["MRE px"] == pytest.approx(25.0) and row["median"] == 22.5
    assert (row["SDR@10"], row["SDR@20"], row["SDR@40"]) == (25.0, 50.0, 75.0)
    assert row["> gross %"] == 25.0 and row["s/epoch"] == 15.0 and row["peak GiB"] == 2.0


def test_table_and_missing_results(tmp_path, capsys):
    make_run(tmp_path / "a", [1.0, 2.0], [3.0], None)
    assert benchmark_table.main([str(tmp_path / "a"), "--gross", "1.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "> 1.5 px %" in lines[0] and lines[2].startswith("| a | 2 | 1.5 | 1.5 |")
    assert lines[2].rstrip().endswith("| nan |")  # no memory report
    assert benchmark_table.main([str(tmp_path / "missing")]) == 2
    assert "missing/results/model_best/predictions.csv" in capsys.readouterr().err


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_error_analysis_tells_neighbour_groups_from_other_misses():
    """Two groups of two landmarks, 100 px apart: a prediction on the other group's same-role
    target is off by one group; one on the other role's target is another landmark."""
    targets = {0: (10.0, 10.0), 1: (50.0, 10.0), 2: (10.0, 110.0), 3: (50.0, 110.0)}
    predictions = {0: (11.0, 10.0), 1: (50.0, 108.0), 2: (50.0, 111.0), 3: (300.0, 300.0)}
    rows = []
    for k, (tx, ty) in targets.items():
        px, py = predictions[k]
        error = float(np.hypot(px - tx, py - ty))
        rows.append(
            dict(id="a", landmark=k, pred_x=px, pred_y=py, target_x=tx, target_y=ty, error_px=error)
        )
    table = pd.DataFrame(rows)
    analysis = load("error_analysis")
    kinds = analysis.classify_misses(table, group_size=2, gross=20.0).tolist()
    assert kinds == ["ok", "neighbour group", "other landmark", "elsewhere"]
    result = analysis.analyse(table, group_size=2, gross=20.0)
    assert result["groups"]["gross_%"].tolist() == [50.0, 100.0]
    assert result["misses"].loc["neighbour group", "count"] == 1
