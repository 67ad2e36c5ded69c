"""Does the disc model say "no disc" when a photo shows none, and find one when it does?

    python benchmarks/disc_presence.py [--data-root ../shared/data] [--weights disc.pt]

Photos with a disc: the training photos of IDRiD-OD, DRIVE, LES-AV and HRF-AV. Photos without: the same photos cut
to the 45% of their width away from the disc (macula-centred crops; the disc's side from IDRiD's masks, and for the
other data sets from the disc the model finds in the whole photo: no crop where it finds none), at a third of their
size. For the largest blob of the model's map in each, prints its diameter / the photo's larger side and the mean
probability of its marked pixels, and how many photos of each kind the current rule (retinaseg/disc.py) calls "ok".
The rule is chosen on the training splits; `--split test` checks it afterwards.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image

from retinaseg.datasets import load_samples, read_label
from retinaseg.disc import disc_blob, marked_probability
from retinaseg.inference.rescale import to_raw_size
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.models import load_model

DATASETS = ("idrid-od", "drive", "les-av", "hrf-av")
KEPT_SHARE = 0.45  # of the photo's width, on the side away from the disc


def features(segmenter: Segmenter, photo: np.ndarray) -> tuple:
    """(status, blob diameter / the photo's larger side, mean probability in the blob, disc centre column or
    nan)."""
    prepared = segmenter.prepare(photo)
    _, probs = next(segmenter.predict_prepared([prepared]))
    prob = to_raw_size(probs, prepared)[0]  # the model's own map, before disc.keep_disc decides
    disc = segmenter.find_disc(prob)
    blob = disc_blob(prob)
    diameter = 2 * np.sqrt(blob.sum() / np.pi) / max(prob.shape)
    return disc.status, diameter, marked_probability(blob, prob) if blob.any() else 0.0, disc.col


def without_disc(photo: np.ndarray, disc_column: float) -> np.ndarray:
    """The KEPT_SHARE of the photo's width farthest from the disc, shrunk to a third."""
    width = photo.shape[1]
    kept = photo[:, :int(width * KEPT_SHARE)] if disc_column > width / 2 else photo[:, width - int(width * KEPT_SHARE):]
    image = Image.fromarray(np.round(kept * 255).astype(np.uint8))
    return np.asarray(image.resize((image.width // 3, image.height // 3), Image.LANCZOS), np.float32) / 255


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--weights", default=None, help="disc weights; default the shipped file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split", default="training", choices=["training", "test"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    segmenter = Segmenter(load_model("disc", args.weights), SegmentConfig(device="cpu"), notify=lambda m: None)
    rows = []  # (data set, stem, kind, status, diameter, mean probability)
    for name in DATASETS:
        for sample in load_samples(name, args.data_root, args.split)[1]:
            photo = read_photo(sample.image)
            status, diameter, mean_prob, column = features(segmenter, photo)
            rows.append((name, sample.id, "disc", status, diameter, mean_prob))
            if name == "idrid-od":
                column = float(np.nonzero(read_label(sample.label, "disc").any(axis=0))[0].mean())
            elif not np.isfinite(column):  # no disc found in the whole photo: no crop, its side being unknown
                print(f"  {name:<9}{sample.id:<14}{status:<10}{diameter:6.3f}{mean_prob:6.2f}", flush=True)
                continue
            status, diameter, mean_prob, _ = features(segmenter, without_disc(photo, column))
            rows.append((name, sample.id, "no disc", status, diameter, mean_prob))
            print(f"  {name:<9}{sample.id:<14}{rows[-2][3]:<10}{rows[-2][4]:6.3f}{rows[-2][5]:6.2f}   no disc: "
                  f"{status:<10}{diameter:6.3f}{mean_prob:6.2f}", flush=True)
    print(f"\n{'kind':<9}{'data set':<10}{'photos':>7}{'called ok':>10}   blob diameter / larger side, mean prob "
          f"(of those called ok: min, median)")
    for kind in ("disc", "no disc"):
        for name in DATASETS:
            chosen = [r for r in rows if r[0] == name and r[2] == kind]
            called = [r for r in chosen if r[3] == "ok"]
            spans = (f"{min(r[4] for r in called):.3f} {np.median([r[4] for r in called]):.3f}, "
                     f"{min(r[5] for r in called):.2f} {np.median([r[5] for r in called]):.2f}") if called else "-"
            print(f"{kind:<9}{name:<10}{len(chosen):>7}{len(called):>10}   {spans}")


if __name__ == "__main__":
    main()
