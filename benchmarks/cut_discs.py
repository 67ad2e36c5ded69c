"""Photos whose frame cuts the FOV disc: does the runner still bring them to the working scale?

    python benchmarks/cut_discs.py [--data-root ../shared/data] [--datasets drive] [--images 20]

Cameras frame the disc differently: whole, cut at the top and bottom, cut on all four sides (only the corners
dark), or not at all (a crop inside the retina). The runner scales each photo by the FOV diameter it measures,
so a wrong diameter shows vessels wider or narrower than the model learnt them. Each test photo is cropped about
its FOV's centre (D: its FOV diameter in the dataset's mask) to:

    whole disc          the photo as it is
    cut top/bottom      height 0.8 D, full width
    cut on all sides    a square of side 0.8 D
    inside the disc     a square of side 0.65 D (no surround left)
    inside, diameter given   the same, run with --raw-fov-diameter set to the photos' median D (a user who
                        knows the camera)

and segmented from the crop alone by `retinaseg run`'s Segmenter (FOV estimated, as `run` does without --fov-dir).
Prints, per crop, the measured diameter over the true D and the mean F1 (threshold 0.5, 1st manual, inside the
dataset's FOV within the crop), next to the F1 of the whole photo's prediction over the same pixels: the gap is
what the crop costs.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from retinaseg.datasets import load_samples, read_fov, read_label
from retinaseg.errors import RetinasegError
from retinaseg.evaluation.metrics import binary_metrics
from retinaseg.fov import fov_diameter
from retinaseg.inference.rescale import to_raw_size
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.models import load_model

CROPS = {  # name: (height, width) as fractions of D; None keeps the photo's side
    "whole disc": (None, None),
    "cut top/bottom": (0.8, None),
    "cut on all sides": (0.8, 0.8),
    "inside the disc": (0.65, 0.65),
    "inside, diameter given": (0.65, 0.65),  # run with --raw-fov-diameter: the dataset's median FOV diameter
}


def crop_box(fov: np.ndarray, diameter: int, height_fraction, width_fraction) -> tuple[slice, slice]:
    """Rows and columns of the crop centred on the FOV's bounding box, its sides fractions of the FOV diameter."""
    rows, cols = np.flatnonzero(fov.any(axis=1)), np.flatnonzero(fov.any(axis=0))

    def span(extent, fraction, size):
        if fraction is None:
            return slice(0, size)
        centre, half = (extent[0] + extent[-1]) / 2, fraction * diameter / 2
        return slice(max(0, round(centre - half)), min(size, round(centre + half)))

    return span(rows, height_fraction, fov.shape[0]), span(cols, width_fraction, fov.shape[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--datasets", default="drive", help="comma-separated binary vessel datasets")
    parser.add_argument("--model", default="vesselnet")
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped one)")
    parser.add_argument("--images", type=int, default=20, help="first N test photos of each dataset")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.weights)
    runner = Segmenter(model, SegmentConfig(device="cpu"), notify=lambda m: None)
    for dataset in args.datasets.split(","):
        spec, samples = load_samples(dataset.strip(), args.data_root, "test")
        samples = samples[:args.images]
        diameters = [fov_diameter(read_fov(sample, read_photo(sample.image))) for sample in samples]
        told = Segmenter(model, SegmentConfig(device="cpu", raw_fov_diameter=round(np.median(diameters))),
                      notify=lambda m: None)
        scores = {name: {"diameter": [], "crop": [], "whole": []} for name in CROPS}
        for sample in samples:
            photo = read_photo(sample.image)
            fov, truth = read_fov(sample, photo), read_label(sample.label, "vessel")
            whole, true_diameter = runner.predict(photo)[0], fov_diameter(fov)
            for name, fractions in CROPS.items():
                rows, cols = crop_box(fov, true_diameter, *fractions)
                crop = np.ascontiguousarray(photo[rows, cols])
                crop_runner = told if name.endswith("given") else runner
                prepared = crop_runner.prepare(crop)
                _, probs = next(crop_runner.predict_prepared([prepared]))
                prob = to_raw_size(probs, prepared)[0]
                region = fov[rows, cols]
                scores[name]["diameter"].append(prepared.diameter / true_diameter)
                scores[name]["crop"].append(binary_metrics(truth[rows, cols], prob=prob, mask=region)["f1"])
                scores[name]["whole"].append(binary_metrics(truth[rows, cols], prob=whole[rows, cols],
                                                            mask=region)["f1"])
        print(f"{args.model} on {len(samples)} {spec.name} test photos, cropped "
              f"(F1 over the crop's FOV pixels)")
        print(f"{'crop':<24}{'measured D / true D':>22}{'F1 from the crop':>18}{'F1 from the whole':>19}")
        for name, values in scores.items():
            print(f"{name:<24}{np.mean(values['diameter']):>22.3f}{np.mean(values['crop']):>18.4f}"
                  f"{np.mean(values['whole']):>19.4f}")


if __name__ == "__main__":
    try:
        main()
    except RetinasegError as error:
        raise SystemExit(f"Error: {error}")
