"""The optic disc in a disc model's probability map: the one disc kept, its centre and its diameter.

A disc model (task "disc") marks disc pixels; bright lesions can be marked too. The disc is the largest connected
blob at probability >= 0.5, grown by its faint rim (the pixels connected to it at >= GROW_TO), holes filled. A
photo with no such blob, or one too small, too elongated or marked too faintly to be a disc, has no disc: the status
says so and nothing is guessed. Other blobs that would pass as a disc and are at least half its size are counted
(rivals), so a choice that may be wrong is said; given the photo's vessel map, the disc is the one of them the
vessels converge on (the densest ring of vessels around it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from retinaseg.inference import VESSEL_THRESHOLD

# Chosen on training photos with and without a disc (benchmarks/disc_presence.py, docs/experiments.md): the blobs
# the shipped model marks on exudates, on a crop's straight edge or on a pale disc's fragment are small or faint.
MIN_DIAMETER_SHARE = 0.04  # of the map's larger side: a narrower blob is not a disc (a speck, an exudate)
MIN_MEAN_PROBABILITY = 0.85  # over the blob: a disc is marked firmly
MAX_ELONGATION = 2.5  # a blob this many times longer than wide is not a disc (a vessel reflex, a lesion)
GROW_TO = 0.25  # the blob grows by the pixels connected to it at this probability or more, a pale disc's faint
# rim (decided on held-out and unlabelled training photos, docs/experiments.md; None: the blob at 0.5 alone)
OPEN_SHARE = None  # the kept blob opened by a disc of this share of its diameter, its largest piece kept (parts
# narrower than twice that dropped): a variant put to a rule and not adopted (docs/experiments.md); None: not opened
# Another blob that would pass as a disc, with at least this share of the largest blob's area, makes the choice
# worth a look (`retinaseg measure`'s disc_check): discs differ by about 26% in area between people, so a region
# half as large is no fragment of the same disc. Fixed, not fitted (docs/measurements.md).
RIVAL_SHARE = 0.5
# Among rivals, given the vessel map: the disc the vessels converge on (converging_disc), not the largest; chosen by
# a rule written first and a test on training photos with pasted rivals (docs/experiments.md). Recorded by measure.
AMONG_RIVALS = "converging vessels"
RING = (0.5, 1.5)  # where the vessels are counted, in the disc's diameters from its centre: the margin to 1 DD beyond


@dataclass
class Disc:
    status: str  # "ok" or "not found"
    reason: str = ""
    row: float = float("nan")  # centre, pixels
    col: float = float("nan")
    diameter: float = float("nan")  # of the circle of the blob's area, pixels
    rivals: int = 0  # other blobs that would pass as a disc, at least RIVAL_SHARE of the largest one's area at 0.5
    source: str = ""  # what found it, as measurements.csv's disc_from says: "model", "mask" or "given" (by hand)

    @property
    def found(self) -> bool:
        return self.status == "ok"


def _blobs(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The connected blobs at probability >= 0.5 (labels 1..n) and their sizes in pixels (index 0: blob 1)."""
    from scipy import ndimage

    blobs, _ = ndimage.label(np.asarray(prob) >= VESSEL_THRESHOLD)
    return blobs, np.bincount(blobs.ravel())[1:]


def disc_blob(prob: np.ndarray, labelled: Optional[tuple] = None) -> np.ndarray:
    """The disc's pixels (HxW bool): the largest blob at probability >= 0.5 (grown to GROW_TO, if set), holes
    filled; empty if none. labelled: _blobs(prob), when the caller has it."""
    prob = np.asarray(prob)
    blobs, sizes = labelled or _blobs(prob)
    if sizes.size == 0:
        return np.zeros(blobs.shape, bool)
    return _grown(prob, blobs == 1 + int(np.argmax(sizes)))


def _grown(prob: np.ndarray, blob: np.ndarray, faint: Optional[np.ndarray] = None) -> np.ndarray:
    """A blob grown by the faint rim connected to it (GROW_TO, if set), holes filled. faint: the labelled pixels at
    GROW_TO or more, when the caller grows several blobs of one map."""
    from scipy import ndimage

    if GROW_TO is not None:
        faint = ndimage.label(prob >= GROW_TO)[0] if faint is None else faint
        blob = faint == faint[blob][0]
    # the holes filled within the blob's bounding box and a margin of one pixel, which holds the same holes as the
    # whole frame (the margin joins all that surrounds the blob) at a fraction of the cost on a large photo
    rows, cols = np.flatnonzero(blob.any(axis=1)), np.flatnonzero(blob.any(axis=0))
    box = np.s_[max(rows[0] - 1, 0):rows[-1] + 2, max(cols[0] - 1, 0):cols[-1] + 2]
    filled = np.zeros_like(blob)
    filled[box] = ndimage.binary_fill_holes(blob[box])
    if OPEN_SHARE is not None:
        filled[box] = _opened(filled[box], OPEN_SHARE)
    return filled


