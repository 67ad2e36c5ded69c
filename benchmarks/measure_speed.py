"""`retinaseg measure` on a run's maps with one process and with several, in one run.

    python benchmarks/measure_speed.py [--data-root ../shared/data] [--images 8] [--workers 2] [--measuring-fov 0]

Segments the first --images DRIVE-AV and HRF-AV test photos once with av-fusion (`retinaseg run -m av-fusion
--save-prob`, synthetic photos of those sizes without the data), then measures that folder as `retinaseg measure`
does (the disc found by the disc model in each photo), after one untimed photo, first with `--workers 0` (one photo
after the other in this process: the baseline) and then with `--workers N` (forked after that warm-up, as `run
--measure`'s are); prints seconds per photo and the speed-up. The tables of the two must be the same.
--measuring-fov: measure.MEASURING_FOV for the run (0: each map at its own size), a variant (docs/experiments.md).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from retinaseg.inference.runner import BatchConfig, run_batch
from retinaseg.inference.segmenter import segmenter_of
from retinaseg.measure_batch import MeasureJob, items_of_run, measure_items

from measure_variants import add_variant_options, apply_variants

SETS = {"DRIVE-size 565x584": "DRIVE_AV/test/images", "HRF-size 3504x2336": "HRF-AV/test/images"}
SIZES = {"DRIVE-size 565x584": (584, 565), "HRF-size 3504x2336": (2336, 3504)}


def _photos(data_root: Path, label: str, count: int, scratch: Path) -> tuple[list, str]:
    folder = data_root / SETS[label]
    if folder.is_dir():
        return sorted(p for p in folder.iterdir() if p.is_file())[:count], "real"
    import imageio.v3 as iio

    from retinaseg.synthetic import synthetic_fundus

    paths = []
    for seed in range(count):
        paths.append(scratch / f"{label.split()[0]}_{seed}.png")
        iio.imwrite(paths[-1], synthetic_fundus(SIZES[label], seed=seed).image_uint8())
    return paths, "synthetic"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    add_variant_options(parser, "--measuring-fov")
    args = parser.parse_args()
    apply_variants(args)
    torch.set_num_threads(2)
    segmenter = segmenter_of("av-fusion", None, None, None, notify=lambda m: None, device="cpu")
    print(f"retinaseg measure, {args.images} photos per row; seconds per photo, one process against {args.workers}")
    print(f"{'photos':<30}{'--workers 0':>13}{f'--workers {args.workers}':>13}{'speed-up':>10}  same tables")
    with tempfile.TemporaryDirectory() as scratch:
        for label in SETS:
            photos, kind = _photos(Path(args.data_root), label, args.images, Path(scratch))
            out = Path(scratch) / label.split()[0]
            run_batch(segmenter, photos, out, BatchConfig(save_prob=True), notify=lambda m: None, progress=False)
            items = items_of_run(out)
            # untimed: the first photo pays for loading the disc model and numba compiling skan's functions
            measure_items(MeasureJob(items[:1], str(out), name="warm-up"), notify=lambda m: None, progress=False)
            seconds, tables = [], []
            for workers in (0, args.workers):
                started = time.perf_counter()
                # overwrite: measured again, not the rows the run before kept in measured/
                measure_items(MeasureJob(items, str(out), name=f"w{workers}", overwrite=True), notify=lambda m: None,
                              progress=False, workers=workers)
                seconds.append((time.perf_counter() - started) / len(photos))
                tables.append((out / f"w{workers}.csv").read_text())
            print(f"{label + ' (' + kind + ')':<30}{seconds[0]:>13.3f}{seconds[1]:>13.3f}"
                  f"{seconds[0] / seconds[1]:>9.2f}x  {'yes' if tables[0] == tables[1] else 'NO'}")
            shutil.rmtree(out)


if __name__ == "__main__":
    main()
