"""Builders of every dataset layout in a temporary folder, from synthetic photos."""
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from retinaseg import av
from retinaseg.synthetic import synthetic_fundus

SIZE = (72, 80)


def _photo(seed):
    return synthetic_fundus(SIZE, seed=seed)


def _save(path: Path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, array, **kwargs)
    else:
        Image.fromarray(array).save(path, **kwargs)


def drive(root: Path, av_labels=False):
    truths = {}
    for split, numbers in (("training", (21, 22, 23)), ("test", (1, 2))):
        for n in numbers:
            s = _photo(n)
            truths[f"{n:02d}_{split}"] = s
            base = root / split
            _save(base / "images" / f"{n:02d}_{split}.tif", s.image_uint8())
            _save(base / "mask" / f"{n:02d}_{split}_mask.gif", (s.fov * 255).astype(np.uint8))
            if av_labels:
                _save(base / "1st_manual" / f"{n:02d}_{split}.png", s.av_labels)
            else:
                _save(base / "1st_manual" / f"{n:02d}_manual1.gif", (s.vessels * 255).astype(np.uint8))
                if split == "test":
                    _save(base / "2nd_manual" / f"{n:02d}_manual2.gif", (s.vessels * 255).astype(np.uint8))
    return truths


def les(root: Path):
    truths = {}
    for split, names in (("training", ("15", "37")), ("test", ("224",))):
        for name in names:
            s = _photo(int(name))
            truths[name] = s
            _save(root / split / "images" / f"{name}.png", s.image_uint8())
            _save(root / split / "1st_manual" / f"{name}.png", s.av_labels)
            _save(root / split / "mask" / f"{name}_mask.gif", (s.fov * 255).astype(np.uint8))
    return truths


def hrf(root: Path):
    truths = {}
    for split, names in (("training", ("01_dr", "01_g")), ("test", ("09_h",))):
        for i, name in enumerate(names):
            s = _photo(40 + i)
            truths[name] = s
            extension = ".JPG" if name.endswith("dr") else ".jpg"
            _save(root / split / "images" / f"{name}{extension}", s.image_uint8(), quality=98)
            _save(root / split / "1st_manual" / f"{name}_AVmanual.png", s.av_labels)
            fov_rgb = np.repeat((s.fov * 255).astype(np.uint8)[..., None], 3, axis=-1)
            _save(root / split / "mask" / f"{name}_mask.tif", fov_rgb, compression="lzw")
    return truths


def chase(root: Path):
    truths = {}
    for name in ("Image_01L", "Image_01R", "Image_11L"):
        s = _photo(len(truths) + 60)
        truths[name] = s
        _save(root / f"{name}.jpg", s.image_uint8(), quality=98)
        _save(root / f"{name}_1stHO.png", (s.vessels * 255).astype(np.uint8))
        _save(root / f"{name}_2ndHO.png", (s.vessels * 255).astype(np.uint8))
    return truths


def stare(root: Path):
    truths = {}
    for i in range(1, 5):
        s = _photo(70 + i)
        name = f"im{i:04d}"
        truths[name] = s
        _save(root / "stare-images" / f"{name}.ppm", s.image_uint8())
        label = (s.vessels * 255).astype(np.uint8)
        _save(root / "labels-ah" / (f"{name}.ah.ppm" if i % 2 else f"{name}.ah.pgm"),
              np.repeat(label[..., None], 3, -1) if i % 2 else label)
    return truths


def kaggle(root: Path):
    truths = {}
    for split, names in (("train", ("0", "1")), ("test", ("0",))):
        for name in names:
            s = _photo(80 + len(truths))
            truths[(split, name)] = s
            _save(root / "Data" / split / "image" / f"{name}.png", s.image_uint8())
            soft = (s.vessels * 250).astype(np.uint8) + 3  # resized masks carry intermediate values
            _save(root / "Data" / split / "mask" / f"{name}.png", soft)
    return truths


def folder(root: Path, av_labels=False, colours=False):
    truths = {}
    for name in ("eye_a", "eye_b"):
        s = _photo(90 + len(truths))
        truths[name] = s
        _save(root / "images" / f"{name}.jpg", s.image_uint8(), quality=98)
        if av_labels:
            label = av.encode_colours(s.av_labels) if colours else s.av_labels
        else:
            label = (s.vessels * 255).astype(np.uint8)
        _save(root / "labels" / f"{name}_gt.png", label)
        _save(root / "fov" / f"{name}.png", (s.fov * 255).astype(np.uint8))
    return truths
