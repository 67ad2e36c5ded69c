"""Can a photo's scale be read from the widths of the vessels the model draws?

    python benchmarks/vessel_calibre.py [--data-root ../shared/data] [--dataset drive] [--images 20]

A crop inside the retina shows no FOV edge, so `retinaseg run` cannot measure its scale and asks for
`--raw-fov-diameter`. If the model drew each vessel as wide as it is in the photo, the widths it draws when the
crop is taken for a whole disc (and so magnified) would tell the magnification, and a second pass at the right
scale would need no help from the user. Each photo is cropped about its FOV's centre as in cut_discs.py (squares
of side 0.8, 0.65 and 0.5 D) and segmented from the crop alone; the calibre of a prediction is the mean, over its
vessel pixels at the working scale, of how many erosions each pixel survives (half the local vessel width).
Prints, per crop, the magnification the runner applied (true D / measured D), the calibre, its ratio to the whole
photos' mean, and the diameter that ratio implies over the true D (1.000 would be a perfect reading).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F

from cut_discs import CROPS, crop_box
from retinaseg.datasets import load_samples, read_fov
from retinaseg.errors import RetinasegError
from retinaseg.fov import fov_diameter
from retinaseg.inference.rescale import to_work_size
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.models import load_model

SQUARES = {"whole photo": CROPS["whole disc"], "0.8 D square": CROPS["cut on all sides"],
           "0.65 D square": CROPS["inside the disc"], "0.5 D square": (0.5, 0.5)}


def erosion_depth(mask: np.ndarray) -> np.ndarray:
    """For each pixel, how many erosions it survives, alternating a 3x3 square and a cross (an octagonal
    distance, closer to Euclidean than either alone)."""
    current = torch.from_numpy(mask)[None, None].float()
    depth = torch.zeros_like(current)
    square = True
    while current.any():
        depth += current
        if square:
            current = -F.max_pool2d(-current, 3, 1, 1)
        else:
            padded = F.pad(current, (1, 1, 1, 1))
            neighbours = torch.stack([padded[..., 1:-1, 2:], padded[..., 1:-1, :-2],
                                      padded[..., 2:, 1:-1], padded[..., :-2, 1:-1]])
            current = current * neighbours.amin(dim=0)
        square = not square
    return depth[0, 0].numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--dataset", default="drive")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="vesselnet")
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped one)")
    parser.add_argument("--images", type=int, default=20, help="first N photos")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runner = Segmenter(load_model(args.model, args.weights), SegmentConfig(device="cpu"), notify=lambda m: None)
    _, samples = load_samples(args.dataset, args.data_root, args.split)
    magnification = {name: [] for name in SQUARES}
    calibre = {name: [] for name in SQUARES}
    for sample in samples[:args.images]:
        photo = read_photo(sample.image)
        fov = read_fov(sample, photo)
        true_diameter = fov_diameter(fov)
        for name, fractions in SQUARES.items():
            rows, cols = crop_box(fov, true_diameter, *fractions)
            prepared = runner.prepare(np.ascontiguousarray(photo[rows, cols]))
            _, probs = next(runner.predict_prepared([prepared]))
            vessels = to_work_size(probs, prepared)[0].numpy() >= 0.5
            magnification[name].append(true_diameter / prepared.diameter)
            calibre[name].append(erosion_depth(vessels)[vessels].mean())
    reference = np.mean(calibre["whole photo"])
    print(f"{args.model} on {len(calibre['whole photo'])} {args.dataset} {args.split} photos, cropped")
    print(f"{'crop':<16}{'magnification':>15}{'calibre (px)':>16}{'ratio to whole':>16}{'implied D / true D':>20}")
    for name in SQUARES:
        ratio = np.array(calibre[name]) / reference
        implied = ratio / np.array(magnification[name])  # the measured diameter, corrected by the calibre
        print(f"{name:<16}{np.mean(magnification[name]):>15.3f}"
              f"{np.mean(calibre[name]):>10.3f} ± {np.std(calibre[name]):.3f}{np.mean(ratio):>16.3f}"
              f"{np.mean(implied):>12.3f} ± {np.std(implied):.3f}")


if __name__ == "__main__":
    try:
        main()
    except RetinasegError as error:
        raise SystemExit(f"Error: {error}")
