"""Tests of datasets/landmark_info.py: landmark names and flip pairs, and their selection."""

import pytest

from datasets.landmark_info import (
    LandmarkInfo,
    check_landmark_count,
    read_landmark_info,
    select_landmarks,
)
from utils.coordinates import flip_permutation
from utils.errors import DataError


def test_names_and_pairs_are_read():
    info = read_landmark_info({"landmark_names": ["a", "b", "c"], "flip_pairs": [[0, 2]]}, "x")
    assert info == LandmarkInfo(("a", "b", "c"), ((0, 2),))
    assert read_landmark_info({}, "x") == LandmarkInfo()
    assert check_landmark_count(info, 3, "x") == []
    assert "has 3 names for 4 coordinates" in check_landmark_count(info, 4, "x")[0]
    assert "beyond the 2 coordinates" in check_landmark_count(info, 2, "x")[-1]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"landmark_names": "abc"}, "list of strings"),
        ({"landmark_names": ["a", "a"]}, "a name twice"),
        ({"flip_pairs": [[0, 1, 2]]}, "must be [i, j]"),
        ({"flip_pairs": [[0, -1]]}, "must be [i, j]"),
        ({"flip_pairs": [[1, 1]]}, "repeats a landmark"),
        ({"flip_pairs": [[0, 1], [1, 2]]}, "repeats a landmark"),
    ],
)
def test_malformed_keys_are_refused_naming_the_file(data, message):
    with pytest.raises(DataError, match=r"f\.json: .*") as err:
        read_landmark_info(data, "f.json")
    assert message in str(err.value)


def test_selection_keeps_whole_pairs_as_positions_and_refuses_half_pairs():
    info = LandmarkInfo(("l0", "l1", "l2", "l3", "l4"), ((0, 4), (1, 3)))
    assert select_landmarks(info, [], "x") == (["l0", "l1", "l2", "l3", "l4"], [(0, 4), (1, 3)])
    # landmarks 4, 2, 0 are served in that order: the pair (0, 4) sits at positions 2 and 0
    assert select_landmarks(info, [4, 2, 0], "x") == (["l4", "l2", "l0"], [(2, 0)])
    with pytest.raises(DataError, match=r"selects landmark 1 but not 3, its flip pair \[1, 3\]"):
        select_landmarks(info, [0, 1, 4], "x")


def test_flip_permutation_swaps_exactly_the_pairs():
    assert flip_permutation(5, [(0, 4), (1, 3)]) == [4, 3, 2, 1, 0]
    assert flip_permutation(3, []) == [0, 1, 2]
