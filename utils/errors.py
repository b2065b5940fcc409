"""Errors that main.py reports as one line, without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class LannuError(Exception):
    """Bad user input: the message names the file, sample or key and says what to do."""


class ConfigError(LannuError):
    """A config file or key that cannot be used."""


class DataError(LannuError):
    """A dataset JSON, image or annotation that cannot be used."""


class CheckpointError(LannuError):
    """A checkpoint that is missing, corrupt or does not fit the configuration."""


class TrainingError(LannuError):
    """Training cannot go on (e.g. the loss became NaN)."""


def one_line(err: Exception) -> str:
    """The error's message; for one re-raised from a data-loader worker (whose message carries
    the worker's traceback), its last line without the exception's class name."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(err).__name__
    return lines[-1].split(": ", 1)[-1] if "Error: " in lines[-1] else lines[-1]


def run_command(run: Callable[[list[str] | None], Any], argv: list[str] | None) -> int:
    """Exit code of a command-line entry point ``run(argv)``: the int it returns (anything
    else, e.g. None, is 0), or 2 after printing a ``LannuError`` to stderr as one line
    (``error: ...``)."""
    try:
        code = run(argv)
    except LannuError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0
