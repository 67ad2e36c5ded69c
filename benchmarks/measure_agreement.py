"""How far measurements from a model's A/V maps agree with the same measurements from the manual labels.

    python benchmarks/measure_agreement.py [--data-root ../shared/data] [--datasets drive-av,les-av,hrf-av]
                                           [--calibres-from photo|map] [--held-out 1]
                                           [--vessel-model vesselnet [--vessel-weights W]]
                                           [--spur-widths 1] [--side-branch-share 0.5] [--measuring-fov 0]

For every test photo of each dataset: the manual A/V label and av-fusion's map (`retinaseg run -m av-fusion`'s
Segmenter, default options, the photo read as `run` reads it) are measured by `retinaseg measure`'s code, with the
same disc (found by the disc model in the photo) and the dataset's FOV mask. Prints, per measure, the intraclass
correlations ICC(2,1) (two-way random effects, absolute agreement, single measure; Shrout and Fleiss 1979; the one
issue 32's targets are judged by) and ICC(3,1) (consistency: blind to a constant offset), the mean difference (map -
manual, the offset), the mean absolute difference over all photos and that divided by the standard deviation of the
manual values (the error against the spread between photos), and the photos' count; the fractal dimension once for
each definition (measure.FRACTAL_SOURCES: the filled map, its centre lines, coarse boxes), from the same maps. Also
prints the time measuring took per photo, beside the network's, for DRIVE-size and HRF-size maps. --calibres-from: what
zone B's calibres are measured on, as `retinaseg measure`'s option (default as shipped). --held-out SEED: instead of
the test photos, the training images that av-fusion's run with this --seed (and --val-fraction) held out, as
benchmarks/held_out_tta.py draws them; a rule may look at these, not at the test photos. --vessel-model: av-fusion's
map with its vessels decided by this binary model, as `retinaseg run -m av-fusion --vessel-model` makes it (the
shipped vesselnet learnt every training image, so no held-out check of it exists). --spur-widths:
vessel_graph.SPUR_WIDTHS for the run (0: spurs kept), --side-branch-share its SIDE_BRANCH_SHARE (0: none), and
--measuring-fov measure.MEASURING_FOV (0: each map at its own size), variants (docs/experiments.md).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from retinaseg.av import class_map
from retinaseg.datasets import load_samples, read_fov, read_label
from retinaseg.inference.segmenter import SegmentConfig, Segmenter, segmenter_of
from retinaseg.io.images import read_photo
from retinaseg.measure import CALIBRE_SOURCES, CALIBRES_FROM, FRACTAL_SOURCES, fractal_dimensions, measure
from retinaseg.models import load_model
from retinaseg.training.engine import held_out_ids

from measure_variants import add_variant_options, apply_variants

MEASURES = ("crae_dd", "crve_dd", "avr", "fractal_dimension_all", "density_fov_all", "density_zone_c_all",
            "mean_calibre_zone_b_dd_all", "distance_factor_all", "length_dd_all") + tuple(
    f"fractal_dimension_all, {source}" for source in FRACTAL_SOURCES)


def measured(labels, disc, fov, prob, photo, calibres_from) -> dict:
    """`retinaseg measure`'s values of one map, with the fractal dimension of every definition beside them."""
    values = measure(labels, disc, fov, prob, photo=photo, calibres_from=calibres_from).values
    for of, dimension in fractal_dimensions(labels > 0, fov, values["fov_diameter_px"]).items():
        values[f"fractal_dimension_all, {of}"] = dimension
    return values


