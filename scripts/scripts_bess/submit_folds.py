"""Submit every cross-validation fold (x every seed) as one Slurm job array, and a job that waits
for all of them (``--dependency=afterok``) to test them and write the cross-validation summary.

python scripts/scripts_bess/submit_folds.py --cfg FILE [--seeds 1 2 3] [--dry-run] [KEY VALUE ...]

Run it from the repository root on the login node, with the environment active. The folds are
the ``fold<N>.json`` files in DATASET.SRC_TARGETS; task i of the array trains fold
``folds[i // len(seeds)]`` with seed ``seeds[i % len(seeds)]`` into
``OUTPUT_DIR/fold<N>/seed<S>`` (without --seeds: ``OUTPUT_DIR/fold<N>``, SOLVER.SEED of the
config). Slurm's logs go to ``OUTPUT_DIR/slurm/``. ``--dry-run`` prints the sbatch commands.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from config import load_cfg  # noqa: E402
from inference.cross_validation import fold_numbers  # noqa: E402
from utils.errors import LannuError, one_line  # noqa: E402

SCRIPTS = REPO / "scripts" / "scripts_bess"
ARRAY_JOB_ID = "$ARRAY_JOB_ID"  # the array's job id: a shell variable in the dry run's script


def export(folds: list[int], seeds: list[int], output_dir: Path) -> str:
    """sbatch's --export: what submit_train.sh and submit_inference.sh read (lists joined by
    ":", since --export splits at commas)."""
    values = [
        "ALL",
        f"LANNU_DIR={REPO}",
        f"LANNU_FOLDS={':'.join(map(str, folds))}",
        f"LANNU_SEEDS={':'.join(map(str, seeds))}",
        f"LANNU_ARRAY_DIR={output_dir}",
    ]
    return "--export=" + ",".join(values)


def sbatch_commands(
    cfg_file: str, opts: list[str], folds: list[int], seeds: list[int], output_dir: Path
) -> tuple[list[str], list[str]]:
    """The array's sbatch command, and the dependent summary job's (waiting for
    :data:`ARRAY_JOB_ID`)."""
    tasks = len(folds) * max(len(seeds), 1)
    logs = output_dir / "slurm"
    env = export(folds, seeds, output_dir)
    array = [
        "sbatch",
        "--parsable",
        f"--array=0-{tasks - 1}",
        f"--output={logs}/train_%A_%a.out",
        env,
        str(SCRIPTS / "submit_train.sh"),
        "--cfg",
        cfg_file,
        *opts,
    ]
    summary = [
        "sbatch",
        "--parsable",
        f"--dependency=afterok:{ARRAY_JOB_ID}",
        f"--output={logs}/test_%j.out",
        env,
        str(SCRIPTS / "submit_inference.sh"),
        "--cfg",
        cfg_file,
        *opts,
    ]
    return array, summary


def submit(command: list[str]) -> str:
    """Run sbatch; its job id (``--parsable`` prints ``id[;cluster]``)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit(
            "error: sbatch not found: run on a Slurm login node, or use --dry-run"
        ) from None
    if result.returncode:
        raise SystemExit(f"error: sbatch failed: {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="the YAML config (DATASET.SRC_TARGETS: folds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[], help="train each fold per seed")
    parser.add_argument("--dry-run", action="store_true", help="print sbatch commands only")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_cfg(args.cfg, args.opts)
        folds = fold_numbers(cfg.DATASET.SRC_TARGETS)
        # Check now what every array task will run with (submit_train.sh adds these), not after
        # the tasks have waited in the queue.
        task = ["TRAINER.FOLD", str(folds[0]), "TRAINER.CROSS_VALIDATION", "False"]
        load_cfg(args.cfg, [*args.opts, *task, "TRAINER.AUTO_RESUME", "True"])
    except LannuError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    if len(set(args.seeds)) != len(args.seeds):
        print(f"error: --seeds {args.seeds} repeats a seed", file=sys.stderr)
        return 2
    output_dir = Path(cfg.OUTPUT.OUTPUT_DIR).resolve()
    array, summary = sbatch_commands(args.cfg, list(args.opts), folds, args.seeds, output_dir)
    if args.dry_run:  # a script that would submit the same jobs
        print(f"ARRAY_JOB_ID=$({shlex.join(array)})")
        print(" ".join(p if p.startswith("--dependency") else shlex.quote(p) for p in summary))
        return 0
    (output_dir / "slurm").mkdir(parents=True, exist_ok=True)  # Slurm cannot create it
    job = submit(array)
    print(f"submitted array job {job}: folds {folds} x seeds {args.seeds or [cfg.SOLVER.SEED]}")
    summary = [part.replace(ARRAY_JOB_ID, job) for part in summary]
    print(f"submitted job {submit(summary)}: tests and summary after the array succeeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
