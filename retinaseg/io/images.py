"""The one image reader: photos, masks and labels from every format the public data sets and cameras use.

TIFF goes through tifffile (RGBA, 16-bit, LZW via imagecodecs); everything else through imageio's Pillow
plugin (PNG, JPEG in any case of extension, GIF, PPM/PGM, BMP), with EXIF orientation applied. Every failure
is an ImageReadError whose message names the file and the problem in one line.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from PIL import Image

from retinaseg.errors import ImageReadError

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".bmp")
TIFF_EXTENSIONS = (".tif", ".tiff")
MIN_SIDE = 16
# Refuse before decoding: 250 megapixels is ten times the largest fundus camera sensor.
MAX_PIXELS = int(os.environ.get("RETINASEG_MAX_PIXELS", 250_000_000))
# tifffile logs a multi-line warning before it fails on a corrupt file; our ImageReadError says it in one line.
logging.getLogger("tifffile").setLevel(logging.ERROR)


def is_image_name(path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _fail(path, problem: str) -> ImageReadError:
    return ImageReadError(f"{path}: {problem}")


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_EXTENSIONS


def image_size(path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding pixels."""
    path = Path(path)
    _check_file(path)
    try:
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
    except Image.DecompressionBombError:
        raise _fail(path, f"image too large to decode safely (over {MAX_PIXELS // 1_000_000} megapixels)")
    except Exception as exc:
        raise _fail(path, f"not a readable image ({_describe(exc)})") from None


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise _fail(path, "is a folder, not an image")
    if not path.exists():
        raise _fail(path, "no such file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes)")


def read_raw(path) -> np.ndarray:
    """Decode the first frame as stored: HxW, HxWx3 or HxWx4, native dtype. Size limits are checked on the
    header first, so an absurdly large file is refused before any pixel is decoded."""
    path = Path(path)
    height, width = image_size(path)
    if height * width > MAX_PIXELS:
        raise _fail(path, f"image too large ({width}x{height} = {height * width / 1e6:.0f} megapixels; "
                          f"limit {MAX_PIXELS / 1e6:.0f}, set RETINASEG_MAX_PIXELS to raise it)")
    if min(height, width) < MIN_SIDE:
        raise _fail(path, f"image too small ({width}x{height}; at least {MIN_SIDE}x{MIN_SIDE} is needed)")
    try:
        if _is_tiff(path):
            array = tifffile.imread(path, key=0)
        else:
            array = iio.imread(path, index=0, plugin="pillow", rotate=True)
    except Exception as exc:
        raise _fail(path, f"truncated or corrupt image data ({_describe(exc)})") from None
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (2, 3, 4)):
        raise _fail(path, f"unsupported image layout {array.shape}")
    return array


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
    array = np.nan_to_num(array.astype(np.float32))
    peak = float(array.max()) if array.size else 1.0
    return np.clip(array / peak if peak > 1.0 else array, 0.0, 1.0)


def read_photo(path) -> np.ndarray:
    """A colour photo as float32 HxWx3 in [0, 1]. Grey images are repeated over three channels, alpha is
    dropped, 16-bit and float data are scaled to [0, 1]."""
    array = read_raw(path)
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        array = array[..., 0]
    if array.ndim == 3:
        array = array[..., :3]
    photo = _to_unit_float(array)
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=-1)
    if float(photo.max()) - float(photo.min()) < 1e-6:
        raise ImageReadError(f"{path}: image is blank (every pixel has the same value)")
    return np.ascontiguousarray(photo)


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


def read_binary_mask(path) -> np.ndarray:
    """A 0/non-0 mask (FOV, vessel label) as bool HxW."""
    mask = read_mask(path)
    if mask.ndim == 3:
        mask = mask.max(axis=-1)
    peak = float(mask.max())
    # small integer codes (0/1, the 0..3 AV encoding) are "> 0"; 8/16-bit masks that were resized or
    # compressed carry intermediate values and are thresholded at half their peak
    return mask > (peak / 2 if peak > 3 else 0)
