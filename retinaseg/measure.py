"""Vascular measurements of one photo's maps: the numbers `retinaseg measure` writes, one row per photo.

Every measure is computed here, from the vessel graph (vessel_graph.py) and the optic disc (disc.py); the columns
and their definitions are in docs/measurements.md. Lengths and calibres are in the photo's pixels; disc diameters
(DD) and micrometres follow from the disc's diameter and the pixel size. Given a measuring FOV (MEASURING_FOV, or
`retinaseg measure --measuring-fov`), each map is measured resampled to that common scale, its lengths and calibres
given back in the photo's pixels.

Zones are rings around the disc centre: zone B from 0.5 to 1 DD beyond the disc margin (radius 1 to 1.5 DD),
zone C from 0.5 to 2 DD beyond it (radius 1 to 2.5 DD).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from retinaseg import av
from retinaseg.disc import Disc, around, ring_density
from retinaseg.vessel_graph import VesselGraph, build_graph, label_vessels, photo_calibres

ZONE_B = (1.0, 1.5)  # radius from the disc centre, in disc diameters
ZONE_C = (1.0, 2.5)
KNUDTSON = {av.ARTERY: 0.88, av.VEIN: 0.95}  # Knudtson et al. 2003, revised Parr-Hubbard constants
KNUDTSON_VESSELS = 6  # the widest arterioles and venules crossing zone B
MIN_ZONE_PIXELS = 5  # centre-line pixels a vessel needs inside zone B to be measured there
MIN_ZONE_CALIBRES = 0.0  # ... and at least this many times its calibre there (docs/experiments.md)
JUNCTION_CLEARANCE = 1.5  # calibres: centre-line pixels this near a junction are not measured (its width is not one
# vessel's)
SMOOTHING = 2.0  # pixels: the Gaussian smoothing of centre lines before arc length and curvature
MIN_CHORD = 10.0  # pixels: a segment whose ends are closer than this (a stub, a loop) has no tortuosity
TYPES = {"all": None, "artery": av.ARTERY, "vein": av.VEIN}
CALIBRE_SOURCES = ("photo", "map")  # what zone B's calibres are measured on, given a photo (docs/experiments.md)
CALIBRES_FROM = "map"
# what the fractal dimension counts boxes of, and of which sides (docs/experiments.md): the filled map or its centre
# lines with sides D/4 to D/512 of the FOV diameter D, or the filled map with the coarse sides D/4 to D/64 only
FRACTAL_SOURCES = ("map", "centre lines", "map, coarse boxes")
FRACTAL_OF = "map"
BOX_DIVISIONS = {"map": range(2, 10), "centre lines": range(2, 10), "map, coarse boxes": range(2, 7)}  # D / 2^k
# Pixels across the FOV at which every map is measured (resampled), so that the graph, the calibres and the pixel
# constants above work on the same grid whatever the photo's resolution; None: each map at its own size (the default:
# a rule on held-out photos did not adopt it; docs/experiments.md, "A measuring scale").
MEASURING_FOV: Optional[int] = None


# a reason every row of a binary model's folder has: the batch says it once, each row's reason column every time
BINARY_MAP = "a binary vessel map: artery and vein measures are empty"


@dataclass
class Measurements:
    """One photo's row (`values`) and its per-vessel detail (`zone_b`: the vessels measured crossing zone B)."""
    status: str = "ok"  # ok, partial (some measures missing, reasons given), failed
    reasons: list = field(default_factory=list)
    values: dict = field(default_factory=dict)
    zone_b: list = field(default_factory=list)
    used: list = field(default_factory=list)  # (centre-line pixels in zone B, av code, calibre) of CRAE's and CRVE's

    def missing(self, reason: str) -> None:
        self.status = "partial" if self.status == "ok" else self.status
        if reason not in self.reasons:
            self.reasons.append(reason)


def knudtson(widths: list, constant: float) -> float:
    """Knudtson's revised summary calibre: pair the widest with the narrowest, combine each pair as
    constant * sqrt(a^2 + b^2), carry an odd middle one over, and repeat until one is left."""
    values = sorted(widths, reverse=True)
    if not values:
        return float("nan")
    while len(values) > 1:
        half = len(values) // 2
        combined = [constant * math.hypot(values[i], values[-1 - i]) for i in range(half)]
        values = sorted(combined + ([values[half]] if len(values) % 2 else []), reverse=True)
    return values[0]


