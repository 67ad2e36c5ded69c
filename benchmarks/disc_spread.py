"""How far does the disc diameter the disc model finds wander over one camera's photos? (No disc labels needed.)

    python benchmarks/disc_spread.py [--data-root ../shared/data] [--weights disc.pt ...] [--split training]
                                     [--grow] [--datasets drive,les-av,hrf-av,idrid-od]

Within one camera the optic disc's true diameter varies little between people (a coefficient of variation of
about 10%), so a disc model that outlines the whole disc finds diameters close together, relative to the FOV
diameter, and one that marks a bright fragment on one photo and runs past the rim on another spreads them wide.
For each weights file and each data set (DRIVE, LES-AV and HRF-AV; cameras the disc model never learnt), prints
how many photos had a disc, the median of disc diameter / FOV diameter, its 10th and 90th percentiles and the spread
(P90 - P10) / median. Lower is better; IDRiD's held-out photos say whether the outline is right where it is known.
Also the photos with a rival (disc.rival_discs: another region that would pass as a disc, at least half the kept
disc's area), which `retinaseg measure` flags in disc_check, named.
--grow: each file twice, its disc the blob at 0.5 and that blob grown to its faint rim (disc.GROW_TO 0.25).
--open: each file twice, its disc as shipped and opened to its round body (disc.OPEN_SHARE 0.25).
--scales 1,0.75: each file at each of these multiples of its working scale (the FOV 384 px across for disc.pt).
The last column names the photos where no disc was found.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np
import torch

from retinaseg import disc
from retinaseg.datasets import load_samples
from retinaseg.fov import estimate_fov, fov_diameter
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.models import load_model

DATASETS = ("drive", "les-av", "hrf-av")
GROWN = disc.GROW_TO or 0.25  # the shipped rim threshold (docs/experiments.md, "A disc grown to its faint rim")


def relative_diameters(segmenter: Segmenter, photos: list) -> tuple[list[float], list[int]]:
    """Disc diameter / FOV diameter of each (photo, FOV diameter), nan where no disc is found; and its rivals."""
    ratios, rivals = [], []
    for photo, diameter in photos:
        prob = segmenter.predict(photo, finished=False)[0]  # the map before the one disc is kept
        disc = segmenter.find_disc(prob)
        ratios.append(disc.diameter / diameter if disc.found else float("nan"))
        rivals.append(disc.rivals)
    return ratios, rivals


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--weights", nargs="+", default=[None], help="disc weights files; default the shipped")
    parser.add_argument("--split", default="training", choices=["training", "test"])
    parser.add_argument("--grow", action="store_true", help="also with the disc grown to probability 0.25")
    parser.add_argument("--open", action="store_true", help="also with the disc opened to its round body (0.25)")
    parser.add_argument("--scales", default="1", help="comma-separated multiples of the working scale")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated data set names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.datasets.split(",")
    samples = {name: load_samples(name, args.data_root, args.split)[1] for name in names}
    photos = {name: [(photo, fov_diameter(estimate_fov(photo))) for photo in
                     (read_photo(sample.image) for sample in samples[name])] for name in names}
    print(f"disc diameter / FOV diameter over each data set's {args.split} photos")
    print(f"{'weights':<32}{'data set':<10}{'found':>8}{'median':>9}{'P10':>8}{'P90':>8}{'spread':>9}  with a rival"
          f"  | no disc")
    variants = [(w, g, o, float(k)) for w in args.weights for g in ((None, GROWN) if args.grow else (disc.GROW_TO,))
                for o in ((None, 0.25) if args.open else (disc.OPEN_SHARE,)) for k in args.scales.split(",")]
    for weights, grow, opened, scale in variants:
        disc.GROW_TO, disc.OPEN_SHARE = grow, opened
        model = load_model("disc", weights)
        model = dataclasses.replace(model, config={**model.config, "fov_diameter": round(model.fov_diameter * scale)})
        segmenter = Segmenter(model, SegmentConfig(device="cpu"), notify=lambda m: None)
        label = str(weights or "shipped")[-20:] + ("" if grow is None else f", >={grow}") \
            + ("" if opened is None else f", opened {opened}") + ("" if scale == 1 else f", x{scale:g}")
        spreads = []
        for name in names:
            ratios, rivals = relative_diameters(segmenter, photos[name])
            ratios = np.array(ratios)
            found = ratios[np.isfinite(ratios)]
            p10, median, p90 = np.percentile(found, [10, 50, 90])
            spreads.append((p90 - p10) / median)
            rivalled = [sample.id for sample, count in zip(samples[name], rivals) if count]
            missing = [sample.id for sample, ratio in zip(samples[name], ratios) if not np.isfinite(ratio)]
            print(f"{label:<32}{name:<10}{f'{len(found)}/{len(ratios)}':>8}{median:>9.3f}"
                  f"{p10:>8.3f}{p90:>8.3f}{spreads[-1]:>9.3f}  {len(rivalled)} {' '.join(rivalled)}"
                  f"  | {' '.join(missing)}", flush=True)
        print(f"{label:<32}{'mean':<10}{'':>8}{'':>9}{'':>8}{'':>8}{np.mean(spreads):>9.3f}")


if __name__ == "__main__":
    main()
