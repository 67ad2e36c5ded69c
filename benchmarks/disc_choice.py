"""Which blob is the disc when two would pass? The largest, or the one the vessels converge on? With made rivals.

    python benchmarks/disc_choice.py [--data-root ../shared/data] [--datasets idrid-od,drive,les-av,hrf-av]
                                     [--split training] [--limit N] [--real-rivals | --off-disc]

No training photo has a real rival (benchmarks/disc_spread.py), so each photo in which the shipped disc model finds
a disc (centre c, diameter D) gets up to five made ones, each on its own copy of the photo: its own disc pasted 3 D
above c, 3 D below c and 2.5 D from c towards the FOV's centre, where the circle of radius 2 D around the paste lies
inside the FOV, and 2 D above and below c (on the arcades), where the circle of radius 1 D does. The paste is the
photo within 0.75 D of c, at full weight within 0.6 D, fading linearly to none at 0.75 D. Each copy is segmented by
the shipped disc model and by the default vessel model (its map at 0.5, the FOV estimated as `retinaseg run` does).
A case counts when the paste became a rival: among disc.disc_candidates, one centred within 0.5 D of c and one within
0.5 D of the paste. Prints each case and, over the counted ones, how often the largest blob (the disc kept before),
the densest ring of vessels (disc.ring_density) and the ring most vessels cross (disc.ring_crossings) choose the blob
at c, on the arcades and elsewhere. The rules these decided are in docs/experiments.md ("A disc chosen among rivals
by where the vessels converge").
--real-rivals: no pastes; each photo that has a rival of its own, with the centre the largest blob and the vessels
choose, and each one's centre error in disc diameters where the data set labels the disc (IDRiD-OD).
--off-disc: no pastes; each photo's ring density over its FOV's vessel density (the ratio `measure` flags under 1),
for the disc found and for the same disc moved to each position above that fits, and how many of each fall under 1.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace

import numpy as np
import torch
from scipy import ndimage

from retinaseg.datasets import load_samples, read_label
from retinaseg.disc import RING, disc_candidates, disc_ring, find_disc, ring_density
from retinaseg.fov import estimate_fov
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.models import load_model

DATASETS = ("idrid-od", "drive", "les-av", "hrf-av")
# in D: name, down, across ("inward": towards the FOV centre), the room the paste needs
OFFSETS = (("above", -3.0, 0.0, 2.0), ("below", 3.0, 0.0, 2.0), ("inward", 0.0, 2.5, 2.0),
           ("arcade+", -2.0, 0.0, 1.0), ("arcade-", 2.0, 0.0, 1.0))
PASTE_FULL, PASTE_EDGE = 0.6, 0.75  # in D: the paste's full-weight radius and its edge
NEAR = 0.5  # in D: a blob this close to a centre is the blob there


def ring_crossings(disc, vessels: np.ndarray, fov: np.ndarray) -> int:
    """How many vessels cross the disc's ring (disc.ring_density's): connected pieces of the vessel map within it
    that touch both its inner and its outer circle (within 1.5 px), each counted once whatever its width; the measure
    tried beside the density, and not adopted."""
    window, ring, radius = disc_ring(disc, vessels.shape, fov)
    pieces, count = ndimage.label(vessels[window] & ring, np.ones((3, 3)))
    edge = 1.5 / disc.diameter
    inner = np.unique(pieces[ring & (radius <= RING[0] + edge)])
    outer = np.unique(pieces[ring & (radius >= RING[1] - edge)])
    return int(np.count_nonzero(np.intersect1d(inner, outer)))


CHOOSERS = {"largest": lambda disc, vessels, fov: 0,  # max keeps the first of equals: the largest
            "density": ring_density, "crossings": ring_crossings}


def photos_of(args):
    """(data set, sample, photo) of each photo the options select."""
    for name in args.datasets.split(","):
        _, samples = load_samples(name, args.data_root, args.split)
        for sample in samples[:args.limit]:
            yield name, sample, read_photo(sample.image)


def rival_positions(fov: np.ndarray, row: float, col: float, diameter: float) -> list[tuple[str, float, float]]:
    """Where a pasted disc fits: the circle of the room it needs around it inside the frame and the FOV."""
    inward = 1.0 if np.nonzero(fov)[1].mean() >= col else -1.0
    rows, cols = np.indices(fov.shape)
    places = []
    for name, down, across, clear in OFFSETS:
        r, c = row + down * diameter, col + across * inward * diameter
        room = np.hypot(rows - r, cols - c) <= clear * diameter
        reach = clear * diameter
        if r - reach >= 0 and c - reach >= 0 and r + reach < fov.shape[0] and c + reach < fov.shape[1] \
                and fov[room].all():
            places.append((name, r, c))
    return places


def paste_disc(photo: np.ndarray, row: float, col: float, diameter: float, to_row: float, to_col: float) -> np.ndarray:
    """The photo with the region within PASTE_EDGE D of (row, col) blended in around (to_row, to_col)."""
    out = photo.copy()
    reach = int(np.ceil(PASTE_EDGE * diameter))
    dr, dc = int(round(to_row - row)), int(round(to_col - col))
    r0, c0 = int(round(row)), int(round(col))
    rows, cols = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    distance = np.hypot(rows, cols) / diameter
    weight = np.clip((PASTE_EDGE - distance) / (PASTE_EDGE - PASTE_FULL), 0, 1)[..., None].astype(np.float32)
    source = photo[r0 - reach:r0 + reach + 1, c0 - reach:c0 + reach + 1]
    target = out[r0 + dr - reach:r0 + dr + reach + 1, c0 + dc - reach:c0 + dc + reach + 1]
    if source.shape != weight.shape[:2] + (3,) or target.shape != source.shape:
        raise ValueError("the disc or its paste is cut by the frame")
    target[...] = weight * source + (1 - weight) * target
    return out


def blob_near(candidates: list, row: float, col: float, diameter: float):
    return next((d for d in candidates if np.hypot(d.row - row, d.col - col) <= NEAR * diameter), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated data set names")
    parser.add_argument("--split", default="training", choices=["training", "test"])
    parser.add_argument("--limit", type=int, default=None, help="at most this many photos per data set")
    parser.add_argument("--real-rivals", action="store_true", help="the photos' own rivals, no pastes")
    parser.add_argument("--off-disc", action="store_true", help="the vessel ratio at the disc and away from it")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet = lambda message: None  # noqa: E731
    disc_model = Segmenter(load_model("disc"), SegmentConfig(device="cpu"), notify=quiet)
    vessel_model = Segmenter(load_model("vesselnet"), SegmentConfig(device="cpu"), notify=quiet)
    if args.real_rivals:
        return real_rivals(args, disc_model, vessel_model)
    if args.off_disc:
        return off_disc(args, disc_model, vessel_model)
    made = 0
    right = {group: {chooser: [] for chooser in CHOOSERS} for group in ("arcade", "other")}
    print(f"{'photo':<24}{'paste':<9}{'rival':>6}" + "".join(f"{name:>10}" for name in CHOOSERS)
          + "  ring density and crossings at c / at the paste")
    for name, sample, photo in photos_of(args):
        disc = disc_model.find_disc(disc_model.predict(photo, finished=False)[0])
        if not disc.found:
            print(f"{name + ' ' + sample.id:<24}no disc found in the photo itself")
            continue
        for place, row, col in rival_positions(estimate_fov(photo), disc.row, disc.col, disc.diameter):
            made += 1
            copy = paste_disc(photo, disc.row, disc.col, disc.diameter, row, col)
            fov = estimate_fov(copy)
            candidates = disc_candidates(disc_model.predict(copy, finished=False)[0],
                                         min_probability=disc_model.model.disc_min_probability)
            real = blob_near(candidates, disc.row, disc.col, disc.diameter)
            pasted = blob_near(candidates, row, col, disc.diameter)
            label = f"{name + ' ' + sample.id:<24}{place:<9}"
            if real is None or pasted is None:
                print(f"{label}{'no':>6}  ({len(candidates)} candidate(s))", flush=True)
                continue
            vessels = vessel_model.predict(copy, fov)[0] >= 0.5
            line = f"{label}{'yes':>6}"
            for chooser, score in CHOOSERS.items():
                choice = max(candidates, key=lambda d: score(d, vessels, fov))
                correct = blob_near([choice], disc.row, disc.col, disc.diameter) is not None
                right["arcade" if place.startswith("arcade") else "other"][chooser].append(correct)
                line += f"{'right' if correct else 'wrong':>10}"
            print(f"{line}  {ring_density(real, vessels, fov):.3f}, {ring_crossings(real, vessels, fov)} / "
                  f"{ring_density(pasted, vessels, fov):.3f}, {ring_crossings(pasted, vessels, fov)}", flush=True)
    print(f"{made} pastes; chosen right, of those that became rivals:")
    for group, choosers in right.items():
        print(f"  {group:<8}" + "  ".join(f"{chooser} {sum(hits)}/{len(hits)}" for chooser, hits in choosers.items()))


def real_rivals(args, disc_model: Segmenter, vessel_model: Segmenter) -> None:
    print(f"{'photo':<24}{'rivals':>7}  centre (x, y): the largest / the vessels' choice; error in DD where labelled")
    for name, sample, photo in photos_of(args):
        prob = disc_model.predict(photo, finished=False)[0]
        largest = disc_model.find_disc(prob)
        if not largest.found or not largest.rivals:
            continue
        fov = estimate_fov(photo)
        chosen = disc_model.find_disc(prob, vessel_model.predict(photo, fov)[0] >= 0.5, fov)
        line = f"{name + ' ' + sample.id:<24}{largest.rivals:>7}  ({largest.col:.0f}, {largest.row:.0f}) / " \
               f"({chosen.col:.0f}, {chosen.row:.0f})"
        if name == "idrid-od" and sample.label is not None:
            truth = find_disc(read_label(sample.label, "disc").astype(np.float32))
            errors = [np.hypot(d.row - truth.row, d.col - truth.col) / truth.diameter for d in (largest, chosen)]
            line += f"; {errors[0]:.2f} / {errors[1]:.2f} DD"
        print(line, flush=True)


def off_disc(args, disc_model: Segmenter, vessel_model: Segmenter) -> None:
    print(f"{'photo':<24}{'at the disc':>12}  moved: ratio of ring density to FOV vessel density")
    at_disc, moved = [], []
    for name, sample, photo in photos_of(args):
        disc = disc_model.find_disc(disc_model.predict(photo, finished=False)[0])
        if not disc.found:
            continue
        fov = estimate_fov(photo)
        vessels = vessel_model.predict(photo, fov)[0] >= 0.5
        in_fov = float(vessels[fov].mean())
        at_disc.append(ring_density(disc, vessels, fov) / in_fov)
        here = [(place, ring_density(replace(disc, row=row, col=col), vessels, fov) / in_fov)
                for place, row, col in rival_positions(fov, disc.row, disc.col, disc.diameter)]
        moved += [ratio for _, ratio in here]
        print(f"{name + ' ' + sample.id:<24}{at_disc[-1]:>12.2f}  "
              + "  ".join(f"{place} {ratio:.2f}" for place, ratio in here), flush=True)
    print(f"under 1: {sum(r < 1 for r in at_disc)} of {len(at_disc)} discs found, {sum(r < 1 for r in moved)} of "
          f"{len(moved)} moved; ratio at the disc: median {np.median(at_disc):.2f}, lowest {min(at_disc):.2f}; "
          f"moved: median {np.median(moved):.2f}, highest {max(moved):.2f}")


if __name__ == "__main__":
    main()
