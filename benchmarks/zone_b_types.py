"""Are the vessels CRAE and CRVE are computed from of the type the model says? On images held out of training.

    python benchmarks/zone_b_types.py [--data-root ../shared/data] [--seed 1] [--val-fraction 0.15]
                                      [--min-zone-calibres 1] [--measuring-fov 0]

For each training image that av-fusion's shipped run held out (drawn as `retinaseg train` drew them: the same
datasets, --seed and --val-fraction, as benchmarks/held_out_tta.py does), with a disc found by the disc model:
av-fusion's map is measured as `retinaseg measure` measures it, and each of the vessels chosen for CRAE (the six
widest arteries crossing zone B) and CRVE (the six widest veins) is given the type the manual label has along its
centre line in the zone (the majority of artery and vein label pixels within 2 px of it; "none" where the manual
label has no vessel there). Prints, per photo, AVR from the manual label and from the map, the mean calibre of the
chosen arteries and veins in each, and how many of the map's chosen arteries and veins the manual label calls
artery, vein or nothing; how many of the maps have fewer than six arteries or veins for CRAE or CRVE; then the mean
absolute differences of AVR, CRAE and CRVE (DD), with zone B's calibres measured on the photo and on the maps
(measure.CALIBRE_SOURCES; the table is the default's), and the totals. Test photos are not used.
--min-zone-calibres: measure.MIN_ZONE_CALIBRES for the run, and --measuring-fov measure.MEASURING_FOV (0: each map
at its own size), variants (docs/experiments.md).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from scipy import ndimage

from retinaseg import av
from retinaseg.datasets import load_samples, read_fov, read_label
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.measure import CALIBRE_SOURCES, CALIBRES_FROM, KNUDTSON_VESSELS, measure
from retinaseg.models import load_model
from retinaseg.training.engine import held_out_ids

from measure_variants import add_variant_options, apply_variants

NEAR = 2  # pixels: how far from a chosen centre line the manual label is read


def manual_type(manual: np.ndarray, path: np.ndarray) -> str:
    """The manual label's type along a centre line: artery, vein, or none."""
    near = np.zeros(manual.shape, bool)
    near[path[:, 0], path[:, 1]] = True
    near = ndimage.binary_dilation(near, iterations=NEAR)
    arteries, veins = int((manual[near] == av.ARTERY).sum()), int((manual[near] == av.VEIN).sum())
    if arteries == veins == 0:
        return "none"
    return "artery" if arteries > veins else "vein"


def chosen_calibre(result, code: int) -> float:
    """The mean calibre (pixels) of the vessels of one type chosen for CRAE or CRVE."""
    return float(np.mean([calibre for _, kind, calibre in result.used if kind == code] or [np.nan]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--datasets", default="drive-av,les-av,hrf-av", help="the training run's -d")
    parser.add_argument("--seed", type=int, default=1, help="the training run's --seed")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--max-downscale", type=float, default=None, help="as `retinaseg run`'s; default the model's")
    add_variant_options(parser, "--min-zone-calibres", "--measuring-fov")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    apply_variants(args)
    av_model = Segmenter(load_model("av-fusion"), SegmentConfig(device="cpu", max_downscale=args.max_downscale),
                         notify=lambda m: None)
    disc_model = Segmenter(load_model("disc"), SegmentConfig(device="cpu"), notify=lambda m: None)
    totals = {code: {"artery": 0, "vein": 0, "none": 0} for code in (av.ARTERY, av.VEIN)}
    references, predictions = [], []  # the default calibres' values of each photo
    differences = {source: {key: [] for key in ("avr", "crae_dd", "crve_dd")} for source in CALIBRE_SOURCES}
    print(f"{'photo':<24}{'AVR manual':>11}{'AVR map':>9}{'artery px manual/map':>22}{'vein px manual/map':>20}"
          f"   chosen arteries: manual a/v/none   veins: a/v/none")
    for dataset in args.datasets.split(","):
        ids = held_out_ids(dataset, args.data_root, args.val_fraction, args.seed)
        _, samples = load_samples(dataset, args.data_root, "training")
        for sample in (s for s in samples if s.id in ids):
            photo = read_photo(sample.image)
            fov = read_fov(sample, photo)
            prob = av_model.predict(photo, fov)
            # as measure finds it: among rivals, the one the map's vessels converge on
            disc = disc_model.find_disc(disc_model.predict(photo, finished=False)[0], av.class_map(prob) > 0, fov)
            if not disc.found:
                print(f"{dataset + ' ' + sample.id:<24} no disc found")
                continue
            manual = read_label(sample.label, "av")
            for source in sorted(CALIBRE_SOURCES, key=lambda name: name == CALIBRES_FROM):  # the default last:
                # its vessels are the ones tabled
                predicted = measure(av.class_map(prob), disc, fov, prob, photo=photo, calibres_from=source)
                reference = measure(manual, disc, fov, photo=photo, calibres_from=source)
                if source == CALIBRES_FROM:
                    references.append(reference.values)
                    predictions.append(predicted.values)
                for key, values in differences[source].items():
                    values.append(abs(reference.values[key] - predicted.values[key]))
            counts = {code: {"artery": 0, "vein": 0, "none": 0} for code in (av.ARTERY, av.VEIN)}
            for path, code, _ in predicted.used:
                kind = manual_type(manual, path)
                counts[code][kind] += 1
                totals[code][kind] += 1
            shown = ["/".join(str(counts[code][kind]) for kind in ("artery", "vein", "none"))
                     for code in (av.ARTERY, av.VEIN)]
            widths = [f"{chosen_calibre(reference, code):.1f} / {chosen_calibre(predicted, code):.1f}"
                      for code in (av.ARTERY, av.VEIN)]
            print(f"{dataset + ' ' + sample.id:<24}{reference.values['avr']:>11.3f}{predicted.values['avr']:>9.3f}"
                  f"{widths[0]:>22}{widths[1]:>20}   {shown[0]:>32}   {shown[1]:>12}", flush=True)
    short = [sum(v[f"{kind}_zone_b"] < KNUDTSON_VESSELS for v in rows for kind in ("arteries", "veins"))
             for rows in (references, predictions)]
    print(f"fewer than {KNUDTSON_VESSELS} arteries or veins for CRAE or CRVE: manual labels {short[0]}, maps "
          f"{short[1]}, of {2 * len(references)} counts each")
    for source in CALIBRE_SOURCES:
        print(f"mean absolute difference, manual label vs map, calibres measured on the {source}: " + ", ".join(
            f"{key} {np.nanmean(values):.4f}" for key, values in differences[source].items()))
    for code, name in ((av.ARTERY, "arteries"), (av.VEIN, "veins")):
        total = sum(totals[code].values())
        print(f"chosen {name}: {total}; the manual label says " + ", ".join(
            f"{kind} {count} ({count / max(total, 1):.0%})" for kind, count in totals[code].items()))


if __name__ == "__main__":
    main()