def _opened(blob: np.ndarray, share: float) -> np.ndarray:
    """The blob opened by a disc of radius share x its diameter (the circle of its area), by distances rather than
    a structuring element as large as that; its largest piece, or the blob itself if nothing is left."""
    from scipy import ndimage

    radius = share * 2 * math.sqrt(blob.sum() / math.pi)
    core = ndimage.distance_transform_edt(blob) > radius
    if not core.any():
        return blob
    opened = (ndimage.distance_transform_edt(~core) <= radius) & blob
    pieces, count = ndimage.label(opened)
    return pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:])) if count > 1 else opened


def find_disc(prob: np.ndarray, vessels: Optional[np.ndarray] = None, fov: Optional[np.ndarray] = None,
              min_probability: Optional[float] = None) -> Disc:
    """The disc in a HxW disc probability map (or a mask), with the count of its rivals. vessels (HxW bool, the
    photo's vessel map) and fov (HxW bool; default all): with rivals, the disc is the candidate the vessels converge
    on (converging_disc) instead of the largest. min_probability: the mean probability a disc needs, where the
    weights file that made the map sets its own (models.LoadedModel.disc_min_probability); default
    MIN_MEAN_PROBABILITY."""
    return _kept(np.asarray(prob), vessels, fov, min_probability)[0]


def _kept(prob: np.ndarray, vessels: Optional[np.ndarray], fov: Optional[np.ndarray],
          min_probability: Optional[float] = None) -> tuple[Disc, np.ndarray]:
    """find_disc's disc and its pixels."""
    labelled = _blobs(prob)
    blob = disc_blob(prob, labelled)
    disc = _disc_of(blob, prob, min_probability)
    if disc.found:
        disc.rivals = rival_discs(prob, labelled, min_probability)
        if disc.rivals and vessels is not None:
            candidates = _candidates(prob, labelled, min_probability)
            chosen = converging_disc([candidate for candidate, _ in candidates], vessels, fov)
            blob = next(pixels for candidate, pixels in candidates if candidate is chosen)
            disc = replace(chosen, rivals=disc.rivals)
    return disc, blob


def disc_candidates(prob: np.ndarray, labelled: Optional[tuple] = None,
                    min_probability: Optional[float] = None) -> list[Disc]:
    """The largest blob and its rivals (rival_discs) as discs, each grown and filled as the kept disc is, the
    largest first; those that no longer pass as a disc once grown, or grow into one already listed, are left out."""
    return [disc for disc, _ in _candidates(np.asarray(prob), labelled, min_probability)]


def _candidates(prob: np.ndarray, labelled: Optional[tuple] = None,
                min_probability: Optional[float] = None) -> list[tuple[Disc, np.ndarray]]:
    """disc_candidates with their pixels."""
    blobs, sizes = labelled or _blobs(prob)
    if sizes.size == 0:
        return []
    from scipy import ndimage

    largest = int(np.argmax(sizes))
    faint = ndimage.label(prob >= GROW_TO)[0] if GROW_TO is not None else None  # labelled once for every blob
    candidates, taken = [], np.zeros(blobs.shape, bool)
    for index in [largest] + [int(i) for i in np.flatnonzero(sizes >= RIVAL_SHARE * sizes[largest]) if i != largest]:
        blob = _grown(prob, blobs == 1 + index, faint)
        disc = _disc_of(blob, prob, min_probability)
        if disc.found and not (blob & taken).any():
            candidates.append((disc, blob))
            taken |= blob
    return candidates


def converging_disc(candidates: list[Disc], vessels: np.ndarray, fov: Optional[np.ndarray] = None) -> Disc:
    """The candidate with the highest ring_density of vessels: every large trunk leaves the eye through the disc and
    crosses its ring, while around a bright lesion the ring holds only the vessels passing by. Ties: the first (the
    largest)."""
    return max(candidates, key=lambda disc: ring_density(disc, vessels, fov))  # max keeps the first of equals