def _mean_squares(pairs: np.ndarray) -> tuple[float, float, float]:
    """Two-way ANOVA mean squares of an (n subjects, k raters) array: subjects, raters, error."""
    n, k = pairs.shape
    grand = pairs.mean()
    rows, cols = pairs.mean(axis=1), pairs.mean(axis=0)
    ms_rows = k * ((rows - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((cols - grand) ** 2).sum() / (k - 1)
    ms_error = ((pairs - rows[:, None] - cols[None] + grand) ** 2).sum() / ((n - 1) * (k - 1))
    return ms_rows, ms_cols, ms_error


def icc_2_1(pairs: np.ndarray) -> float:
    """ICC(2,1) of an (n subjects, k raters) array: absolute agreement, so a constant offset between raters counts."""
    n, k = pairs.shape
    ms_rows, ms_cols, ms_error = _mean_squares(pairs)
    return float((ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n))


def icc_3_1(pairs: np.ndarray) -> float:
    """ICC(3,1): consistency, blind to a constant offset between raters (how well the photos are ranked)."""
    k = pairs.shape[1]
    ms_rows, _, ms_error = _mean_squares(pairs)
    return float((ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--datasets", default="drive-av,les-av,hrf-av")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibres-from", choices=CALIBRE_SOURCES, default=CALIBRES_FROM)
    parser.add_argument("--held-out", type=int, default=None, metavar="SEED",
                        help="the training images av-fusion's run with this --seed held out, not the test photos")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="that run's --val-fraction")
    parser.add_argument("--vessel-model", default=None, help="a binary model deciding av-fusion's vessels")
    parser.add_argument("--vessel-weights", default=None, help="its weights; default its shipped file")
    add_variant_options(parser, "--spur-widths", "--side-branch-share", "--measuring-fov")
    args = parser.parse_args()
    apply_variants(args)
    torch.set_num_threads(args.threads)
    av_model = segmenter_of("av-fusion", vessel_model=args.vessel_model, vessel_weights=args.vessel_weights,
                            notify=lambda m: None, device="cpu")
    disc_model = Segmenter(load_model("disc"), SegmentConfig(device="cpu"), notify=lambda m: None)
    manual, predicted, times = [], [], {}
    for dataset in args.datasets.split(","):
        _, samples = load_samples(dataset, args.data_root, "test" if args.held_out is None else "training")
        if args.held_out is not None:
            ids = held_out_ids(dataset, args.data_root, args.val_fraction, args.held_out)
            samples = [s for s in samples if s.id in ids]
        for sample in samples:
            photo = read_photo(sample.image)
            fov = read_fov(sample, photo)
            started = time.perf_counter()
            prob = av_model.predict_file(sample.image, fov, whole=photo)
            network = time.perf_counter() - started
            labels = class_map(prob)
            # as `measure` finds it in av-fusion's map's photo (a large JPEG decoded at a reduced size; among rivals,
            # the one the map's vessels converge on), and the same disc for the manual label
            disc = disc_model.find_disc(disc_model.predict_file(sample.image, finished=False, whole=photo)[0],
                                        labels > 0, fov)
            started = time.perf_counter()
            predicted.append(measured(labels, disc, fov, prob, photo, args.calibres_from))
            measuring = time.perf_counter() - started
            manual.append(measured(read_label(sample.label, "av"), disc, fov, None, photo, args.calibres_from))
            times.setdefault(dataset, []).append((network, measuring))
            print(f"  {dataset:<9} {sample.id:<14} disc {disc.status:<9} CRAE {manual[-1]['crae_dd']:.4f} / "
                  f"{predicted[-1]['crae_dd']:.4f} DD", flush=True)
    print(f"\nagreement over {len(manual)} photos (manual label vs av-fusion's map; photos without a disc left out "
          f"of the zone measures)")
    print(f"{'measure':<36}{'ICC(2,1)':>10}{'ICC(3,1)':>10}{'mean diff':>12}{'mean |diff|':>13}{'|diff| / sd':>13}"
          f"{'mean manual':>13}{'photos':>8}   (diff: map - manual; sd: of the manual values)")
    for key in MEASURES:
        pairs = np.array([[m[key], p[key]] for m, p in zip(manual, predicted)], float)
        pairs = pairs[np.isfinite(pairs).all(axis=1)]
        difference = pairs[:, 1] - pairs[:, 0]
        spread = pairs[:, 0].std(ddof=1)
        print(f"{key:<36}{icc_2_1(pairs):>10.3f}{icc_3_1(pairs):>10.3f}{difference.mean():>12.4f}"
              f"{np.abs(difference).mean():>13.4f}{np.abs(difference).mean() / spread:>13.3f}"
              f"{pairs[:, 0].mean():>13.4f}{len(pairs):>8}")
    print("\nseconds per photo (median): network (av-fusion, default TTA) / measuring (graph + measures)")
    for dataset, pairs in times.items():
        print(f"  {dataset:<9} {statistics.median(p[0] for p in pairs):.2f} / "
              f"{statistics.median(p[1] for p in pairs):.2f}")


if __name__ == "__main__":
    main()
