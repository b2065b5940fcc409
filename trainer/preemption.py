"""Stopping cleanly when Slurm says the job's time is up, and resuming where it stopped.

Slurm sends SIGTERM (or, with ``#SBATCH --signal=USR1@<seconds>``, SIGUSR1) before it kills a
job. While :func:`stop_on_signals` is active, such a signal only sets a flag; the trainer checks
it after every step (:func:`stop_requested`), leaves the epoch unfinished and raises
:class:`Preempted`, and ``main.py`` exits with :data:`PREEMPTED_EXIT_CODE`, on which the submit
scripts requeue the job. The checkpoint to resume from is ``model_latest``, written atomically
at the end of every epoch, so a resumed run repeats the interrupted epoch from its start and
draws exactly the batches it would have drawn (the trainer seeds each epoch): the resumed run is
the uninterrupted one, and metrics.csv (rewritten from the checkpoint's history) has every epoch
once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from utils.distributed import ProcessGroup, sum_over_ranks
from utils.errors import CheckpointError

logger = logging.getLogger(__name__)

# EX_TEMPFAIL of sysexits.h ("try again later"): what the submit scripts requeue on.
PREEMPTED_EXIT_CODE = 75

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: list[int] = []  # the signals caught while stop_on_signals is active


class Preempted(Exception):
    """Training stopped on a signal; the latest completed epoch is in model_latest."""


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` are recorded for :func:`stop_requested` instead of
    terminating the process; the previous handlers come back afterwards."""

    def record(signum, _frame) -> None:
        # Only record: writing to a stream here could re-enter a write the signal interrupted.
        _received.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _received.clear()


def stop_requested(device: torch.device, group: ProcessGroup) -> bool:
    """Whether a stop signal has arrived, on this rank or any other: every rank stops after the
    same step, so none waits forever for the others' gradients."""
    if not group.distributed:
        return bool(_received)
    return sum_over_ranks([float(bool(_received))], device)[0] > 0


def received_signals() -> str:
    """The names of the stop signals received, for messages ("SIGUSR1"; "another rank's")."""
    return ", ".join(sorted({signal.Signals(s).name for s in _received})) or "another rank's"


def latest_checkpoint(own_checkpoints: list[Path], latest: Path) -> Path | None:
    """TRAINER.AUTO_RESUME: ``latest`` (this fold's model_latest) if it exists, else None (a
    fresh start); a folder with other checkpoints of this fold but no latest one is refused."""
    if latest.is_file():
        logger.info("TRAINER.AUTO_RESUME: resuming from %s", latest)
        return latest
    if own_checkpoints:
        raise CheckpointError(
            f"TRAINER.AUTO_RESUME: {latest.parent} holds {own_checkpoints[0].name} but no "
            f"{latest.name} to resume from; set MODEL.CHECKPOINT"
        )
    logger.info("TRAINER.AUTO_RESUME: no %s yet, training from the start", latest)
    return None
