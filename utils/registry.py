"""Looking a name up in one of the ``*_index.py`` dictionaries."""

from __future__ import annotations

from typing import TypeVar

from utils.errors import ConfigError

T = TypeVar("T")


def look_up(index: dict[str, T], name: str, config_key: str, index_file: str) -> T:
    """``index[name]``; an unknown name raises ConfigError listing the valid ones."""
    if name not in index:
        raise ConfigError(
            f"Unknown {config_key} {name!r}; available: {sorted(index)} "
            f"(register new ones in {index_file})"
        )
    return index[name]