def ring_density(disc: Disc, vessels: np.ndarray, fov: Optional[np.ndarray] = None) -> float:
    """The share of vessel pixels among the (FOV) pixels of the disc's ring (RING: from its margin to 1 DD beyond)."""
    window, ring, _ = disc_ring(disc, vessels.shape, fov)
    return float(vessels[window][ring].sum() / ring.sum()) if ring.any() else 0.0


def disc_ring(disc: Disc, shape: tuple, fov: Optional[np.ndarray] = None) -> tuple:
    """A window around the disc's ring (RING), the ring's (FOV) pixels in it, and their distances from the centre in
    diameters."""
    window, radius = around(disc, RING[1], shape)
    ring = (radius >= RING[0]) & (radius <= RING[1])
    if fov is not None:
        ring &= fov[window]
    return window, ring, radius


def around(disc: Disc, reach: float, shape: tuple) -> tuple:
    """The window of an HxW frame that holds every pixel within `reach` disc diameters of the disc's centre, and
    each of its pixels' distance from the centre in disc diameters: what rings and zones are cut from, without
    an index grid of the whole frame."""
    span = int(np.ceil(reach * disc.diameter))
    row, col = int(disc.row), int(disc.col)
    window = np.s_[max(row - span, 0):min(row + span + 1, shape[0]), max(col - span, 0):min(col + span + 1, shape[1])]
    rows, cols = np.ogrid[window]
    return window, np.hypot(rows - disc.row, cols - disc.col) / disc.diameter


def rival_discs(prob: np.ndarray, labelled: Optional[tuple] = None, min_probability: Optional[float] = None) -> int:
    """How many blobs beside the largest at probability >= 0.5 would pass as a disc (its checks, holes filled) and
    have at least RIVAL_SHARE of its area: a bright lesion or reflex the size of a disc, or a second disc.
    labelled: _blobs(prob), when the caller has it."""
    from scipy import ndimage

    prob = np.asarray(prob)
    blobs, sizes = labelled or _blobs(prob)
    if sizes.size < 2:
        return 0
    largest = int(np.argmax(sizes))
    return sum(_disc_of(ndimage.binary_fill_holes(blobs == 1 + index), prob, min_probability).found
               for index in np.flatnonzero(sizes >= RIVAL_SHARE * sizes[largest]) if index != largest)


def _disc_of(blob: np.ndarray, prob: np.ndarray, min_probability: Optional[float] = None) -> Disc:
    """The disc a kept blob of the probability map describes, or why it is none."""
    firm = MIN_MEAN_PROBABILITY if min_probability is None else min_probability
    if not blob.any():
        return Disc("not found", "no disc pixels at probability 0.5 or more")
    rows, cols = np.nonzero(blob)
    diameter = 2 * math.sqrt(len(rows) / math.pi)
    if diameter < MIN_DIAMETER_SHARE * max(blob.shape):
        return Disc("not found", f"the largest disc-like blob is {diameter:.0f} px across, too small for a disc")
    mean_probability = marked_probability(blob, prob)
    if mean_probability < firm:
        return Disc("not found", f"the largest disc-like blob is marked faintly (mean probability "
                                 f"{mean_probability:.2f}, a disc {firm} or more)")
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    if max(height, width) > MAX_ELONGATION * min(height, width):
        return Disc("not found", f"the largest disc-like blob is {height}x{width} px, too elongated for a disc")
    return Disc("ok", "", float(rows.mean()), float(cols.mean()), diameter)


def marked_probability(blob: np.ndarray, prob: np.ndarray) -> float:
    """The mean probability of the blob's firmly marked pixels (its filled holes, the vessels on the disc, and a
    grown rim, which keep_disc raises to exactly the threshold, left out)."""
    prob = np.asarray(prob, np.float32)
    firm = blob & (prob > VESSEL_THRESHOLD)
    return float(prob[firm].mean()) if firm.any() else 0.0


def keep_disc(prob: np.ndarray, vessels: Optional[np.ndarray] = None, fov: Optional[np.ndarray] = None,
              min_probability: Optional[float] = None) -> tuple[np.ndarray, Disc]:
    """A disc model's 1xHxW probabilities with everything outside the kept disc set below the threshold (the disc
    itself as predicted, holes filled), so its map shows one disc or none; and that disc (find_disc's, chosen among
    rivals by the vessels when given; min_probability as find_disc's)."""
    disc, blob = _kept(prob[0], vessels, fov, min_probability)
    out = np.minimum(prob, np.float32(VESSEL_THRESHOLD * 0.999))
    if disc.found:
        out[0][blob] = np.maximum(prob[0][blob], VESSEL_THRESHOLD)
    return out, disc
