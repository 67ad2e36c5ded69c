"""What other cameras' and archives' photos cost: JPEG copies at several qualities and grey copies of the
photos, segmented by `retinaseg run`'s batch runner and scored by `retinaseg eval`'s scoring, for one or more weights
files in the same run.

    python benchmarks/photo_copies.py [--data-root ../shared/data] [--datasets drive] [--qualities 90,75,50]
    python benchmarks/photo_copies.py --weights weights/vesselnet.pt,runs/candidate.pt --held-out 0 \\
        --datasets drive,les,hrf --qualities 75 --grey

Cameras and archives often store fundus photos as JPEG, whose 8x8 blocks and ringing can look like thin
vessels, and many clinics take red-free (grey) photos. Each photo is written as a JPEG at each quality and, with
--grey, as an 8-bit grey PNG of its green channel (close to a red-free photo) and of its luminance (a colour
photo saved as grey), all from the pixels the project's reader returns, at the photo's own size. Every copy, the
original included, goes through the same path as `retinaseg run DIR OUT` followed by `retinaseg eval --pred OUT`
(FOV estimated by the runner, scored inside the dataset's FOV mask at threshold 0.5). Prints mean F1 and
specificity per weights file and copy.

--held-out SEED scores the training images that a run with --split-seed SEED held out (as
benchmarks/held_out_tta.py does), so weights can be compared without touching a test split; without it, the
test split.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from retinaseg.datasets import load_samples
from retinaseg.errors import RetinasegError
from retinaseg.evaluation.evaluate import evaluate
from retinaseg.evaluation.metrics import summarize
from retinaseg.inference.runner import run_batch
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.models import load_model
from retinaseg.training.engine import held_out_ids
from retinaseg.training.data import GREY_WEIGHTS

ORIGINAL = "original"
GREY_COPIES = dict(zip(("green", "luminance"), GREY_WEIGHTS))  # the grey versions --grey trains on


def write_copies(dataset: str, data_root, split: str, ids, qualities: list[int], grey: bool, folder: Path) -> dict:
    """{copy: [photo paths]}: the originals, a JPEG copy of each at each quality and, with grey, its grey copies."""
    _, samples = load_samples(dataset, data_root, split)
    samples = [s for s in samples if ids is None or s.id in ids]
    names = [f"q{quality}" for quality in qualities] + (list(GREY_COPIES) if grey else [])
    copies = {ORIGINAL: [s.image for s in samples], **{name: [] for name in names}}
    for name in names:
        (folder / name).mkdir(parents=True)
    for sample in samples:
        photo = np.round(read_photo(sample.image) * 255).astype(np.uint8)  # 8 bits a channel, as cameras save
        for quality in qualities:
            copies[f"q{quality}"].append(folder / f"q{quality}" / f"{sample.id}.jpg")
            iio.imwrite(copies[f"q{quality}"][-1], photo, quality=quality)
        for name, weights in (GREY_COPIES.items() if grey else ()):
            copies[name].append(folder / name / f"{sample.id}.png")
            iio.imwrite(copies[name][-1], np.round(photo @ np.array(weights)).astype(np.uint8))
    return copies


def of_group(rows: list[dict], group: str) -> list[dict]:
    """The per-image rows of one dataset ("all": every dataset), without their dataset tag."""
    return [{k: v for k, v in row.items() if k != "dataset"} for row in rows if group in ("all", row["dataset"])]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--datasets", default="drive", help="comma-separated binary vessel datasets")
    parser.add_argument("--model", default="vesselnet")
    parser.add_argument("--weights", default=None,
                        help="comma-separated weights files, scored in this run (default: the shipped file)")
    parser.add_argument("--qualities", default="90,75,50", help="JPEG qualities (1-100), comma-separated; '' for none")
    parser.add_argument("--grey", action="store_true", help="also score grey copies (green channel, luminance)")
    parser.add_argument("--held-out", type=int, default=None, metavar="SEED",
                        help="score the training images held out by --split-seed SEED instead of the test split")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="the training run's --val-fraction")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    qualities = [int(q) for q in args.qualities.split(",") if q.strip()]
    weights = args.weights.split(",") if args.weights else [None]
    datasets = [d.strip() for d in args.datasets.split(",")]
    split = "test" if args.held_out is None else "training"
    rows = {}  # (weights, condition) -> per-image rows over all datasets
    runners = [Segmenter(load_model(args.model, w), SegmentConfig(device="cpu"), notify=lambda m: None)
               for w in weights]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for dataset in datasets:
            ids = None if args.held_out is None else held_out_ids(dataset, args.data_root, args.val_fraction,
                                                                  args.held_out)
            copies = write_copies(dataset, args.data_root, split, ids, qualities, args.grey,
                                  scratch / dataset / "photos")
            for index, (weights_file, runner) in enumerate(zip(weights, runners)):
                for condition, photos in copies.items():
                    out = scratch / dataset / f"out{index}-{condition}"
                    run_batch(runner, photos, out, notify=lambda m: None, progress=False)
                    evaluation = evaluate(dataset, args.data_root, split, pred_dir=out, ids=ids)
                    rows.setdefault((weights_file, condition), []).extend(
                        {"dataset": dataset, **row} for row in evaluation.rows)
    conditions = list(copies)  # every dataset has the same copies, in write_copies' order
    where = f"{split} split" if args.held_out is None else f"training images held out by split seed {args.held_out}"
    groups = (datasets + ["all"]) if len(datasets) > 1 else datasets
    for group in groups:
        images = len(of_group(rows[(weights[0], ORIGINAL)], group))
        print(f"{args.model} on {images} photos of {args.datasets if group == 'all' else group} ({where}): "
              f"mean F1 / specificity of each copy")
        print(f"{'weights':<40}" + "".join(f"{c:>18}" for c in conditions))
        for weights_file in weights:
            summaries = [summarize(of_group(rows[(weights_file, c)], group)) for c in conditions]
            print(f"{weights_file or 'shipped':<40}"
                  + "".join(f"{s['f1'][0]:>10.4f} / {s['sp'][0]:.3f}" for s in summaries))


if __name__ == "__main__":
    try:
        main()
    except RetinasegError as error:  # no data, a bad weights file: one line, not a traceback
        raise SystemExit(f"Error: {error}")
