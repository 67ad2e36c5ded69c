"""Do the measurements in disc diameters stay put when a photo is taken at half the resolution?

    python benchmarks/measure_scale.py [--data-root ../shared/data] [--images 21] [--max-downscale 0]
                                       [--split training] [--vessel-model vesselnet]
                                       [--spur-widths 1] [--side-branch-share 0.5] [--measuring-fov 0]

Each HRF-AV test photo (3504x2336) and a copy resized to half its width and height (Pillow's Lanczos) are both
segmented by av-fusion (default options) and measured by `retinaseg measure`'s code, each with the disc the disc
model finds in it. Prints each photo's disc, CRAE, CRVE and AVR, full / half; then, per measure, the median, mean
and largest relative difference (half vs full) over the photos, and for the fractal dimension the absolute
difference (also once for each of its definitions, measure.FRACTAL_SOURCES, from the same maps), and how often a map
had fewer than six arteries or veins for CRAE or CRVE, once for each source of zone B's calibres (the photo, the
map).
--max-downscale 0 segments both at the model's working scale (by default the full photo is shrunk
by at most av-fusion's cap, so the two are segmented at different scales). --vessel-model: av-fusion's maps with their
vessels decided by this binary model (at its own working scale; --max-downscale holds for it too, as in `retinaseg
run`). --spur-widths: vessel_graph.SPUR_WIDTHS for the run (0: spurs kept), and --side-branch-share its
SIDE_BRANCH_SHARE (0: none), and --measuring-fov measure.MEASURING_FOV (0: each map at its own size), variants
(docs/experiments.md).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image

from retinaseg.av import class_map
from retinaseg.datasets import load_samples
from retinaseg.fov import estimate_fov, fov_diameter
from retinaseg.inference.segmenter import SegmentConfig, Segmenter, segmenter_of
from retinaseg.io.images import read_photo
from retinaseg.measure import (CALIBRE_SOURCES, CALIBRES_FROM, FRACTAL_SOURCES, KNUDTSON_VESSELS, fractal_dimensions,
                               measure)
from retinaseg.models import load_model

from measure_variants import add_variant_options, apply_variants

RELATIVE = ("crae_dd", "crve_dd", "avr", "mean_calibre_zone_b_dd_all", "density_fov_all", "density_zone_c_all",
            "length_dd_all", "distance_factor_all")
ABSOLUTE = ("fractal_dimension_all",) + tuple(f"fractal_dimension_all, {source}" for source in FRACTAL_SOURCES)


def measured(photo, av_model, disc_model) -> dict:
    """{calibre source: the measures} of one photo."""
    prob = av_model.predict(photo)
    fov = estimate_fov(photo)
    labels = class_map(prob)
    disc = disc_model.find_disc(disc_model.predict(photo, finished=False)[0], labels > 0, fov)  # as measure does
    fractal = {f"fractal_dimension_all, {of}": dimension
               for of, dimension in fractal_dimensions(labels > 0, fov, fov_diameter(fov)).items()}
    return {source: {**measure(labels, disc, fov, prob, photo=photo, calibres_from=source).values, **fractal}
            for source in CALIBRE_SOURCES}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--images", type=int, default=21)
    parser.add_argument("--split", default="test", choices=["training", "test"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-downscale", type=float, default=None, help="as `retinaseg run`'s; default the model's")
    parser.add_argument("--vessel-model", default=None, help="a binary model deciding av-fusion's vessels")
    add_variant_options(parser, "--min-zone-calibres", "--spur-widths", "--side-branch-share", "--measuring-fov")
    args = parser.parse_args()
    apply_variants(args)
    torch.set_num_threads(args.threads)
    av_model = segmenter_of("av-fusion", vessel_model=args.vessel_model, notify=lambda m: None, device="cpu",
                            max_downscale=args.max_downscale)
    disc_model = Segmenter(load_model("disc"), SegmentConfig(device="cpu"), notify=lambda m: None)
    _, samples = load_samples("hrf-av", args.data_root, args.split)
    pairs = []
    for sample in samples[:args.images]:
        photo = read_photo(sample.image)
        half = Image.fromarray(np.round(photo * 255).astype(np.uint8)).resize(
            (photo.shape[1] // 2, photo.shape[0] // 2), Image.LANCZOS)
        full_values = measured(photo, av_model, disc_model)
        half_values = measured(np.asarray(half, np.float32) / 255, av_model, disc_model)
        pairs.append((full_values, half_values))
        full, half = full_values[CALIBRES_FROM], half_values[CALIBRES_FROM]
        print(f"  {sample.id:<8} disc {full['disc_diameter_px']:.0f} / {half['disc_diameter_px']:.0f} px,"
              f" CRAE {full['crae_dd']:.4f} / {half['crae_dd']:.4f} DD, CRVE {full['crve_dd']:.4f} /"
              f" {half['crve_dd']:.4f} DD, AVR {full['avr']:.3f} / {half['avr']:.3f}", flush=True)
    cap = "the model's" if args.max_downscale is None else args.max_downscale
    for source in CALIBRE_SOURCES:
        print(f"\nhalf resolution against full, {len(pairs)} HRF-AV {args.split} photos, --max-downscale {cap}, "
              f"zone B's calibres measured on the {source}")
        print(f"{'measure':<36}{'median':>10}{'mean':>10}{'largest':>10}  (relative difference; fractal dimension: "
              f"absolute)")
        for key in RELATIVE + ABSOLUTE:
            full = np.array([p[0][source][key] for p in pairs], float)
            half = np.array([p[1][source][key] for p in pairs], float)
            keep = np.isfinite(full) & np.isfinite(half)
            diff = np.abs(half[keep] - full[keep]) if key in ABSOLUTE else np.abs(half[keep] / full[keep] - 1)
            print(f"{key:<36}{np.median(diff):>10.4f}{diff.mean():>10.4f}{diff.max():>10.4f}  ({keep.sum()} photos)")
        both = [p for p in pairs if all(np.isfinite(copy[source]["crae_dd"]) for copy in p)]
        short = sum(copy[source][f"{kind}_zone_b"] < KNUDTSON_VESSELS for p in both for copy in p
                    for kind in ("arteries", "veins"))
        print(f"fewer than {KNUDTSON_VESSELS} arteries or veins for CRAE or CRVE: {short} of the {2 * len(both)} "
              f"maps' {4 * len(both)} counts")


if __name__ == "__main__":
    main()
