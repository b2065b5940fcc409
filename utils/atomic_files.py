"""Writing files atomically: a temporary file beside the target, renamed into place, so an
interrupted write never leaves half a file under the real name."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from utils.errors import ConfigError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that look at it still work)
    to write to; renamed to ``path`` when the block ends without an error, deleted if not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def refuse_existing(path: str | Path, option: str) -> None:
    """Refuse to write over an earlier result: ConfigError if ``path`` exists (``option``:
    the command-line option that named it)."""
    if Path(path).exists():
        raise ConfigError(f"{path} already exists; choose another {option} or delete it")
