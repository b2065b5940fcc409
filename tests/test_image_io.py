"""Tests of utils/image_io.py: every supported format, its errors, and per-image normalisation."""

import numpy as np
import pytest
from PIL import Image

from utils.coordinates import resize_image
from utils.errors import DataError
from utils.image_io import normalise_image, read_image

SIZE = (5, 7)  # H, W: non-square, so a transposed read fails


def ramp(dtype=np.uint8, step=7):
    """(5, 7) array whose values encode their row and column."""
    rows, cols = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    return (rows * 10 + cols * step).astype(dtype)


def test_png_8bit(tmp_path):
    array = ramp()
    Image.fromarray(array).save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    assert loaded.pixels.shape == SIZE
    assert loaded.pixels.dtype == np.float32
    np.testing.assert_array_equal(loaded.pixels, array.astype(np.float32))
    assert loaded.pixel_size is None


def test_png_16bit_keeps_values_above_255(tmp_path):
    array = (ramp(np.uint16) * 1000 + 300).astype(np.uint16)
    assert array.max() > 255
    image = Image.fromarray(array)
    assert image.mode.startswith("I;16")
    image.save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")  # the file really is 16 bit
    loaded = read_image(tmp_path / "deep.png")
    assert loaded.pixels.shape == SIZE
    np.testing.assert_array_equal(loaded.pixels, array.astype(np.float32))


def test_rgb_png_converted_to_gray(tmp_path):
    rgb = np.zeros((*SIZE, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[1, 2] = (0, 100, 0)  # one green pixel
    rgb[3, 6] = (0, 0, 250)  # one blue pixel
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    pixels = read_image(tmp_path / "rgb.png").pixels
    assert pixels.shape == SIZE
    assert pixels[0, 0] == pytest.approx(0.299 * 200, abs=1e-3)
    assert pixels[1, 2] == pytest.approx(0.587 * 100, abs=1e-3)
    assert pixels[3, 6] == pytest.approx(0.114 * 250, abs=1e-3)


def test_rgba_png_converted_to_gray(tmp_path):
    rgba = np.full((*SIZE, 4), 255, np.uint8)
    rgba[..., :3] = (10, 20, 30)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    pixels = read_image(tmp_path / "rgba.png").pixels
    assert pixels.shape == SIZE
    np.testing.assert_allclose(pixels, 0.299 * 10 + 0.587 * 20 + 0.114 * 30, atol=1e-3)


def test_jpeg_approximately(tmp_path):
    array = np.full((16, 24), 60, np.uint8)
    array[:, 12:] = 180
    Image.fromarray(array).save(tmp_path / "a.jpg", quality=95)
    pixels = read_image(tmp_path / "a.jpg").pixels
    assert pixels.shape == (16, 24)
    assert np.abs(pixels[:, :10] - 60).max() < 8
    assert np.abs(pixels[:, 14:] - 180).max() < 8


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".bmp"])
def test_tiff_and_bmp(tmp_path, suffix):
    array = ramp()
    path = tmp_path / f"a{suffix}"
    Image.fromarray(array).save(path)
    np.testing.assert_array_equal(read_image(path).pixels, array.astype(np.float32))


def test_tiff_16bit(tmp_path):
    array = (ramp(np.uint16) * 500).astype(np.uint16)
    Image.fromarray(array).save(tmp_path / "deep.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "deep.tif").pixels, array)


def test_uppercase_suffix(tmp_path):
    array = ramp()
    Image.fromarray(array).save(tmp_path / "A.PNG", format="PNG")
    np.testing.assert_array_equal(read_image(tmp_path / "A.PNG").pixels, array)


def test_npz_image_key(tmp_path):
    array = ramp(np.float64) / 3
    np.savez(tmp_path / "a.npz", image=array, other=np.zeros(3))
    loaded = read_image(tmp_path / "a.npz")
    assert loaded.pixels.shape == SIZE
    assert loaded.pixels.dtype == np.float32
    np.testing.assert_allclose(loaded.pixels, array, rtol=1e-6)


def test_npz_single_unnamed_array_squeezed(tmp_path):
    array = ramp(np.float32)[None]  # (1, 5, 7)
    np.savez(tmp_path / "a.npz", array)
    np.testing.assert_array_equal(read_image(tmp_path / "a.npz").pixels, array[0])


def test_npz_several_arrays_without_image_key(tmp_path):
    path = tmp_path / "many.npz"
    np.savez(path, first=ramp(), second=ramp())
    with pytest.raises(DataError, match="'image'") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_npz_not_2d(tmp_path):
    path = tmp_path / "line.npz"
    np.savez(path, image=np.arange(7.0))
    with pytest.raises(DataError, match="2D") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_npz_nan_refused(tmp_path):
    array = ramp(np.float32)
    array[2, 3] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, image=array)
    with pytest.raises(DataError, match="NaN"):
        read_image(path)


def write_dicom(path, array, slope=2, intercept=-10, spacing=(0.5, 0.25), implicit=False):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = array.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if spacing is not None:
        ds.PixelSpacing = list(spacing)  # [row spacing (y), column spacing (x)]
    ds.PixelData = array.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("implicit", [False, True])
def test_dicom_rescale_and_pixel_spacing(tmp_path, implicit):
    array = (ramp(np.uint16) * 100 + 1000).astype(np.uint16)
    path = write_dicom(tmp_path / "a.dcm", array, implicit=implicit)
    loaded = read_image(path)
    assert loaded.pixels.shape == SIZE
    np.testing.assert_allclose(loaded.pixels, array.astype(np.float64) * 2 - 10)
    # PixelSpacing [0.5, 0.25] = [row (y), column (x)] -> pixel_size [x, y] = (0.25, 0.5)
    assert loaded.pixel_size == pytest.approx((0.25, 0.5))


def test_dicom_without_rescale_or_spacing(tmp_path):
    array = ramp(np.uint16) * 3
    path = write_dicom(tmp_path / "b.dicom", array, slope=None, spacing=None)
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.pixels, array.astype(np.float32))
    assert loaded.pixel_size is None


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.png"
    with pytest.raises(DataError, match="not found") as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".npz", ".dcm"])
def test_corrupt_file_names_path(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(np.random.default_rng(1).bytes(500))
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_png_names_path(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 60), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "image.gif2"
    path.write_bytes(b"hello")
    with pytest.raises(DataError, match="unsupported") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_normalise_image_zero_mean_unit_std():
    pixels = ramp(np.uint16).astype(np.float64) * 3 + 100
    out = normalise_image(pixels)
    assert out.dtype == np.float32
    assert out.shape == SIZE
    assert float(out.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(out.std()) == pytest.approx(1.0, abs=1e-5)
    # order and proportions are kept: a linear map
    np.testing.assert_allclose(out, (pixels - pixels.mean()) / pixels.std(), atol=1e-5)


def test_normalise_constant_image_gives_zeros():
    out = normalise_image(np.full(SIZE, 42.0))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.zeros(SIZE, np.float32))


def test_truncated_npz_names_path(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, image=ramp())
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("size", [(7, 11), (40, 29)])  # shrinking (area) and enlarging (bilinear)
def test_normalising_by_the_originals_statistics_commutes_with_resizing(size):
    pixels = np.random.default_rng(3).integers(0, 4096, (23, 17)).astype(np.float32)
    expected = resize_image(normalise_image(pixels), size)
    got = normalise_image(resize_image(pixels, size), statistics_of=pixels)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, normalise_image(resize_image(pixels, size)), atol=1e-3)
