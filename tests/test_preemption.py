"""Preemption: a signal stops training after the step with a loadable latest checkpoint, and
TRAINER.AUTO_RESUME continues from the next epoch as if nothing had happened."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from tests.test_main import DEMO_CFG, REPO, run_main, tiny_opts
from trainer.preemption import (
    PREEMPTED_EXIT_CODE,
    latest_checkpoint,
    stop_on_signals,
    stop_requested,
)
from utils.checkpoints import load_checkpoint
from utils.distributed import ProcessGroup
from utils.errors import CheckpointError

CPU = torch.device("cpu")


def test_signal_sets_the_flag_only_inside_the_block():
    previous = signal.getsignal(signal.SIGUSR1)
    with stop_on_signals():
        assert not stop_requested(CPU, ProcessGroup())
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)  # let the interpreter run the handler
        assert stop_requested(CPU, ProcessGroup())
    assert not stop_requested(CPU, ProcessGroup())
    assert signal.getsignal(signal.SIGUSR1) is previous


def test_auto_resume_needs_the_latest_checkpoint(tmp_path):
    latest = tmp_path / "model_latest_fold2.model"
    assert latest_checkpoint([], latest) is None
    best = tmp_path / "model_best_fold2.model"
    with pytest.raises(CheckpointError, match="model_best_fold2.model but no model_latest"):
        latest_checkpoint([best], latest)


def test_auto_resume_excludes_an_explicit_checkpoint(tiny_data, tmp_path, capsys):
    opts = [*tiny_opts(tiny_data, tmp_path), "TRAINER.AUTO_RESUME", "True"]
    code, err = run_main(["--cfg", DEMO_CFG, *opts, "MODEL.CHECKPOINT", "x.model"], capsys)
    assert code == 2 and "TRAINER.AUTO_RESUME" in err and "MODEL.CHECKPOINT" in err


def test_sigterm_then_auto_resume_repeats_no_epoch(tiny_data, tmp_path, capsys):
    """Training run by run_train_config.sh, as in a Slurm job: Slurm's SIGUSR1 to the shell
    reaches main.py as SIGTERM; the exit status says requeue; the rerun resumes."""
    epochs = 6
    out, straight = tmp_path / "preempted", tmp_path / "straight"
    opts = [*tiny_opts(tiny_data, out, epochs=epochs), "TRAINER.AUTO_RESUME", "True"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LANNU_LAUNCHER": sys.executable}
    script = REPO / "scripts" / "scripts_bess" / "run_train_config.sh"
    process = subprocess.Popen(
        ["bash", str(script), "--cfg", DEMO_CFG, *opts],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (out / "model_latest.model").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGUSR1)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == PREEMPTED_EXIT_CODE, stderr
    assert "preempted" in stderr and "AUTO_RESUME" in stderr
    stopped = load_checkpoint(out / "model_latest.model")["epoch"]
    assert 1 <= stopped < epochs
    assert list(pd.read_csv(out / "metrics.csv")["epoch"]) == list(range(1, stopped + 1))

    code, err = run_main(["--cfg", DEMO_CFG, *opts], capsys)  # what the requeued job runs
    assert code == 0, err
    logs = "".join(path.read_text() for path in out.glob("log_*.txt"))
    assert "preempted: SIGTERM signal" in logs  # forwarded by the script as SIGTERM
    assert "TRAINER.AUTO_RESUME: resuming from" in logs and f"after epoch {stopped}" in logs
    assert run_main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, straight, epochs)], capsys)[0] == 0
    resumed, reference = pd.read_csv(out / "metrics.csv"), pd.read_csv(straight / "metrics.csv")
    assert list(resumed["epoch"]) == list(range(1, epochs + 1))
    # Equal up to float summation order: the straight run shares pytest's process, whose
    # intra-op thread count can differ from the script's subprocess.
    for column in ("train_loss", "val_mre_px"):
        np.testing.assert_allclose(resumed[column], reference[column], rtol=1e-5)
