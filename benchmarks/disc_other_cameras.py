"""The disc model on cameras it did not learn: discs labelled by eye on the training photos of DRIVE, LES-AV and
HRF-AV (benchmarks/labels/disc_other_cameras.csv), half of them to fine-tune on and half held out.

    python benchmarks/disc_other_cameras.py --make-training runs/disc-other-data    # the fine-tuning half, folder-disc
    python benchmarks/disc_other_cameras.py --weights weights/disc.pt runs/disc-other/best.pt   # the held-out half

The labels: each photo cropped around its disc with the shipped model's disc drawn on it, and judged by eye.
`model`: that disc fits the rim, and the shipped model's mask is the label; `hand`: the disc is missing, misplaced
or plainly too small or large, and the label is a circle read off the crop (disc_x, disc_y, disc_diameter_px, the
photo's pixels); `skip`: no rim clear enough to judge (peripapillary atrophy, myopic discs).

The halves, fixed before any model was trained on them: to fine-tune, DRIVE's odd-numbered photos, LES-AV's every
other one in sorted order (111, 12, 33, 37, 49, 90) and HRF-AV's 01-04; held out, the rest. On the held-out half a
model's disc is `right` when found, its centre within RIGHT_CENTRE of the label's diameter from the label's centre,
and its diameter within RIGHT_DIAMETER times the label's. (A `model` label is the shipped file's own disc, so the
shipped file is right there by construction; another file must keep it.)
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
from retinaseg.disc import Disc, find_disc
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
    """(dataset, stem, photo path, label, given Disc or None) of each labelled photo, skips left out."""
    photos = {}
    for dataset in ("drive", "les-av", "hrf-av"):
        _, samples = load_samples(dataset, data_root, "training")
        photos.update({(dataset, Path(s.image).stem): Path(s.image) for s in samples})
    rows = []
    with open(LABELS, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["label"] == "skip":
                continue
            given = None
            if row["label"] == "hand":
                given = Disc("ok", "", float(row["disc_y"]), float(row["disc_x"]), float(row["disc_diameter_px"]))
            rows.append((row["dataset"], row["stem"], photos[(row["dataset"], row["stem"])], row["label"], given))
    return rows


def disc_of(segmenter: Segmenter, path: Path) -> tuple[Disc, np.ndarray]:
    """The disc `retinaseg run -m disc` keeps in the photo (among rivals, the one the vessels converge on), and its
    raw-size map."""
    prob = segmenter.predict_file(path)[0]
    return find_disc(prob, min_probability=segmenter.model.disc_min_probability), prob >= 0.5


def is_right(disc: Disc, label: Disc) -> bool:
    if not disc.found:
        return False
    off = math.hypot(disc.row - label.row, disc.col - label.col) / label.diameter
    ratio = disc.diameter / label.diameter
    return off <= RIGHT_CENTRE and RIGHT_DIAMETER[0] <= ratio <= RIGHT_DIAMETER[1]


def make_training(rows: list, shipped: Segmenter, out: Path) -> None:
    """The fine-tuning half as a folder-disc layout: images (links to the photos) and labels (disc masks)."""
    (out / "training" / "images").mkdir(parents=True, exist_ok=True)
    (out / "training" / "labels").mkdir(parents=True, exist_ok=True)
    for dataset, stem, path, label, given in rows:
        if not tuning_half(dataset, stem):
            continue
        name = f"{dataset}_{stem}"
        link = out / "training" / "images" / f"{name}{path.suffix}"
        if not link.exists():
            link.symlink_to(path.resolve())
        disc, mask = disc_of(shipped, path)
        if given is not None:
            rows_, cols = np.ogrid[:mask.shape[0], :mask.shape[1]]
            mask = np.hypot(rows_ - given.row, cols - given.col) <= given.diameter / 2
        write_png(out / "training" / "labels" / f"{name}.png", mask.astype(np.uint8) * 255)
        print(f"{name}: {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--weights", nargs="+", default=[], help="disc weights files to score (the shipped first)")
    parser.add_argument("--make-training", metavar="DIR", help="write the fine-tuning half as a folder-disc layout")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = labelled(args.data_root)
    shipped = Segmenter(load_model("disc"), SegmentConfig(device="cpu"))
    if args.make_training:
        make_training(rows, shipped, Path(args.make_training))
        return
    held = [row for row in rows if not tuning_half(row[0], row[1])]
    references = {(d, s): given or disc_of(shipped, path)[0] for d, s, path, _, given in held}
    files = args.weights or [None]
    segmenters = [Segmenter(load_model("disc", weights), SegmentConfig(device="cpu")) for weights in files]
    right = [[0, 0] for _ in files]  # all, by hand
    print("photo            label  " + "  ".join(f"{str(w or 'shipped')[-28:]:>28s}" for w in files))
    for dataset, stem, path, label, _ in held:
        reference = references[(dataset, stem)]
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
