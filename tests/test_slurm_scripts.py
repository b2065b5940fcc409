"""The Bessemer scripts: shell syntax, shellcheck, the array's sbatch commands, an array task's
fold and seed, and the requeue after a stop signal (with fake sbatch tools, no Slurm)."""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from datasets.synthetic import make_synthetic_dataset
from tests.test_main import DEMO_CFG, REPO, run_main, tiny_opts

SCRIPTS = REPO / "scripts" / "scripts_bess"
SHELL_SCRIPTS = sorted(SCRIPTS.glob("*.sh"))
# The benchmark scripts of scripts/ are checked with them.
ALL_SHELL_SCRIPTS = [*SHELL_SCRIPTS, *sorted((REPO / "scripts").glob("*.sh"))]


def load_script(name: str):
    """A module of scripts/ (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


array_summary = load_script("array_summary")


def test_the_scripts_are_all_here():
    names = {p.name for p in SHELL_SCRIPTS}
    assert {
        "run_train_config.sh",
        "run_inference_config.sh",
        "submit_train.sh",
        "submit_inference.sh",
        "submit_train_multigpu.sh",
    } <= names


@pytest.mark.parametrize("script", ALL_SHELL_SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck():
    scripts = [str(p.relative_to(REPO)) for p in ALL_SHELL_SCRIPTS]
    result = subprocess.run(
        ["shellcheck", "-x", *scripts], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_array_dry_run_for_four_folds(tmp_path):
    folds = tmp_path / "folds"
    folds.mkdir()
    for fold in range(4):
        (folds / f"fold{fold}.json").write_text("{}")
    out = tmp_path / "cv"
    command = [sys.executable, str(SCRIPTS / "submit_folds.py"), "--cfg", DEMO_CFG]
    overrides = ["DATASET.SRC_TARGETS", str(folds), "OUTPUT.OUTPUT_DIR", str(out)]
    result = subprocess.run(
        [*command, "--seeds", "1", "2", "--dry-run", *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    env = f"--export=ALL,LANNU_DIR={REPO},LANNU_FOLDS=0:1:2:3,LANNU_SEEDS=1:2,LANNU_ARRAY_DIR={out}"
    args = f"--cfg {DEMO_CFG} DATASET.SRC_TARGETS {folds} OUTPUT.OUTPUT_DIR {out}"
    assert result.stdout.splitlines() == [
        f"ARRAY_JOB_ID=$(sbatch --parsable --array=0-7 --output={out}/slurm/train_%A_%a.out "
        f"{env} {SCRIPTS}/submit_train.sh {args})",
        f"sbatch --parsable --dependency=afterok:$ARRAY_JOB_ID --output={out}/slurm/test_%j.out "
        f"{env} {SCRIPTS}/submit_inference.sh {args}",
    ]
    assert not out.exists()  # a dry run submits and creates nothing
    no_folds = subprocess.run(
        [*command, "--dry-run", "DATASET.SRC_TARGETS", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert no_folds.returncode == 2 and "no fold<N>.json" in no_folds.stderr


def fake_cluster(tmp_path: Path, run_train_body: str) -> dict[str, str]:
    """A LANNU_DIR whose run_train_config.sh is ``run_train_body``, and an ``scontrol`` that
    prints its arguments; the environment to run submit_train.sh in."""
    lannu = tmp_path / "lannu"
    scripts = lannu / "scripts" / "scripts_bess"
    scripts.mkdir(parents=True)
    shutil.copy(SCRIPTS / "lannu_env.sh", scripts)
    (scripts / "run_train_config.sh").write_text(run_train_body)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/bash\necho "scontrol $*"\n')
    (bin_dir / "scontrol").chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LANNU_DIR": str(lannu),
        "SLURM_JOB_ID": "1234",
    }


def test_array_task_trains_its_fold_and_seed(tmp_path):
    env = fake_cluster(tmp_path, 'echo "args: $*"\n')
    env |= {"SLURM_ARRAY_TASK_ID": "5", "LANNU_FOLDS": "0:1:2:3", "LANNU_SEEDS": "1:2"}
    env["LANNU_ARRAY_DIR"] = "/runs/cv"
    result = subprocess.run(
        ["bash", str(SCRIPTS / "submit_train.sh"), "--cfg", "x.yaml", "SOLVER.MAX_EPOCHS", "3"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (  # task 5 = fold 5 // 2 = 2, seed [1, 2][5 % 2] = 2
        "args: --cfg x.yaml SOLVER.MAX_EPOCHS 3 TRAINER.FOLD 2 TRAINER.CROSS_VALIDATION False "
        "SOLVER.SEED 2 OUTPUT.OUTPUT_DIR /runs/cv/fold2/seed2 TRAINER.AUTO_RESUME True"
    ) in result.stdout
    assert "scontrol" not in result.stdout


def test_stop_signal_is_forwarded_and_the_job_requeued(tmp_path):
    """Slurm's USR1 reaches the batch shell; training gets SIGTERM and exits with 75."""
    body = "trap 'echo training got TERM; kill $!; exit 75' TERM\necho started\nsleep 20 &\nwait\n"
    env = fake_cluster(tmp_path, body)
    job = subprocess.Popen(
        ["bash", str(SCRIPTS / "submit_train.sh"), "--cfg", "x.yaml"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert job.stdout.readline().strip() == "started"
    time.sleep(0.2)
    job.send_signal(signal.SIGUSR1)
    output, _ = job.communicate(timeout=10)
    assert job.returncode == 0
    assert "training got TERM" in output and "scontrol requeue 1234" in output


def test_array_summary_tests_each_folds_ensemble(tmp_path, capsys):
    data = tmp_path / "data"
    make_synthetic_dataset(
        data, counts=(6, 2, 2), size_range=((40, 44), (50, 54)), seed=9, unannotated_test=0
    )
    raw = json.loads((data / "demo.json").read_text())
    for fold in (0, 1):
        (data / f"fold{fold}.json").write_text(json.dumps({**raw, "fold": fold}))
    out = tmp_path / "cv"
    for fold in (0, 1):
        for seed in (1, 2):  # what the array's four tasks do
            task = [
                *tiny_opts(data, out / f"fold{fold}" / f"seed{seed}", epochs=1),
                "DATASET.SRC_TARGETS",
                str(data),
                "TRAINER.FOLD",
                str(fold),
                "SOLVER.SEED",
                str(seed),
            ]
            assert run_main(["--cfg", DEMO_CFG, *task], capsys)[0] == 0
    opts = [*tiny_opts(data, tmp_path / "unused"), "DATASET.SRC_TARGETS", str(data)]
    argv = ["--folds", "0:1", "--seeds", "1:2", "--output-dir", str(out), "--cfg", DEMO_CFG]
    assert array_summary.main([*argv, *opts]) == 0
    for fold in (0, 1):
        table = pd.read_csv(out / f"fold{fold}" / "results" / "ensemble" / "predictions.csv")
        assert list(table["method"].unique()) == ["smha", "emha", "ecpv"]
    summary = pd.read_csv(out / "cross_validation" / "summary.csv", dtype={"fold": str})
    assert set(summary["fold"]) == {"all", "0", "1"}
    overall = summary[(summary["fold"] == "all") & (summary["landmark"] == "all")]
    assert sorted(overall["method"]) == ["ecpv", "emha", "smha"]
    assert (overall["n"] == 2 * 2 * 4).all()  # 2 folds x 2 test images x 4 landmarks
