"""The one image reader: photos, masks and labels from every format the public data sets and cameras use.

TIFF goes through tifffile (RGBA, 16-bit, LZW via imagecodecs); everything else through Pillow (PNG, JPEG in
any case of extension, GIF, PPM/PGM, BMP), with EXIF orientation applied. Colour spaces are converted to RGB
(CMYK and YCCK through the file's ICC profile when it has one, palettes applied, inverted grey TIFFs turned
back); what cannot be converted correctly is refused, never guessed. Every failure is an ImageReadError whose
message names the file and the problem in one line.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import tifffile
from PIL import Image, ImageCms, ImageOps

from retinaseg.errors import ImageReadError, RetinasegError, shown

TIFF_EXTENSIONS = (".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm", ".dicom")  # and files without an extension that begin as DICOM files do
IMAGE_EXTENSIONS = TIFF_EXTENSIONS + (".png", ".jpg", ".jpeg", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".bmp", ".webp",
                                      ".jp2", ".j2k") + DICOM_EXTENSIONS
DICOM_PREAMBLE = 128  # a DICOM file's bytes before its "DICM" signature
MIN_SIDE = 16
EXIF_ORIENTATION = 0x0112  # the EXIF tag that says how a camera's photo is turned
_QUARTER_TURNS = (5, 6, 7, 8)  # its values that swap width and height
# Refused before decoding: 250 megapixels is ten times the largest fundus camera sensor.
MAX_PIXELS_ENV = "RETINASEG_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 250_000_000
# Sizes are checked on the header here, with one limit and one message; Pillow's own decompression-bomb check
# (a warning above 89 MP, an error above 179 MP) would otherwise speak first, with other numbers.
Image.MAX_IMAGE_PIXELS = None
# tifffile logs lines that name no file (e.g. `<TiffTag.fromfile> raised ...`) about tags it skips; a file it
# cannot read raises, and our ImageReadError says so in one line naming the file.
_tifffile_log = logging.getLogger("tifffile")
_tifffile_log.addHandler(logging.NullHandler())
_tifffile_log.propagate = False
_tifffile_log.setLevel(logging.CRITICAL + 1)
# Pillow warns, naming no file, about damaged tags it skips ("Tag data larger than file"); a file it cannot
# decode raises, and is reported with its name
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")

# Pillow modes whose pixels are usable as they are (grey, RGB, their alpha forms, 16-bit and float grey)
_PLAIN_MODES = ("1", "L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "F")
# modes Pillow converts to RGB exactly (a palette looked up, YCbCr and HSV by their formulas, padding dropped)
_CONVERTIBLE_MODES = {"P": "RGB", "PA": "RGBA", "YCbCr": "RGB", "HSV": "RGB", "RGBX": "RGB", "RGBa": "RGBA"}
_SRGB = ImageCms.createProfile("sRGB")


def max_pixels() -> int:
    """The largest image read, in pixels: $RETINASEG_MAX_PIXELS, else 250 million."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < MIN_SIDE * MIN_SIDE:
        raise RetinasegError(f"{MAX_PIXELS_ENV}={text!r}: expected a whole number of pixels, e.g. 400000000")
    return value


