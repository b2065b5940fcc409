"""Finding images in files and folders: every format, nested folders, ids, DICOM of any name."""

import numpy as np
import pytest

from tests.conftest import write_png
from tests.test_image_io import write_dicom
from utils.errors import DataError
from utils.image_discovery import find_images
from utils.image_io import read_image


def test_folders_are_searched_recursively_with_relative_ids(tmp_path):
    image = np.zeros((6, 8), dtype=np.uint8)
    write_png(tmp_path / "in" / "b.PNG", image)
    write_png(tmp_path / "in" / "sub" / "a.png", image)
    write_png(tmp_path / "in" / ".hidden" / "c.png", image)
    np.savez(tmp_path / "in" / "sub" / "d.npz", image=image)
    (tmp_path / "in" / "notes.txt").write_text("skipped")
    write_dicom(tmp_path / "in" / "1.2.840.10008", np.ones((4, 5), dtype=np.uint16))
    write_png(tmp_path / "single.png", image)
    found = find_images([tmp_path / "in", tmp_path / "single.png"])
    assert [i.id for i in found] == ["1.2.840.10008", "b", "sub/a", "sub/d", "single"]
    assert read_image(found[0].path).pixel_size == (0.25, 0.5)  # DICOM without a suffix


def test_missing_paths_empty_folders_and_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(DataError, match="input not found"):
        find_images([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        find_images([tmp_path / "empty"])
    write_png(tmp_path / "x" / "a.png", np.zeros((3, 3), dtype=np.uint8))
    np.savez(tmp_path / "x" / "a.npz", image=np.zeros((3, 3)))
    with pytest.raises(DataError, match="two images have the id 'a'"):
        find_images([tmp_path / "x"])
