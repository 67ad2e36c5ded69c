"""The one image reader: formats, conversions, orientation, and bad input with one-line messages."""
import io
import struct
import sys
import zlib
from typing import Optional

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image

from retinaseg.cli import cli as retinaseg_cli
from retinaseg.errors import ImageReadError
from retinaseg.io.atomic import write_png, write_probabilities
from retinaseg.io.images import (is_image_name, jpeg_size, read_binary_mask, read_mask, read_photo, read_probabilities,
                                 reduction_of)


@pytest.fixture
def rgb(fundus):
    return fundus.image_uint8()


@pytest.mark.parametrize("name", ["x.png", "x.jpg", "x.JPG", "x.jpeg", "x.JPEG", "x.Jpeg", "x.bmp", "x.ppm",
                                  "x.tif", "x.tiff", "x.TIF", "x.webp", "x.jp2"])
def test_colour_formats_read_as_float_rgb(tmp_path, rgb, name):
    path = tmp_path / name
    if name.lower().endswith((".tif", ".tiff")):
        tifffile.imwrite(path, rgb)
    else:  # WebP lossless; JPEG 2000 is Pillow's reversible (lossless) wavelet by default
        Image.fromarray(rgb).save(path, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(path.suffix[1:].lower()),
                                  lossless=True)
    assert is_image_name(path)  # so a folder of them is read
    photo = read_photo(path)
    assert photo.shape == rgb.shape and photo.dtype == np.float32
    assert 0 <= photo.min() and photo.max() <= 1
    tolerance = 0.08 if "jp" in name.lower() else 1e-6
    assert np.abs(photo - rgb / 255.0).mean() < tolerance


def test_rgba_tiff_drops_alpha(tmp_path, rgb):
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba)
    photo = read_photo(tmp_path / "rgba.tif")
    assert photo.shape == rgb.shape
    assert np.allclose(photo, rgb / 255.0)


def test_16bit_tiff_scales_to_unit_range(tmp_path, rgb):
    tifffile.imwrite(tmp_path / "deep.tif", rgb.astype(np.uint16) * 257)
    photo = read_photo(tmp_path / "deep.tif")
    assert photo.dtype == np.float32 and np.allclose(photo, rgb / 255.0, atol=1e-4)


def test_lzw_tiff_mask_reads(tmp_path):
    mask = np.zeros((40, 50, 3), np.uint8)
    mask[5:30, 10:40] = 255
    tifffile.imwrite(tmp_path / "mask.tif", mask, compression="lzw")
    assert read_binary_mask(tmp_path / "mask.tif").sum() == 25 * 30


def test_grey_images_become_three_channels(tmp_path, rgb):
    grey = rgb[..., 1]
    iio.imwrite(tmp_path / "g.png", grey)
    Image.fromarray(grey).save(tmp_path / "g.pgm")
    Image.fromarray((grey.astype(np.uint16) * 257)).save(tmp_path / "g16.png")
    for name in ("g.png", "g.pgm", "g16.png"):
        photo = read_photo(tmp_path / name)
        assert photo.shape == grey.shape + (3,)
        assert np.allclose(photo[..., 0], photo[..., 2]) and np.allclose(photo[..., 0], grey / 255.0, atol=1e-3)


def test_gif_mask_and_palette_gif(tmp_path):
    mask = np.zeros((40, 30), np.uint8)
    mask[10:20, 5:25] = 255
    Image.fromarray(mask).save(tmp_path / "m.gif")
    Image.fromarray(mask).convert("P").save(tmp_path / "p.gif")
    for name in ("m.gif", "p.gif"):
        assert read_binary_mask(tmp_path / name).sum() == 200
        assert read_mask(tmp_path / name).ndim == 2