def is_image_name(path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _fail(path, problem: str) -> ImageReadError:
    return ImageReadError(f"{shown(path)}: {problem}")


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_EXTENSIONS


def _is_dicom(path: Path) -> bool:
    """By its name, or, for a name no other format reader claims, by its signature (cameras and PACS exports often
    give DICOM files no extension); a photo named as a JPEG, PNG, ... is not opened an extra time for it."""
    suffix = path.suffix.lower()
    return suffix in DICOM_EXTENSIONS or (suffix not in IMAGE_EXTENSIONS and has_dicom_signature(path))


def has_dicom_signature(path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(DICOM_PREAMBLE + 4)[DICOM_PREAMBLE:] == b"DICM"
    except OSError:
        return False


def _dicom(path: Path, pixels: bool = True):
    """The DICOM dataset at path (without its pixel data unless pixels), read by pydicom, the [dicom] extra."""
    try:
        import pydicom
    except ImportError:
        raise _fail(path, "a DICOM file: reading it needs pydicom (pip install 'retinaseg[dicom]')") from None
    dataset = pydicom.dcmread(path, stop_before_pixels=not pixels)
    if "Rows" not in dataset or "Columns" not in dataset or (pixels and "PixelData" not in dataset):
        raise _fail(path, "a DICOM file without an image (no pixel data)")
    return dataset


def image_size(path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding pixels."""
    path = Path(path)
    _check_file(path)
    try:
        if _is_dicom(path):
            dataset = _dicom(path, pixels=False)
            return int(dataset.Rows), int(dataset.Columns)
        if _is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                if not len(tif.pages):
                    raise _fail(path, "truncated or corrupt TIFF (it holds no image)")
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        with Image.open(path) as im:
            width, height = im.size
            return height, width
    except ImageReadError:
        raise
    except Exception as exc:
        raise _fail(path, f"not a readable image ({_describe(exc)})") from None


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise _fail(path, "is a folder, not an image")
    if not path.exists():
        if path.is_symlink():
            try:
                path.stat()
            except RuntimeError:  # Python 3.11 raises this, not OSError, for a loop
                raise _fail(path, "symbolic link loop") from None
            except OSError as exc:
                problem = "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link"
                raise _fail(path, f"{problem} (it points to {shown(os.readlink(path))})") from None
        raise _fail(path, "no such file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes)")


def read_raw(path, reduction: int = 1) -> np.ndarray:
    """Decode the first frame in RGB terms: HxW grey, HxWx2 grey + alpha, HxWx3 RGB or HxWx4 RGBA, in its
    native dtype. Size limits are checked on the header first, so an absurdly large file is refused before any
    pixel is decoded. reduction 2, 4 or 8 decodes a JPEG at that fraction of its size, ceil(side / reduction), from
    its own DCT coefficients (far cheaper than decoding it whole); other formats are decoded whole."""
    path = Path(path)
    height, width = image_size(path)
    limit = max_pixels()
    if height * width > limit:
        raise _fail(path, f"image too large ({width}x{height} = {height * width / 1e6:.0f} megapixels; the "
                          f"limit is {limit / 1e6:.0f}; set {MAX_PIXELS_ENV} to raise it)")
    if min(height, width) < MIN_SIDE:
        raise _fail(path, f"image too small ({width}x{height}; at least {MIN_SIDE}x{MIN_SIDE} is needed)")
    try:
        array = _read_dicom(path) if _is_dicom(path) else _read_tiff(path) if _is_tiff(path) else \
            _read_pillow(path, reduction)
    except ImageReadError:
        raise
    except Exception as exc:
        raise _fail(path, f"truncated or corrupt image data ({_describe(exc)})") from None
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (2, 3, 4)):
        raise _fail(path, f"unsupported image layout {array.shape}")
    return array


def _read_pillow(path: Path, reduction: int = 1) -> np.ndarray:
    with Image.open(path) as opened:
        if reduction > 1 and opened.format == "JPEG":
            width, height = opened.size
            # the scale is the largest of 8, 4, 2 that the requested size fits in whole times: floor, not ceil
            opened.draft(opened.mode, (width // reduction, height // reduction))
        # turned upright by its EXIF orientation; Pillow copies the decoded image even when it is upright already
        image = ImageOps.exif_transpose(opened) if opened.getexif().get(EXIF_ORIENTATION, 1) != 1 else opened
        mode = image.mode
        if mode in _PLAIN_MODES:
            return np.asarray(image)
        if mode in _CONVERTIBLE_MODES:
            return np.asarray(image.convert(_CONVERTIBLE_MODES[mode]))
        if mode == "CMYK":  # also YCCK JPEGs, which the decoder turns into CMYK
            return np.asarray(_cmyk_to_rgb(image, opened.info.get("icc_profile")))
        if mode == "I":  # 32-bit integers: usable when they are 16-bit values (older PNG decoding)
            array = np.asarray(image)
            if array.min() >= 0 and array.max() <= 65535:
                return array.astype(np.uint16)
            raise _fail(path, "32-bit integer pixels outside 0-65535: their intensity scale is unknown; save the "
                              "photo as 8- or 16-bit")
        raise _fail(path, f"colour mode {mode} cannot be converted to RGB; save the photo as RGB or grey")


def _read_dicom(path: Path) -> np.ndarray:
    """The first frame of a DICOM image (an ophthalmic photograph as cameras and PACS export it): RGB (YCbCr, as
    JPEG-compressed ones store it, converted by pydicom), grey (MONOCHROME1 inverted: it stores white as 0), or a
    palette looked up; samples of fewer bits than they are stored in scaled by the bits they have."""
    from pydicom.pixels import apply_color_lut

    dataset = _dicom(path)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    array = dataset.pixel_array
    array = array[0] if frames > 1 else array
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        return apply_color_lut(array, dataset)
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB") and not photometric.startswith("YBR"):
        raise _fail(path, f"DICOM photometric interpretation {photometric or 'missing'} is not supported")
    if not np.issubdtype(array.dtype, np.unsignedinteger):
        return array  # signed or float samples: _to_unit_float judges them
    bits = int(dataset.get("BitsStored", 8 * array.dtype.itemsize))
    peak = (1 << min(bits, 8 * array.dtype.itemsize)) - 1
    if photometric == "MONOCHROME1":
        array = peak - np.minimum(array, peak)
    if peak != np.iinfo(array.dtype).max:  # e.g. 12-bit samples in 16-bit words
        return np.minimum(array, peak).astype(np.float32) / peak
    return array


def _cmyk_to_rgb(image: Image.Image, icc_profile) -> Image.Image:
    """Through the file's own ICC profile when it has one (how the camera or editor meant the ink values);
    otherwise by Pillow's formula, which is exact for uncalibrated CMYK."""
    if icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a damaged profile: the formula below is still a correct CMYK conversion
    return image.convert("RGB")


# TIFF photometric interpretations read by tifffile as they are; the others go through Pillow's conversions
_TIFF_MINISWHITE, _TIFF_MINISBLACK, _TIFF_RGB, _TIFF_PALETTE, _TIFF_YCBCR = 0, 1, 2, 3, 6
_TIFF_JPEG = 7


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        photometric, compression = int(page.photometric), int(page.compression)
        colormap = page.colormap if photometric == _TIFF_PALETTE else None
        planar = page.planarconfig == 2 and page.samplesperpixel > 1
        if photometric == _TIFF_YCBCR and compression == _TIFF_JPEG:
            photometric = _TIFF_RGB  # the JPEG codec returns RGB
        if photometric == _TIFF_YCBCR and tuple(page.subsampling or (1, 1)) == (1, 1) and page.dtype == np.uint8:
            # samples as stored: converted here (Pillow 12.3 cannot read the uncompressed ones it writes)
            return _ycbcr_to_rgb(np.asarray(page.asarray()), page.tags)
        if photometric not in (_TIFF_MINISWHITE, _TIFF_MINISBLACK, _TIFF_RGB, _TIFF_PALETTE):
            return _read_pillow(path)  # CMYK (separated), subsampled YCbCr, ...
        array = np.asarray(page.asarray())
    if planar and array.ndim == 3 and array.shape[0] in (2, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if photometric == _TIFF_MINISWHITE:
        if array.dtype == bool:
            return ~array
        if not np.issubdtype(array.dtype, np.unsignedinteger) or array.ndim != 2:
            raise _fail(path, "an inverted (white-is-zero) TIFF of float or multi-channel data is not supported")
        return np.iinfo(array.dtype).max - array
    if photometric == _TIFF_PALETTE:
        if colormap is None or array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise _fail(path, "palette TIFF without a usable colour map")
        if int(array.max()) >= colormap.shape[-1]:
            raise _fail(path, "palette TIFF with indices past its colour map")
        return np.moveaxis(colormap[:, array], 0, -1).astype(np.uint16)
    return array


def _ycbcr_to_rgb(samples: np.ndarray, tags) -> np.ndarray:
    """8-bit YCbCr TIFF samples to RGB by TIFF 6.0's formulas, with the file's YCbCrCoefficients and
    ReferenceBlackWhite (or their defaults: ITU-R BT.601, full range)."""
    def rationals(name, default):
        tag = tags.get(name)
        if tag is None:
            return default
        values = np.asarray(tag.value, float).ravel()
        return tuple(values[0::2] / values[1::2]) if len(values) == 2 * len(default) else tuple(values)

    luma_red, luma_green, luma_blue = rationals("YCbCrCoefficients", (0.299, 0.587, 0.114))
    reference = rationals("ReferenceBlackWhite", (0.0, 255.0, 128.0, 255.0, 128.0, 255.0))
    codes = samples.astype(np.float32)
    y = (codes[..., 0] - reference[0]) * 255 / (reference[1] - reference[0])
    cb = (codes[..., 1] - reference[2]) * 127 / (reference[3] - reference[2])
    cr = (codes[..., 2] - reference[4]) * 127 / (reference[5] - reference[4])
    red = cr * (2 - 2 * luma_red) + y
    blue = cb * (2 - 2 * luma_blue) + y
    green = (y - luma_blue * blue - luma_red * red) / luma_green
    return np.clip(np.round(np.stack([red, green, blue], axis=-1)), 0, 255).astype(np.uint8)


def _to_unit_float(path, array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
            raise _fail(path, "negative pixel values: the image's intensity scale is unknown")
        return np.divide(array, np.float32(np.iinfo(array.dtype).max), dtype=np.float32)  # one pass
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise _fail(path, "floating-point pixels include NaN or infinity")
    if array.min() < 0:
        raise _fail(path, "floating-point pixels below 0: the image's intensity scale is unknown")
    peak = float(array.max())
    return np.clip(array / peak if peak > 1.0 else array, 0.0, 1.0)


def read_photo(path, reduction: int = 1) -> np.ndarray:
    """A colour photo as float32 HxWx3 in [0, 1]. Grey images are repeated over three channels, alpha is
    dropped, 16-bit data are scaled to [0, 1], floating-point data by their peak when it exceeds 1. A JPEG may be
    decoded at 1/reduction of its size (read_raw); `reduction_of` says at which."""
    array = read_raw(path, reduction)
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        array = array[..., 0]
    if array.ndim == 3:
        array = array[..., :3]
    levels = array.dtype == bool or np.issubdtype(array.dtype, np.integer)
    blank = bool(array.max() == array.min()) if levels else None  # exact on stored levels, and cheaper than floats
    photo = _to_unit_float(path, array)
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=-1)
    if blank or (blank is None and float(photo.max()) - float(photo.min()) < 1e-6):
        raise _fail(path, "image is blank (every pixel has the same value)")
    return np.ascontiguousarray(photo)


JPEG_SIGNATURE = b"\xff\xd8\xff"  # how every JPEG file begins (start of image, then a marker)
JPEG_REDUCTIONS = (8, 4, 2)  # the scales libjpeg decodes at from 8x8 DCT blocks, as Pillow's draft offers them


def jpeg_size(path) -> Optional[tuple[int, int]]:
    """(height, width) of a JPEG photo as read_raw turns it upright, from its header; None for other formats (and
    for files that cannot be opened: reading them says why)."""
    try:
        with open(path, "rb") as file:
            if file.read(3) != JPEG_SIGNATURE:
                return None
        with Image.open(path) as im:
            if im.format != "JPEG":
                return None
            width, height = im.size
            return (width, height) if im.getexif().get(EXIF_ORIENTATION, 1) in _QUARTER_TURNS else (height, width)
    except Exception:
        return None


def reduction_of(shape: tuple, size: tuple) -> int:
    """The reduction (1, 2, 4 or 8) at which a photo of size (height, width) was decoded to an array of shape."""
    for reduction in (1,) + JPEG_REDUCTIONS[::-1]:
        if tuple(shape[:2]) == (-(-size[0] // reduction), -(-size[1] // reduction)):
            return reduction
    raise ValueError(f"an array of {shape[1]}x{shape[0]} is no JPEG reduction of a {size[1]}x{size[0]} photo")


def read_mask(path) -> np.ndarray:
    """A mask or label image as stored values: 2-D when the channels agree (grey saved as RGB), else HxWx3
    (colour-coded labels). Alpha is dropped."""
    array = read_raw(path)
    if array.ndim == 3:
        array = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
        if array.shape[-1] == 1 or (np.array_equal(array[..., 0], array[..., 1])
                                    and np.array_equal(array[..., 0], array[..., 2])):
            array = array[..., 0]
    return np.ascontiguousarray(array)


# prob/<stem>.tif holds each probability times this, as 16-bit integers: steps of 1.5e-5 (AUCs unchanged to 1e-5), a
# fifth of float32's size, and read by every image tool
PROBABILITY_SCALE = 65535


def read_probabilities(path) -> np.ndarray:
    """float32 CxHxW probabilities of a `--save-prob` file: 16-bit integers over PROBABILITY_SCALE, or floats as
    written by retinaseg before them (and by other tools)."""
    try:
        stored = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many kinds for a damaged file
        raise _fail(path, f"not a readable probability TIFF ({_describe(exc)})") from None
    probabilities = stored.astype(np.float32)
    if stored.dtype == np.uint16:
        probabilities /= PROBABILITY_SCALE
    elif stored.dtype.kind != "f":
        raise _fail(path, f"probabilities stored as {stored.dtype}, not 16-bit integers or floats")
    return probabilities[None] if probabilities.ndim == 2 else probabilities


def read_binary_mask(path) -> np.ndarray:
    """A 0/non-0 mask (FOV, vessel label) as bool HxW."""
    mask = read_mask(path)
    if mask.ndim == 3:
        mask = mask.max(axis=-1)
    peak = float(mask.max())
    # small integer codes (0/1, the 0..3 AV encoding) are "> 0"; 8/16-bit masks that were resized or
    # compressed carry intermediate values and are thresholded at half their peak
    return mask > (peak / 2 if peak > 3 else 0)
