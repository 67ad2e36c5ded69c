"""The disc model on cameras it did not learn: discs labelled by eye on the training photos of DRIVE, LES-AV and
HRF-AV (benchmarks/labels/disc_other_cameras.csv), half of them to fine-tune on and half held out.

    python benchmarks/disc_other_cameras.py --make-training DIR --label-weights IDRID.pt   # the fine-tuning half
    python benchmarks/disc_other_cameras.py --weights IDRID.pt weights/disc.pt             # scored on the held-out half

The labels: each photo cropped around its disc with the disc of the IDRiD-only disc file (shipped until 2026-12-03,
late; `git show f5f19ee:weights/disc.pt > IDRID.pt`) drawn on it, and judged by eye. `model`: that disc fits the
rim; its mask is the label, and disc_x, disc_y, disc_diameter_px (the photo's pixels) are its centre and diameter;
`hand`: the disc is missing, misplaced or plainly too small or large, and the label is a circle read off the crop;
`skip`: no rim clear enough to judge (peripapillary atrophy, myopic discs).

The halves, fixed before any model was trained on them: to fine-tune, DRIVE's odd-numbered photos, LES-AV's every
other one in sorted order (111, 12, 33, 37, 49, 90) and HRF-AV's 01-04; held out, the rest. On the held-out half a
model's disc is `right` when found, its centre within RIGHT_CENTRE of the label's diameter from the label's centre,
and its diameter within RIGHT_DIAMETER times the label's. (A `model` label is the IDRiD-only file's own disc, so that
file is right there by construction; another file must keep it.)
"""
from __future__ import annotations

import argparse
import csv
import math
import os
from pathlib import Path

import numpy as np
import torch

from retinaseg.datasets import load_samples
from retinaseg.disc import Disc
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.atomic import write_png
from retinaseg.models import load_model

LABELS = Path(__file__).parent / "labels" / "disc_other_cameras.csv"
RIGHT_CENTRE = 0.25  # of the label's diameter
RIGHT_DIAMETER = (0.75, 1.0 / 0.75)
TUNING_LES_AV = {"111", "12", "33", "37", "49", "90"}


def tuning_half(dataset: str, stem: str) -> bool:
    if dataset == "drive":
        return int(stem.split("_")[0]) % 2 == 1
    if dataset == "les-av":
        return stem in TUNING_LES_AV
    return int(stem.split("_")[0]) <= 4


def labelled(data_root) -> list:
    """(dataset, stem, photo path, label, Disc) of each labelled photo, skips left out."""
    photos = {}
    for dataset in ("drive", "les-av", "hrf-av"):
        _, samples = load_samples(dataset, data_root, "training")
        photos.update({(dataset, Path(s.image).stem): Path(s.image) for s in samples})
    rows = []
    with open(LABELS, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["label"] == "skip":
                continue
            disc = Disc("ok", "", float(row["disc_y"]), float(row["disc_x"]), float(row["disc_diameter_px"]))
            rows.append((row["dataset"], row["stem"], photos[(row["dataset"], row["stem"])], row["label"], disc))
    return rows


def disc_of(segmenter: Segmenter, path: Path) -> tuple[Disc, np.ndarray]:
    """The disc `retinaseg run -m disc` keeps in the photo (among rivals, the one the vessels converge on), and its
    raw-size map."""
    prob = segmenter.predict_file(path)[0]
    return segmenter.find_disc(prob), prob >= 0.5


def is_right(disc: Disc, label: Disc) -> bool:
    if not disc.found:
        return False
    off = math.hypot(disc.row - label.row, disc.col - label.col) / label.diameter
    ratio = disc.diameter / label.diameter
    return off <= RIGHT_CENTRE and RIGHT_DIAMETER[0] <= ratio <= RIGHT_DIAMETER[1]


def make_training(rows: list, labeller: Segmenter, out: Path) -> None:
    """The fine-tuning half as a folder-disc layout: images (links to the photos) and labels (disc masks: the
    labelling file's mask for a `model` label, the circle for a `hand` one)."""
    (out / "training" / "images").mkdir(parents=True, exist_ok=True)
    (out / "training" / "labels").mkdir(parents=True, exist_ok=True)
    for dataset, stem, path, label, circle in rows:
        if not tuning_half(dataset, stem):
            continue
        name = f"{dataset}_{stem}"
        link = out / "training" / "images" / f"{name}{path.suffix}"
        if not link.exists():
            link.symlink_to(path.resolve())
        mask = disc_of(labeller, path)[1]
        if label == "hand":
            rows_, cols = np.ogrid[:mask.shape[0], :mask.shape[1]]
            mask = np.hypot(rows_ - circle.row, cols - circle.col) <= circle.diameter / 2
        write_png(out / "training" / "labels" / f"{name}.png", mask.astype(np.uint8) * 255)
        print(f"{name}: {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--weights", nargs="+", default=[], help="disc weights files to score; default the shipped")
    parser.add_argument("--make-training", metavar="DIR", help="write the fine-tuning half as a folder-disc layout")
    parser.add_argument("--label-weights", help="with --make-training: the disc file whose masks the `model` labels "
                                                "are (the IDRiD-only file, above)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = labelled(args.data_root)
    if args.make_training:
        if not args.label_weights:
            parser.error("--make-training needs --label-weights: the file whose masks the `model` labels are")
        make_training(rows, Segmenter(load_model("disc", args.label_weights), SegmentConfig(device="cpu")),
                      Path(args.make_training))
        return
    held = [row for row in rows if not tuning_half(row[0], row[1])]
    files = args.weights or [None]
    segmenters = [Segmenter(load_model("disc", weights), SegmentConfig(device="cpu")) for weights in files]
    right = [[0, 0] for _ in files]  # all, by hand
    print("photo            label  " + "  ".join(f"{str(w or 'shipped')[-28:]:>28s}" for w in files))
    for dataset, stem, path, label, reference in held:
        cells = []
        for k, segmenter in enumerate(segmenters):
            disc = disc_of(segmenter, path)[0]
            ok = is_right(disc, reference)
            right[k][0] += ok
            right[k][1] += ok and label == "hand"
            cells.append(f"{'right' if ok else 'WRONG'} " + (f"{disc.col:5.0f},{disc.row:5.0f} d{disc.diameter:4.0f}"
                                                            if disc.found else f"{'not found':>18s}"))
        print(f"{dataset:6s} {stem:11s} {label:5s}  " + "  ".join(f"{c:>28s}" for c in cells))
    hand = sum(label == "hand" for *_, label, _ in held)
    for weights, (everything, by_hand) in zip(files, right):
        print(f"{weights or 'shipped'}: right on {everything} of {len(held)} held-out photos ({by_hand} of the "
              f"{hand} labelled by hand)")


if __name__ == "__main__":
    main()