def test_exif_orientation_is_respected(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    image[:10, :10] = 255  # white block top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    Image.fromarray(image).save(tmp_path / "o.jpg", exif=exif, quality=95)
    photo = read_photo(tmp_path / "o.jpg")
    assert photo.shape == (60, 40, 3)
    assert photo[:10, -10:].mean() > 0.8  # the block is now top-right


def test_a_jpeg_decodes_at_a_reduced_size_upright_and_other_formats_whole(tmp_path):
    image = np.zeros((45, 70, 3), np.uint8)
    image[:16, :16] = 255  # white block top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(image).save(tmp_path / "o.jpg", exif=exif, quality=95)
    assert jpeg_size(tmp_path / "o.jpg") == (70, 45)  # upright, as read_photo turns it
    for reduction in (2, 4, 8):
        photo = read_photo(tmp_path / "o.jpg", reduction)
        assert photo.shape == (-(-70 // reduction), -(-45 // reduction), 3)
        assert reduction_of(photo.shape, (70, 45)) == reduction
        assert photo[: 8 // reduction, -(8 // reduction):].mean() > 0.8  # turned like the whole photo
    Image.fromarray(image).save(tmp_path / "o.png")
    assert jpeg_size(tmp_path / "o.png") is None
    assert read_photo(tmp_path / "o.png", 4).shape == (45, 70, 3)
    with pytest.raises(ValueError, match="no JPEG reduction"):
        reduction_of((30, 35, 3), (70, 45))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width, height) -> bytes:
    """A PNG whose header claims width x height but that carries almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def make_bad_inputs(folder, good_image):
    """Every kind of bad input, beside one good photo. Returns {file name: expected message fragment}."""
    (folder / "not_an_image.jpg").write_text("this is text, not a JPEG")
    full = folder / "full.jpg"
    Image.fromarray(good_image).save(full, quality=95)
    (folder / "truncated.jpg").write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    full.unlink()
    (folder / "zero.png").write_bytes(b"")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "tiny.png")
    (folder / "huge.png").write_bytes(_png_header_only(100_000, 100_000))
    (folder / "folder.tif").mkdir()
    tifffile.imwrite(folder / "whole.tif", good_image)
    (folder / "cut.tif").write_bytes((folder / "whole.tif").read_bytes()[:8])  # the header alone: no image pages
    (folder / "whole.tif").unlink()
    Image.fromarray(np.full((20, 20, 3), 77, np.uint8)).save(folder / "blank.png")
    Image.fromarray(good_image).save(folder / "good.png")
    return {
        "not_an_image.jpg": "not a readable image",
        "truncated.jpg": "truncated or corrupt image data",
        "zero.png": "empty file (0 bytes)",
        "tiny.png": "image too small (1x1",
        "huge.png": "too large",
        "folder.tif": "is a folder, not an image",
        "cut.tif": "truncated or corrupt",
        "blank.png": "image is blank",
    }


def test_each_bad_input_has_a_one_line_message_naming_the_file(tmp_path, rgb):
    expected = make_bad_inputs(tmp_path, rgb)
    for name, fragment in expected.items():
        with pytest.raises(ImageReadError) as error:
            read_photo(tmp_path / name)
        message = str(error.value)
        assert message.startswith(str(tmp_path / name) + ": ") and fragment in message, message
        assert "\n" not in message
    assert read_photo(tmp_path / "good.png").shape == rgb.shape


def test_absurd_size_is_refused_before_decoding(tmp_path, monkeypatch):
    (tmp_path / "huge.png").write_bytes(_png_header_only(30_000, 20_000))  # 600 MP, no pixel data at all
    with pytest.raises(ImageReadError, match="too large"):
        read_photo(tmp_path / "huge.png")


def test_a_batch_with_bad_inputs_processes_the_rest(cli, tmp_path, rgb, fake_models):
    inputs = tmp_path / "in"
    inputs.mkdir()
    expected = make_bad_inputs(inputs, rgb)
    out = tmp_path / "out"
    result = cli.invoke(retinaseg_cli, ["run", "-m", "dark-vessels", "-q", str(inputs), str(out)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    for name, fragment in expected.items():
        assert sum(name in line and fragment in line for line in lines) == 1, (name, result.output)
    assert (out / "raw_pre" / "good.png").is_file()
    assert f"1 ok, 0 skipped, {len(expected)} failed" in result.output


def test_writers_produce_8bit_png_and_float32_tiff(tmp_path):
    mask = np.zeros((30, 40), np.uint8)
    mask[5:10] = 255
    write_png(tmp_path / "m.png", mask)
    back = iio.imread(tmp_path / "m.png")
    assert back.dtype == np.uint8 and np.array_equal(back, mask)
    prob = np.random.default_rng(0).random((4, 30, 40)).astype(np.float32)
    prob[0, 0, :3] = [0.5, np.nextafter(np.float32(0.5), np.float32(0)), 1.0]  # the threshold falls as it did
    write_probabilities(tmp_path / "p.tif", prob)
    assert tifffile.imread(tmp_path / "p.tif").dtype == np.uint16  # a fifth of float32's size, any tool reads it
    back = read_probabilities(tmp_path / "p.tif")
    assert back.dtype == np.float32 and back.shape == prob.shape and np.abs(back - prob).max() <= 0.5 / 65535
    assert np.array_equal(back >= 0.5, prob >= 0.5)
    tifffile.imwrite(tmp_path / "f.tif", prob[1])  # float probabilities, as written before, read as they are
    assert np.array_equal(read_probabilities(tmp_path / "f.tif"), prob[1:2])
    with pytest.raises(TypeError):
        write_png(tmp_path / "bad.png", prob[0])


def write_dicom(path, pixels: np.ndarray, photometric: str = "RGB", bits: int = 8, jpeg: Optional[bytes] = None):
    """An ophthalmic photograph as a camera's DICOM export holds it: pixels as stored, or a JPEG in its frame."""
    pydicom = pytest.importorskip("pydicom", reason="DICOM is read through the [dicom] extra, which make test installs")
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.1"  # Ophthalmic Photography 8 Bit Image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    dataset = pydicom.dataset.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape[:2]
    dataset.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    dataset.PhotometricInterpretation = photometric
    if pixels.ndim == 3:
        dataset.PlanarConfiguration = 0
    dataset.BitsAllocated = 8 * pixels.dtype.itemsize
    dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = bits, bits - 1, 0
    dataset.PixelData = encapsulate([jpeg]) if jpeg else pixels.tobytes()
    if jpeg:
        dataset["PixelData"].VR = "OB"
    dataset.save_as(path, enforce_file_format=True)


def test_dicom_photos_read_as_the_same_photo(tmp_path, rgb):
    write_dicom(tmp_path / "rgb.dcm", rgb)
    assert np.array_equal(read_photo(tmp_path / "rgb.dcm"), rgb / np.float32(255))
    # a JPEG-compressed one, stored as YCbCr as cameras store it; and one named without an extension
    encoded = io.BytesIO()
    Image.fromarray(rgb).save(encoded, format="JPEG", quality=95)
    write_dicom(tmp_path / "IM000001", rgb, "YBR_FULL_422", jpeg=encoded.getvalue())
    assert np.abs(read_photo(tmp_path / "IM000001") - rgb / 255.0).mean() < 0.02
    # 12-bit grey stored inverted (MONOCHROME1: 0 is white)
    grey = (rgb[..., 1].astype(np.uint16) * 16)
    write_dicom(tmp_path / "grey.dcm", 4095 - grey, "MONOCHROME1", bits=12)
    photo = read_photo(tmp_path / "grey.dcm")
    assert photo.shape == rgb.shape and np.allclose(photo[..., 0], grey / 4095.0, atol=1e-6)


def test_a_dicom_file_that_cannot_be_read_says_why_in_one_line(tmp_path, rgb, monkeypatch):
    write_dicom(tmp_path / "rgb.dcm", rgb)
    (tmp_path / "not.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(ImageReadError, match="not.dcm: not a readable image"):
        read_photo(tmp_path / "not.dcm")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as without the [dicom] extra
    with pytest.raises(ImageReadError, match=r"rgb.dcm: a DICOM file: reading it needs pydicom \(pip install "
                                             r"'retinaseg\[dicom\]'\)"):
        read_photo(tmp_path / "rgb.dcm")


def test_run_segments_a_folder_of_dicom_photos(cli, tmp_path, rgb, fake_models):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_dicom(photos / "eye1.dcm", rgb)
    write_dicom(photos / "IM000002", rgb)  # a PACS export's files have no extension
    (photos / "DICOMDIR").write_bytes(bytes(128) + b"DICM" + bytes(64))  # its index, which holds no image
    (photos / "README").write_text("no image")
    write_dicom(tmp_path / "IM000009", rgb)  # one named on the command line
    result = cli.invoke(retinaseg_cli, ["run", "-m", "dark-vessels", "-q", str(photos), str(tmp_path / "IM000009"),
                                        str(tmp_path / "out")])
    assert result.exit_code == 0 and "3 ok, 0 skipped, 0 failed" in result.output, result.output
    assert iio.imread(tmp_path / "out" / "raw_pre" / "eye1.png").shape == rgb.shape[:2]
    assert {p.name for p in (tmp_path / "out" / "raw_pre").iterdir()} == {"eye1.png", "IM000002.png", "IM000009.png"}
    assert "holds 2 file(s) not read as photos (no extension)" in result.output
