"""Share of the FOV labelled vessel on real photos and on degraded copies of them: the evidence behind the
runner's "few vessels found: check the photo" flag (retinaseg.inference.FEW_VESSELS).

    python benchmarks/degraded_photos.py [--data-root ../shared/data] [--images 5] [--model vesselnet]

Takes the first --images DRIVE test photos, makes each degraded copy, runs `retinaseg run`'s batch runner on all of
them and prints the vessel fraction per kind of copy (min / mean / max over the photos) and how many the flag
catches. A good flag catches the unusable copies and none of the originals.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torchvision.transforms.functional as TF

from retinaseg.datasets import load_samples, read_fov
from retinaseg.inference import FEW_VESSELS
from retinaseg.inference.runner import run_batch
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.models import load_model

DEGRADATIONS = {
    "original": lambda photo, fov, rng: photo,
    "dark (x0.15)": lambda photo, fov, rng: photo * 0.15,
    "over-exposed (x3)": lambda photo, fov, rng: photo * 3,
    "out of focus (Gaussian, sigma 10 px)": lambda photo, fov, rng: TF.gaussian_blur(
        torch.from_numpy(photo).permute(2, 0, 1), 41, 10.0).permute(1, 2, 0).numpy(),
    "noise": lambda photo, fov, rng: rng.random(photo.shape),
    "blank orange disc": lambda photo, fov, rng: fov[..., None] * np.array([0.7, 0.3, 0.15]),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--model", default="vesselnet")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, samples = load_samples("drive", args.data_root, "test")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "in"
        folder.mkdir()
        for sample in samples[:args.images]:
            photo = read_photo(sample.image)
            fov = read_fov(sample, photo)
            for i, make in enumerate(DEGRADATIONS.values()):
                image = np.clip(make(photo, fov, rng), 0, 1)
                iio.imwrite(folder / f"{sample.id}_{i}.png", (image * 255).astype(np.uint8))
        runner = Segmenter(load_model(args.model), SegmentConfig(device="cpu"), notify=lambda message: None)
        summary = run_batch(runner, sorted(folder.iterdir()), Path(scratch) / "out", notify=lambda message: None,
                            progress=False)
    fractions = {i: [] for i in range(len(DEGRADATIONS))}
    for record in summary.records:
        if record.status == "ok":
            fractions[int(record.stem.rsplit("_", 1)[1])].append(record.vessel_fraction)
    print(f"{args.model} on the first {args.images} DRIVE test photos and degraded copies; flag under "
          f"{FEW_VESSELS:.0%} of the FOV")
    print(f"{'copy':<40}{'min':>8}{'mean':>8}{'max':>8}{'flagged':>10}")
    for i, name in enumerate(DEGRADATIONS):
        values = np.array(fractions[i])
        flagged = f"{(values < FEW_VESSELS).sum()}/{len(values)}"
        print(f"{name:<40}{values.min():>8.1%}{values.mean():>8.1%}{values.max():>8.1%}{flagged:>10}")


if __name__ == "__main__":
    main()
