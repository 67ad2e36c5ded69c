"""How far measurements from a model's A/V maps agree with the same measurements from the manual labels.

    python benchmarks/measure_agreement.py [--data-root ../shared/data] [--datasets drive-av,les-av,hrf-av]
                                           [--calibres-from photo|map]

For every test photo of each dataset: the manual A/V label and av-fusion's map (`retinaseg run -m av-fusion`'s
Segmenter, default options, the photo read as `run` reads it) are measured by `retinaseg measure`'s code, with the same disc (found by the disc
model in the photo) and the dataset's FOV mask. Prints, per measure, the intraclass correlations ICC(2,1)
(two-way random effects, absolute agreement, single measure; Shrout and Fleiss 1979; the one issue 32's targets
are judged by) and ICC(3,1) (consistency: blind to a constant offset), the mean difference (map - manual, the
offset) and the mean absolute difference over all photos, and the photos' count. Also prints the time measuring
took per photo, beside the network's, for DRIVE-size and HRF-size maps. --calibres-from: what zone B's calibres are
measured on, as `retinaseg measure`'s option (default as shipped).
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
from retinaseg.disc import find_disc
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.measure import CALIBRE_SOURCES, CALIBRES_FROM, measure
from retinaseg.models import load_model

MEASURES = ("crae_dd", "crve_dd", "avr", "fractal_dimension_all", "density_fov_all", "density_zone_c_all",
            "mean_calibre_zone_b_dd_all", "distance_factor_all", "length_dd_all")


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    av_model = Segmenter(load_model("av-fusion"), SegmentConfig(device="cpu"), notify=lambda m: None)
    disc_model = Segmenter(load_model("disc"), SegmentConfig(device="cpu"), notify=lambda m: None)
    manual, predicted, times = [], [], {}
    for dataset in args.datasets.split(","):
        _, samples = load_samples(dataset, args.data_root, "test")
        for sample in samples:
            photo = read_photo(sample.image)
            fov = read_fov(sample, photo)
            # the photo read as `retinaseg run` and `measure` read it (a large JPEG decoded at a reduced size)
            disc = find_disc(disc_model.predict_file(sample.image, finished=False, whole=photo)[0])
            started = time.perf_counter()
            prob = av_model.predict_file(sample.image, fov, whole=photo)
            network = time.perf_counter() - started
            labels = class_map(prob)
            started = time.perf_counter()
            predicted.append(measure(labels, disc, fov, prob, photo=photo, calibres_from=args.calibres_from).values)
            measuring = time.perf_counter() - started
            manual.append(measure(read_label(sample.label, "av"), disc, fov, photo=photo,
                                  calibres_from=args.calibres_from).values)
            times.setdefault(dataset, []).append((network, measuring))
            print(f"  {dataset:<9} {sample.id:<14} disc {disc.status:<9} CRAE {manual[-1]['crae_dd']:.4f} / "
                  f"{predicted[-1]['crae_dd']:.4f} DD", flush=True)
    print(f"\nagreement over {len(manual)} photos (manual label vs av-fusion's map; photos without a disc left out "
          f"of the zone measures)")
    print(f"{'measure':<30}{'ICC(2,1)':>10}{'ICC(3,1)':>10}{'mean diff':>12}{'mean |diff|':>13}{'mean manual':>13}"
          f"{'photos':>8}   (diff: map - manual)")
    for key in MEASURES:
        pairs = np.array([[m[key], p[key]] for m, p in zip(manual, predicted)], float)
        pairs = pairs[np.isfinite(pairs).all(axis=1)]
        difference = pairs[:, 1] - pairs[:, 0]
        print(f"{key:<30}{icc_2_1(pairs):>10.3f}{icc_3_1(pairs):>10.3f}{difference.mean():>12.4f}"
              f"{np.abs(difference).mean():>13.4f}{pairs[:, 0].mean():>13.4f}{len(pairs):>8}")
    print("\nseconds per photo (median): network (av-fusion, default TTA) / measuring (graph + measures)")
    for dataset, pairs in times.items():
        print(f"  {dataset:<9} {statistics.median(p[0] for p in pairs):.2f} / "
              f"{statistics.median(p[1] for p in pairs):.2f}")


if __name__ == "__main__":
    main()