def box_counting_dimension(mask: np.ndarray, fov_diameter: Optional[float] = None,
                           divisions: range = BOX_DIVISIONS["map"]) -> float:
    """The box-counting (Minkowski-Bouligand) dimension of a binary mask: the slope of log(boxes holding any
    pixel) against log(1 / box side). Sides 2, 4, ... up to a quarter of the mask's shorter side; or, given the FOV
    diameter D, D/2^k for k in divisions (D/4, D/8, ..., D/512 by default) rounded to whole pixels (the same
    physical scales at any resolution)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    if fov_diameter is None:
        sides = [2 ** k for k in range(1, 64) if 2 ** k <= min(mask.shape) // 4]
    else:
        sides = sorted({round(fov_diameter / 2 ** k) for k in divisions} - {0})
    counts = []
    for side in sides:
        height, width = -(-mask.shape[0] // side) * side, -(-mask.shape[1] // side) * side
        padded = np.zeros((height, width), bool)
        padded[:mask.shape[0], :mask.shape[1]] = mask
        boxes = padded.reshape(height // side, side, width // side, side).any(axis=(1, 3))
        counts.append(int(boxes.sum()))
    if len(sides) < 3:
        return float("nan")
    slope = np.polyfit(np.log(1 / np.array(sides, float)), np.log(np.array(counts, float)), 1)[0]
    return float(slope)


def fractal_dimension(mask: np.ndarray, fov: np.ndarray, fov_diameter: float, of: Optional[str] = None) -> float:
    """The box-counting dimension of a vessel mask inside the FOV, of the filled map or of its centre lines (its
    skeleton: the vessels' widths left out), with the box sides of that definition (FRACTAL_SOURCES); `of` defaults
    to FRACTAL_OF."""
    of = of or FRACTAL_OF
    if of == "centre lines":
        from skimage.morphology import skeletonize

        mask = skeletonize(mask)
    return box_counting_dimension(mask & fov, fov_diameter, BOX_DIVISIONS[of])


def fractal_dimensions(mask: np.ndarray, fov: np.ndarray, fov_diameter: float) -> dict:
    """{definition: fractal_dimension} for every definition in FRACTAL_SOURCES (benchmarks compare them)."""
    return {of: fractal_dimension(mask, fov, fov_diameter, of) for of in FRACTAL_SOURCES}


def smooth_path(path: np.ndarray) -> np.ndarray:
    """A centre line with the pixel staircase smoothed away (Gaussian, SMOOTHING px), ends kept in place."""
    from scipy import ndimage

    points = path.astype(np.float64)
    if len(points) < 5:
        return points
    pad = min(len(points) - 1, int(3 * SMOOTHING))
    # each end continued by its point reflection, so smoothing neither pulls the ends in nor bends them
    extended = np.concatenate([2 * points[0] - points[pad:0:-1], points, 2 * points[-1] - points[-2:-pad - 2:-1]])
    smoothed = np.stack([ndimage.gaussian_filter1d(extended[:, i], SMOOTHING) for i in (0, 1)], axis=1)
    return smoothed[pad:pad + len(points)]


def tortuosity(path: np.ndarray) -> dict:
    """Arc length, chord, distance factor (arc / chord), tortuosity density (Grisan et al. 2008: the segment cut at
    its inflection points, (n - 1) / n / arc * sum(arc_i / chord_i - 1)) and total squared curvature (the sum of
    curvature^2 * ds along the smoothed centre line) of one segment."""
    points = smooth_path(path)
    steps = np.diff(points, axis=0)
    ds = np.hypot(*steps.T)
    arc = float(ds.sum())
    chord = float(np.hypot(*(points[-1] - points[0])))
    if chord < MIN_CHORD:  # too short, or closed on itself (chord 0): its shape is not a vessel's course
        return {"arc": arc, "chord": chord, "distance_factor": float("nan"), "tortuosity_density": float("nan"),
                "squared_curvature": float("nan")}
    result = {"arc": arc, "chord": chord, "distance_factor": arc / chord, "tortuosity_density": 0.0,
              "squared_curvature": 0.0}
    if len(points) < 5:
        return result
    d1 = np.gradient(points, axis=0)
    d2 = np.gradient(d1, axis=0)
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    speed = np.maximum(np.hypot(*d1.T), 1e-9)
    curvature = cross / speed**3
    result["squared_curvature"] = float((curvature**2 * speed).sum())
    signs = np.sign(np.where(np.abs(curvature) < 1e-3, 0, curvature))
    nonzero = np.flatnonzero(signs)
    cuts = [0] + [int(nonzero[i + 1]) for i in range(len(nonzero) - 1) if signs[nonzero[i]] != signs[nonzero[i + 1]]]
    cuts.append(len(points) - 1)
    pieces = [(cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1) if cuts[i + 1] > cuts[i]]
    n = len(pieces)
    total = 0.0
    for start, end in pieces:
        piece_arc = float(ds[start:end].sum())
        piece_chord = float(np.hypot(*(points[end] - points[start])))
        total += piece_arc / piece_chord - 1 if piece_chord > 0 else 0.0
    result["tortuosity_density"] = (n - 1) / n / arc * total if n else 0.0
    return result


@dataclass
class Scaled:
    """A photo's maps at the measuring scale, and how many measuring pixels a photo pixel is along rows and
    columns."""
    labels: np.ndarray
    disc: Disc
    fov: np.ndarray
    probability: Optional[np.ndarray]
    photo: Optional[np.ndarray]
    factors: tuple = (1.0, 1.0)

    @property
    def scale(self) -> float:
        return math.sqrt(self.factors[0] * self.factors[1])


def at_measuring_scale(labels: np.ndarray, disc: Disc, fov: np.ndarray, probability: Optional[np.ndarray],
                       photo: Optional[np.ndarray], fov_diameter_px: float,
                       measuring_fov: Optional[float] = None) -> Scaled:
    """The maps resampled so that the FOV (fov_diameter_px across) is measuring_fov (default MEASURING_FOV) pixels
    across, antialiased where they shrink; a label map through the share of each class in a pixel: vessel where the
    vessel classes hold at least half, then the likeliest of them. As they are without a measuring FOV."""
    unchanged = Scaled(labels, disc, fov, probability, photo)
    measuring_fov = measuring_fov or MEASURING_FOV
    if not measuring_fov:
        return unchanged
    factor = measuring_fov / fov_diameter_px
    shape = (max(round(labels.shape[0] * factor), 1), max(round(labels.shape[1] * factor), 1))
    if shape == labels.shape:
        return unchanged
    import torch

    from retinaseg.preprocess import resize, resize_mask

    def resampled(planes: np.ndarray) -> np.ndarray:  # CxHxW
        return resize(torch.from_numpy(np.ascontiguousarray(planes, np.float32)), shape).numpy()

    if labels.dtype == bool:
        scaled_labels = resampled(labels[None])[0] >= 0.5
    else:
        scaled_labels = av.class_map(resampled(_one_hot(labels)), vessel_first=True)
    rows, cols = shape[0] / labels.shape[0], shape[1] / labels.shape[1]
    # pixel centres map as the resampling maps them (align_corners=False); a disc not found stays not found (NaN)
    scaled_disc = replace(disc, row=(disc.row + 0.5) * rows - 0.5, col=(disc.col + 0.5) * cols - 0.5,
                          diameter=disc.diameter * math.sqrt(rows * cols))
    return Scaled(scaled_labels, scaled_disc, resize_mask(fov, shape).numpy(),
                  None if probability is None else resampled(probability),
                  None if photo is None else resampled(photo.transpose(2, 0, 1)).transpose(1, 2, 0), (rows, cols))


def measure(labels: np.ndarray, disc: Disc, fov: np.ndarray, probability: Optional[np.ndarray] = None,
            pixel_size_um: Optional[float] = None, photo: Optional[np.ndarray] = None,
            calibres_from: Optional[str] = None, measuring_fov: Optional[float] = None,
            raw_fov_diameter: Optional[float] = None) -> Measurements:
    """The row of one photo. labels: HxW bool (a binary vessel map) or uint8 av codes (0 background, 1 artery,
    2 vein, 3 uncertain); probability: the matching probabilities (1xHxW or 4xHxW), when there are some, for
    calibres; disc: from disc.find_disc; fov: HxW bool; pixel_size_um: micrometres per pixel, if known; photo:
    HxWx3 (0-1), which zone B's calibres are measured on when calibres_from is "photo" (default CALIBRES_FROM).
    measuring_fov: measured with the maps resampled to this FOV diameter (default MEASURING_FOV: none, each map at
    its own size); every length, calibre and centre line is given in the photo's pixels either way.
    raw_fov_diameter: the FOV's diameter where the FOV fills the frame (a crop inside the retina: `run
    --raw-fov-diameter`), as the runner takes it; otherwise the FOV mask's."""
    from retinaseg.fov import measured_diameter

    diameter = measured_diameter(fov, raw_fov_diameter)
    scaled = at_measuring_scale(labels, disc, fov, probability, photo, diameter, measuring_fov)
    result = _measured(scaled, calibres_from, diameter * scaled.scale)
    if scaled.factors != (1.0, 1.0):
        _in_photo_pixels(result, scaled)
    result.values.update(photo_size=f"{labels.shape[1]}x{labels.shape[0]}", disc_x=disc.col, disc_y=disc.row,
                         disc_diameter_px=disc.diameter, fov_diameter_px=float(diameter))
    _units(result, disc, pixel_size_um)
    if not labels.any() or not scaled.labels.any():
        result.status = "failed"
        result.reasons.insert(0, "no vessels in the map" if not labels.any()
                              else "no vessels left at the measuring scale (too few or too thin)")
    return result


def _measured(scaled: Scaled, calibres_from: Optional[str], fov_diameter: float) -> Measurements:
    """measure()'s row in the pixels of the maps given (fov_diameter too), before the units."""
    labels, disc, fov, probability, photo = scaled.labels, scaled.disc, scaled.fov, scaled.probability, scaled.photo
    result = Measurements()
    is_av = labels.dtype != bool
    vessels = labels > 0
    width_map = None
    if probability is not None:
        width_map = probability[0] if probability.shape[0] == 1 else 1 - probability[av.BACKGROUND]
    graph = build_graph(vessels, width_map)
    if is_av:
        prob = probability if probability is not None and probability.shape[0] == 4 else _one_hot(labels)
        label_vessels(graph, prob, vessels)
    values = result.values
    values.update(photo_size=f"{labels.shape[1]}x{labels.shape[0]}", disc_from=disc.source, disc_x=disc.col,
                  disc_y=disc.row, disc_diameter_px=disc.diameter,
                  disc_rivals=disc.rivals if disc.found else float("nan"),
                  disc_vessel_ratio=float("nan"))  # set once the FOV's vessel density is known
    if not disc.found:
        result.missing(f"no optic disc: {disc.reason}; zone measures and DD units are empty")
    if not is_av and vessels.any():  # a map with no vessels says nothing of its kind: an empty A/V map reads as this
        result.missing(BINARY_MAP)
    _whole_map_measures(result, graph, vessels, labels if is_av else None, fov, fov_diameter)
    if disc.found and values["density_fov_all"] > 0:
        # the ring's vessel density over the FOV's: above 1 where the vessels converge on the disc, as they do on
        # every training photo's disc (docs/experiments.md)
        values["disc_vessel_ratio"] = ring_density(disc, vessels, fov) / values["density_fov_all"]
    channel = photo[..., 1] if photo is not None and (calibres_from or CALIBRES_FROM) == "photo" else None
    _zone_measures(result, graph, vessels, labels if is_av else None, fov, disc, channel)
    return result


def _in_photo_pixels(result: Measurements, scaled: Scaled) -> None:
    """The lengths and calibres of a row measured at the measuring scale in the photo's pixels (per-length measures
    by the inverse factor), and the centre lines CRAE and CRVE used on the photo's pixel grid."""
    scale = scaled.scale
    values = result.values
    for key in [k for k in values if "_px" in k]:
        values[key] = values[key] * scale if "_per_px" in key else values[key] / scale
    for vessel in result.zone_b:
        vessel.update(calibre_px=vessel["calibre_px"] / scale, pixels=vessel["pixels"] / scale)
    result.used = [(_path_in_photo(path, scaled.factors), code, calibre / scale)
                   for path, code, calibre in result.used]


def _path_in_photo(path: np.ndarray, factors: tuple) -> np.ndarray:
    """A centre line's (row, col) pixels at the measuring scale on the photo's grid, neighbours there joined by
    pixels one apart at most (a shrunk map's centre line, enlarged, would leave gaps); a jump between two pieces of
    a vessel stays a jump."""
    points = (path + 0.5) / np.asarray(factors) - 0.5
    if len(points) > 1:
        neighbours = np.abs(np.diff(path, axis=0)).max(axis=1) <= 1
        spans = np.abs(np.diff(points, axis=0)).max(axis=1)
        steps = np.where(neighbours, np.maximum(np.ceil(spans), 1), 1).astype(int)
        points = np.concatenate([np.linspace(a, b, n, endpoint=False) for a, b, n in zip(points[:-1], points[1:],
                                                                                        steps)] + [points[-1:]])
    rounded = np.floor(points + 0.5).astype(int)  # halves up, so evenly spaced points leave no gaps
    keep = np.ones(len(rounded), bool)
    keep[1:] = (np.diff(rounded, axis=0) != 0).any(axis=1)
    return rounded[keep]


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.stack([labels == code for code in range(4)]).astype(np.float32)


def _segments_of(graph: VesselGraph, code: Optional[int]) -> list:
    return [s for s in graph.segments if code is None or s.label == code]


def _whole_map_measures(result: Measurements, graph: VesselGraph, vessels: np.ndarray, labels, fov,
                        diameter: float) -> None:
    values = result.values
    in_fov = max(int(fov.sum()), 1)
    # box sides relative to the FOV: the same physical scales at any resolution (docs/experiments.md)
    values["fov_diameter_px"] = float(diameter)
    for name, code in TYPES.items():
        if code is not None and labels is None:
            for key in ("density_fov", "fractal_dimension", "length_px", "segments", "distance_factor",
                        "tortuosity_density_per_px", "squared_curvature_per_px"):
                values[f"{key}_{name}"] = float("nan")
            continue
        mask = vessels if code is None else (labels == code)
        values[f"density_fov_{name}"] = float((mask & fov).sum() / in_fov)
        values[f"fractal_dimension_{name}"] = fractal_dimension(mask, fov, diameter)
        segments = _segments_of(graph, code)
        shapes = [tortuosity(s.path) for s in segments]
        arcs = np.array([t["arc"] for t in shapes])
        values[f"length_px_{name}"] = float(arcs.sum())
        values[f"segments_{name}"] = len(segments)
        for key in ("distance_factor", "tortuosity_density", "squared_curvature"):
            column = key if key == "distance_factor" else f"{key}_per_px"  # per unit length: its unit in the name
            values[f"{column}_{name}"] = _weighted_mean([t[key] for t in shapes], arcs)
    values["branch_points"] = sum(n.kind == "bifurcation" for n in graph.nodes)
    values["crossings"] = sum(n.kind == "crossing" for n in graph.nodes)


def _weighted_mean(values: list, weights: np.ndarray) -> float:
    values = np.array(values, float)
    keep = np.isfinite(values) & (weights > 0)
    return float((values[keep] * weights[keep]).sum() / weights[keep].sum()) if keep.any() else float("nan")


def _zone_measures(result: Measurements, graph: VesselGraph, vessels: np.ndarray, labels, fov, disc: Disc,
                   channel: Optional[np.ndarray]) -> None:
    values = result.values
    keys = [f"mean_calibre_zone_b_px_{n}" for n in TYPES] + [f"density_zone_c_{n}" for n in TYPES] \
        + ["crae_px", "crve_px", "avr", "arteries_zone_b", "veins_zone_b"]
    for key in keys:
        values[key] = float("nan")
    if not disc.found:
        return
    window, radius = around(disc, ZONE_C[1], vessels.shape)
    zone_c = (radius >= ZONE_C[0]) & (radius <= ZONE_C[1]) & fov[window]
    crossing_b = []
    for ids in graph.vessels():  # a vessel split by a crossing, or leaving the ring and coming back, counts once
        segments = [graph.segments[i] for i in ids]
        inside = [_in_zone(s.path, disc) & _away_from_junctions(graph, s) for s in segments]
        pixels = int(sum(i.sum() for i in inside))
        calibre, source = _zone_calibre(segments, inside, channel) if pixels else (0.0, "map")
        if pixels >= max(MIN_ZONE_PIXELS, MIN_ZONE_CALIBRES * calibre):
            code = segments[0].label  # one per vessel (label_vessels)
            crossing_b.append({"vessel": segments[0].vessel, "segments": [s.id for s, i in zip(segments, inside)
                                                                           if i.any()],
                               "label": av.CLASS_NAMES[code] if code else None, "code": code,
                               "calibre_px": calibre, "calibre_from": source, "pixels": pixels,
                               "path": np.concatenate([s.path[i] for s, i in zip(segments, inside)])})
    for name, code in TYPES.items():
        if code is not None and labels is None:
            continue
        chosen = [v for v in crossing_b if code is None or v["code"] == code]
        # weighted by centre-line pixels in the zone: the mean width along its centre lines, which short stubs and
        # spurs (more of them at higher resolution) do not sway (docs/experiments.md)
        values[f"mean_calibre_zone_b_px_{name}"] = float(np.average([v["calibre_px"] for v in chosen],
                                                                    weights=[v["pixels"] for v in chosen])) \
            if chosen else float("nan")
        mask = vessels[window] if code is None else labels[window] == code
        values[f"density_zone_c_{name}"] = float((mask & zone_c).sum() / max(int(zone_c.sum()), 1))
    if labels is not None:
        for code, key, count_key in ((av.ARTERY, "crae_px", "arteries_zone_b"),
                                     (av.VEIN, "crve_px", "veins_zone_b")):
            _summary_calibre(result, crossing_b, code, key, count_key)
        values["avr"] = values["crae_px"] / values["crve_px"] if values["crve_px"] > 0 else float("nan")
    values["zone_b_calibres_on_photo"] = sum(item["calibre_from"] == "photo" for item in crossing_b)
    result.zone_b = [{**{k: v for k, v in item.items() if k not in ("code", "path")},
                      "used": any(item["path"] is used[0] for used in result.used)} for item in crossing_b]


def _zone_calibre(segments: list, inside: list, channel: Optional[np.ndarray]) -> tuple[float, str]:
    """A vessel's calibre in zone B and what it was measured on: the median over its centre-line pixels there, on
    the photo (channel) where at least half of them have a clear profile, else on the map."""
    on_map = np.concatenate([s.calibres[i] for s, i in zip(segments, inside)])
    if channel is not None:
        on_photo = np.concatenate([photo_calibres(s.path, i, channel, float(np.median(s.calibres[i])))
                                   for s, i in zip(segments, inside) if i.any()])
        on_photo = on_photo[np.isfinite(on_photo)]
        if len(on_photo) >= max(MIN_ZONE_PIXELS, 0.5 * len(on_map)):
            return float(np.median(on_photo)), "photo"
    return float(np.median(on_map)), "map"


def _summary_calibre(result: Measurements, crossing_b: list, code: int, key: str, count_key: str) -> None:
    """CRAE or CRVE from the widest KNUDTSON_VESSELS of this type crossing zone B (fewer: partial)."""
    values = result.values
    chosen = sorted((v for v in crossing_b if v["code"] == code), key=lambda v: v["calibre_px"],
                    reverse=True)[:KNUDTSON_VESSELS]
    widths = [v["calibre_px"] for v in chosen]
    values[count_key] = sum(v["code"] == code for v in crossing_b)
    result.used += [(v["path"], code, v["calibre_px"]) for v in chosen]
    if len(widths) < KNUDTSON_VESSELS:
        kind = {av.ARTERY: "arteries", av.VEIN: "veins"}[code]
        result.missing(f"{len(widths)} {kind} cross zone B, {KNUDTSON_VESSELS} are needed: "
                       f"{key.split('_')[0].upper()} from them")
    values[key] = knudtson(widths, KNUDTSON[code])


def _away_from_junctions(graph: VesselGraph, segment) -> np.ndarray:
    """The centre-line pixels more than JUNCTION_CLEARANCE calibres from a branch point or crossing at either end,
    where the width across the centre line is the vessel's own and not the junction's."""
    keep = np.ones(len(segment.path), bool)
    clearance = int(np.ceil(JUNCTION_CLEARANCE * max(segment.calibre, 1.0)))
    if graph.nodes[segment.start].kind != "end":
        keep[:clearance] = False
    if graph.nodes[segment.end].kind != "end":
        keep[len(keep) - clearance:] = False
    return keep


def _in_zone(path: np.ndarray, disc: Disc) -> np.ndarray:
    radius = np.hypot(path[:, 0] - disc.row, path[:, 1] - disc.col) / disc.diameter
    return (radius >= ZONE_B[0]) & (radius <= ZONE_B[1])


def _units(result: Measurements, disc: Disc, pixel_size_um: Optional[float]) -> None:
    """Each *_px column again in disc diameters and, with a pixel size, in micrometres (*_per_px ones, per unit
    length, by the inverse factor)."""
    values = result.values
    for key in [k for k in values if "_px" in k and k != "disc_diameter_px"]:
        value, inverse = values[key], "_per_px" in key
        in_dd = (value * disc.diameter if inverse else value / disc.diameter) if disc.found else float("nan")
        in_um = (value / pixel_size_um if inverse else value * pixel_size_um) if pixel_size_um else float("nan")
        values[key.replace("_px", "_dd")], values[key.replace("_px", "_um")] = in_dd, in_um
    values["disc_diameter_um"] = disc.diameter * pixel_size_um if pixel_size_um and disc.found else float("nan")
