"""Writes docs/images/overview.jpg, the README's picture: a synthetic sample photo, the default model's vessel
overlay and av-fusion's artery/vein map, side by side. Synthetic, so no data set is copied into the repository:

    python tools/overview_picture.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from retinaseg.inference.outputs import labels_of, overlay, render
from retinaseg.inference.segmenter import Segmenter
from retinaseg.io.images import read_photo
from retinaseg.models import load_model

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "images" / "synthetic_drive_size.jpg"
TARGET = ROOT / "docs" / "images" / "overview.jpg"
SIDE = 360  # each panel's width in the picture


def main() -> None:
    photo = read_photo(PHOTO)
    vessels = labels_of(Segmenter(load_model("vesselnet")).predict(photo))
    arteries_veins = labels_of(Segmenter(load_model("av-fusion")).predict(photo))
    panels = [np.round(photo * 255).astype(np.uint8), overlay(photo, vessels), render(arteries_veins)]
    height = round(SIDE * photo.shape[0] / photo.shape[1])
    resized = [np.asarray(Image.fromarray(p).resize((SIDE, height), Image.LANCZOS)) for p in panels]
    gap = np.full((height, 8, 3), 255, np.uint8)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(np.concatenate([resized[0], gap, resized[1], gap, resized[2]], axis=1))
    picture.save(TARGET, quality=88)  # a JPEG a tenth of the PNG's size
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
