"""The optional top-level keys of a dataset JSON that describe the landmarks themselves.

- ``"landmark_names": ["sella", "nasion", ...]``: one name per JSON coordinate.
- ``"flip_pairs": [[i, j], ...]``: JSON coordinate indices of landmarks that swap under a
  horizontal flip (left and right of the same structure). Without pairs a flip never changes
  which landmark is which.

``DATASET.LANDMARKS`` selects landmarks by JSON index; :func:`select_landmarks` keeps the names
of the selected ones and the pairs whose both members are selected (as positions in the
selection), and refuses a half pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from utils.errors import DataError


@dataclass(frozen=True)
class LandmarkInfo:
    """``names``: one per JSON coordinate, or None; ``flip_pairs``: (i, j) JSON indices."""

    names: tuple[str, ...] | None = None
    flip_pairs: tuple[tuple[int, int], ...] = ()


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_landmark_info(data: dict, path: str | Path) -> LandmarkInfo:
    """``landmark_names`` and ``flip_pairs`` of a parsed dataset JSON, checked for form (not
    yet against the number of coordinates: :func:`check_landmark_count`)."""
    names = data.get("landmark_names")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise DataError(f"{path}: 'landmark_names' must be a list of strings")
    if names is not None and len(set(names)) != len(names):
        raise DataError(f"{path}: 'landmark_names' has a name twice")
    pairs = data.get("flip_pairs", [])
    if not isinstance(pairs, list):
        raise DataError(f"{path}: 'flip_pairs' must be a list of [i, j] landmark indices")
    seen: set[int] = set()
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(map(_is_index, pair))):
            raise DataError(f"{path}: flip pair {pair!r} must be [i, j], two indices >= 0")
        if pair[0] == pair[1] or seen & set(pair):
            raise DataError(
                f"{path}: flip pair {pair} repeats a landmark (each landmark swaps with one other)"
            )
        seen |= set(pair)
    return LandmarkInfo(
        None if names is None else tuple(names), tuple((int(i), int(j)) for i, j in pairs)
    )


def check_landmark_count(info: LandmarkInfo, count: int, path: str | Path) -> list[str]:
    """Messages for names and pairs that do not fit ``count`` coordinates per sample."""
    problems = []
    if info.names is not None and len(info.names) != count:
        problems.append(
            f"{path}: 'landmark_names' has {len(info.names)} names for {count} coordinates"
        )
    for pair in info.flip_pairs:
        if max(pair) >= count:
            problems.append(
                f"{path}: flip pair {list(pair)} names a landmark beyond the {count} coordinates"
            )
    return problems


def select_landmarks(
    info: LandmarkInfo, landmarks: Sequence[int], path: str | Path
) -> tuple[list[str] | None, list[tuple[int, int]]]:
    """Names of the selected landmarks (``landmarks`` = JSON indices; empty = all), and the flip
    pairs as positions in the selection. A pair with one member selected is a DataError."""
    if not landmarks:
        return (None if info.names is None else list(info.names)), list(info.flip_pairs)
    position = {index: n for n, index in enumerate(landmarks)}
    pairs = []
    for i, j in info.flip_pairs:
        if (i in position) != (j in position):
            kept, dropped = (i, j) if i in position else (j, i)
            raise DataError(
                f"{path}: DATASET.LANDMARKS selects landmark {kept} but not {dropped}, its flip "
                f"pair [{i}, {j}]; select both or neither"
            )
        if i in position:
            pairs.append((position[i], position[j]))
    names = None if info.names is None else [info.names[i] for i in landmarks]
    return names, pairs
