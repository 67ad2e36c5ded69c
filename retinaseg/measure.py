"""Vascular measurements of one photo's maps: the numbers `retinaseg measure` writes, one row per photo.

Every measure is computed here, from the vessel graph (vessel_graph.py) and the optic disc (disc.py); the columns
and their definitions are in docs/measurements.md. Lengths and calibres are in the map's pixels; disc diameters
(DD) and micrometres follow from the disc's diameter and the pixel size.

Zones are rings around the disc centre: zone B from 0.5 to 1 DD beyond the disc margin (radius 1 to 1.5 DD),
zone C from 0.5 to 2 DD beyond it (radius 1 to 2.5 DD).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Optional

import numpy as np

from retinaseg import av
from retinaseg.disc import Disc
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
DISC_SIZE_TOLERANCE = 0.3  # relative: over twice the ~13% spread of disc diameters between people (check_discs)
MIN_DISC_PEERS = 5  # photos of one size with a disc, for a median to compare a disc with
CALIBRE_SOURCES = ("photo", "map")  # what zone B's calibres are measured on, given a photo (docs/experiments.md)
CALIBRES_FROM = "map"
FRACTAL_SOURCES = ("map", "centre lines")  # what the fractal dimension counts boxes of (docs/experiments.md)
FRACTAL_OF = "map"


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


def box_counting_dimension(mask: np.ndarray, fov_diameter: Optional[float] = None) -> float:
    """The box-counting (Minkowski-Bouligand) dimension of a binary mask: the slope of log(boxes holding any
    pixel) against log(1 / box side). Sides 2, 4, ... up to a quarter of the mask's shorter side; or, given the FOV
    diameter D, D/4, D/8, ..., D/512 rounded to whole pixels (the same physical scales at any resolution)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    if fov_diameter is None:
        sides = [2 ** k for k in range(1, 64) if 2 ** k <= min(mask.shape) // 4]
    else:
        sides = sorted({round(fov_diameter / 2 ** k) for k in range(2, 10)} - {0})
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
    skeleton: the vessels' widths left out); `of` defaults to FRACTAL_OF."""
    if (of or FRACTAL_OF) == "centre lines":
        from skimage.morphology import skeletonize

        mask = skeletonize(mask)
    return box_counting_dimension(mask & fov, fov_diameter)


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


def measure(labels: np.ndarray, disc: Disc, fov: np.ndarray, probability: Optional[np.ndarray] = None,
            pixel_size_um: Optional[float] = None, photo: Optional[np.ndarray] = None,
            calibres_from: Optional[str] = None) -> Measurements:
    """The row of one photo. labels: HxW bool (a binary vessel map) or uint8 av codes (0 background, 1 artery,
    2 vein, 3 uncertain); probability: the matching probabilities (1xHxW or 4xHxW), when there are some, for
    calibres; disc: from disc.find_disc; fov: HxW bool; pixel_size_um: micrometres per pixel, if known; photo:
    HxWx3 (0-1), which zone B's calibres are measured on when calibres_from is "photo" (default CALIBRES_FROM)."""
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
    values.update(photo_size=f"{labels.shape[1]}x{labels.shape[0]}", disc_x=disc.col, disc_y=disc.row,
                  disc_diameter_px=disc.diameter, disc_rivals=disc.rivals if disc.found else float("nan"))
    if not disc.found:
        result.missing(f"no optic disc: {disc.reason}; zone measures and DD units are empty")
    if not is_av:
        result.missing("a binary vessel map: artery and vein measures are empty")
    _whole_map_measures(result, graph, vessels, labels if is_av else None, fov)
    channel = photo[..., 1] if photo is not None and (calibres_from or CALIBRES_FROM) == "photo" else None
    _zone_measures(result, graph, vessels, labels if is_av else None, fov, disc, channel)
    _units(result, disc, pixel_size_um)
    if not vessels.any():
        result.status = "failed"
        result.reasons.insert(0, "no vessels in the map")
    return result


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.stack([labels == code for code in range(4)]).astype(np.float32)


def _segments_of(graph: VesselGraph, code: Optional[int]) -> list:
    return [s for s in graph.segments if code is None or s.label == code]


def _whole_map_measures(result: Measurements, graph: VesselGraph, vessels: np.ndarray, labels, fov) -> None:
    from retinaseg.fov import fov_diameter

    values = result.values
    in_fov = max(int(fov.sum()), 1)
    # box sides relative to the FOV: the same physical scales at any resolution (docs/experiments.md)
    diameter = fov_diameter(fov)
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
    rows, cols = np.indices(vessels.shape)
    radius = np.hypot(rows - disc.row, cols - disc.col) / disc.diameter
    zone_c = (radius >= ZONE_C[0]) & (radius <= ZONE_C[1]) & fov
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
        mask = vessels if code is None else labels == code
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


# -- a folder of maps --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MeasureJob:
    """What `retinaseg measure` measures: (stem, photo path, map path, probability path or None) items."""
    items: list
    out_dir: str
    disc_dir: Optional[str] = None
    pixel_size_um: Optional[float] = None
    disc_diameter_um: Optional[float] = None
    overlay: bool = False
    name: str = "measurements"  # the tables' file name, without extension (a shard's: measurements-K-of-N)
    overwrite: bool = False  # measure again what was measured before with the same files and settings
    calibres_from: str = CALIBRES_FROM  # zone B's calibres measured on the photo (when there is one) or the map


# Each photo's row as measured, in OUT_DIR/measured/<stem>.json, so that a measure run that was stopped resumes:
# a photo whose map, probabilities, photo, disc mask or disc weights and settings are unchanged is not measured
# again. Raise the format whenever a measure's definition changes, so rows measured before are measured again.
MEASURED_FOLDER = "measured"
OVERLAY_FOLDER = "measure_overlay"  # with --overlay: <stem>.png, the disc, zones B and C and the CRAE/CRVE vessels
MEASURED_FORMAT = "retinaseg-measured/4"


def items_of_run(run_dir) -> list:
    """The photos earlier `retinaseg run`s wrote maps of, from their run records."""
    from retinaseg.errors import RetinasegError
    from retinaseg.inference.runner import run_records

    run_dir = Path(run_dir)
    done = {}
    for _, report in run_records(run_dir):  # run.json, and every shard's run-K-of-N.json
        done.update({r["stem"]: r for r in report["images"] if r.get("status") in ("ok", "skipped")})
    if not done:
        raise RetinasegError(f"{run_dir}: no run.json of a `retinaseg run` with photos done; give --maps and "
                             f"--photos for maps no run made")
    return items_of_records(run_dir, [done[stem] for stem in sorted(done)])


def measure_run(out_dir, records: list, name: str = "measurements", overlay: bool = False, notify=print,
                progress: bool = True, process=None, workers: int = 0, overwrite: bool = False) -> list:
    """measure_items over the photos of a run that have maps (its ImageRecords ok or skipped): `run --measure`
    (with its --overlay, measure_overlay/ too; with its --overwrite, every photo measured again)."""
    done = [{"stem": r.stem, "input": r.input} for r in records if r.status in ("ok", "skipped")]
    job = MeasureJob(items_of_records(out_dir, done), str(out_dir), overlay=overlay, name=name, overwrite=overwrite)
    return measure_items(job, notify, progress, process, workers)


def items_of_records(run_dir, records: list) -> list:
    """(stem, photo, map, probabilities or None) of run records' photos (dicts with stem and input)."""
    from retinaseg.inference.outputs import OUTPUT_FOLDERS

    items = []
    for record in records:
        stem = record["stem"]
        prob = Path(run_dir) / OUTPUT_FOLDERS["prob"] / f"{stem}.tif"
        items.append((stem, Path(record["input"]), Path(run_dir) / OUTPUT_FOLDERS["raw"] / f"{stem}.png",
                      prob if prob.is_file() else None))
    return items


def items_of_folders(maps_dir, photos_dir) -> list:
    """Label maps no model made (e.g. a data set's manual A/V labels), paired with photos by file stem; a map
    whose stem starts with a photo's (e.g. 01_test_AVmanual for 01_test) counts as that photo's."""
    from retinaseg.io.images import is_image_name

    photos = {p.stem: p for p in sorted(Path(photos_dir).iterdir()) if is_image_name(p.name)} if photos_dir else {}
    items = []
    for map_path in sorted(Path(maps_dir).iterdir()):
        if not is_image_name(map_path.name):
            continue
        stem = next((s for s in sorted(photos, key=len, reverse=True) if map_path.stem.startswith(s)), None)
        items.append((map_path.stem if stem is None else stem, photos.get(stem), map_path, None))
    return items


def read_map(path) -> np.ndarray:
    """A map as measure() takes it: bool for a binary vessel map (0/255 or 0/1), uint8 av codes for an A/V one
    (codes 0-3 or the red/blue/green colour map)."""
    from retinaseg.io.images import read_binary_mask, read_mask

    stored = read_mask(path)
    if stored.ndim == 3:
        return av.decode_colours(stored)
    if stored.max() <= 3 and stored.max() > 1:
        return stored.astype(np.uint8)
    return read_binary_mask(path)


def measure_items(job: MeasureJob, notify=print, progress: bool = True, process=None, workers: int = 0) -> list:
    """Measures each item into a row (dict); a bad item gives a failed row with its reason, never an exception.
    Writes measurements.csv and measurements.json (and measure_overlay/ with job.overlay) into job.out_dir.
    process(job, notify, progress), when given, measures the items elsewhere (the Ray executor) and returns
    measure_item's results in their order; by default they are measured here, in `workers` processes side by
    side when more than one (the graph and the measures run on one core each)."""
    _names_in.cache_clear()  # the disc masks as they are now, listed once for this folder
    before = {} if job.overwrite else _measured_before(job)
    if before:
        notify(f"{len(before)} of {len(job.items)} photo(s) measured before with the same files and settings: "
               f"their rows are reused (--overwrite measures them again)")
    todo = replace(job, items=[item for index, item in enumerate(job.items) if index not in before])
    if process is None:
        side_by_side = workers > 1 and len(todo.items) > 1 and _can_fork()
        process = partial(_measure_in_processes, workers=workers) if side_by_side else _measure_here
    measured = iter(process(todo, notify, progress) if todo.items else [])
    results = [before[index] if index in before else next(measured) for index in range(len(job.items))]
    check_discs([row for row, _ in results], notify)
    for row, detail in results:
        detail["disc_check"] = row["disc_check"]
    _write_tables(Path(job.out_dir), [row for row, _ in results], [detail for _, detail in results], job.name)
    return [row for row, _ in results]


def check_discs(rows: list, notify=print) -> None:
    """Sets each row's disc_check: empty, or a note to look at its overlay where the disc's diameter relative to the
    FOV's is more than DISC_SIZE_TOLERANCE off the median over this table's photos of the same size (one camera, one
    setting), at least MIN_DISC_PEERS of them with a disc, or where another region of the photo would pass as a disc
    (disc_rivals). Disc diameters vary by about 13% between people (Jonas et al. 1988: disc area 2.7 +- 0.7 mm2); a
    disc this far off is most likely a fragment of a pale disc or a bright region beyond it, which moves zone B and
    every measure made there. The row's measures stand."""
    groups: dict = {}
    for row in rows:
        rivals = row.get("disc_rivals")
        row["disc_check"] = (f"{rivals} other region(s) would pass as a disc"
                             if isinstance(rivals, (int, float)) and rivals == rivals and rivals > 0 else "")
        disc, fov = row.get("disc_diameter_px"), row.get("fov_diameter_px")
        if isinstance(disc, (int, float)) and isinstance(fov, (int, float)) and disc == disc and fov > 0:
            groups.setdefault(row.get("photo_size"), []).append((row, disc / fov))
    for size, members in groups.items():
        if len(members) < MIN_DISC_PEERS:
            continue
        median = float(np.median([ratio for _, ratio in members]))
        for row, ratio in members:
            if abs(ratio / median - 1) > DISC_SIZE_TOLERANCE:
                row["disc_check"] = "; ".join(filter(None, [
                    f"disc {ratio / median:.2f} times the median of the {len(members)} {size} photos with a disc",
                    row["disc_check"]]))
    for row in rows:
        if row["disc_check"]:
            row["disc_check"] += ": check its overlay"
            notify(f"check: {row['stem']}: {row['disc_check']}")


def measured_line(rows: list) -> str:
    """The rows' statuses counted, and the discs to check: the last line `retinaseg measure` prints."""
    counts = {status: sum(row["status"] == status for row in rows) for status in ("ok", "partial", "failed")}
    checks = sum(bool(row.get("disc_check")) for row in rows)
    return (f"{counts['ok']} ok, {counts['partial']} partial, {counts['failed']} failed"
            + (f", {checks} disc(s) to check (disc_check)" if checks else ""))


def _measure_here(job: MeasureJob, notify, progress: bool) -> list:
    from tqdm import tqdm

    disc = DiscFinder(job, notify)
    return [measure_item(job, item, disc, notify)
            for item in tqdm(job.items, desc="measuring", unit="img", disable=not progress)]


def _measured_before(job: MeasureJob) -> dict:
    """{item index: (row, detail)} of the photos measured before with the same files and settings (with --overlay,
    their overlays written too)."""
    import json

    found = {}
    for index, item in enumerate(job.items):
        path = _measured_path(job, item[0])
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        overlay = _overlay_path(job, item[0])
        if saved.get("key") == _key(job, item) and (overlay.is_file() or not job.overlay):
            found[index] = (saved["row"], saved["detail"])
    return found


def _measured_path(job: MeasureJob, stem: str) -> Path:
    return Path(job.out_dir) / MEASURED_FOLDER / f"{stem}.json"


def _overlay_path(job: MeasureJob, stem: str) -> Path:
    return Path(job.out_dir) / OVERLAY_FOLDER / f"{stem}.png"


def _key(job: MeasureJob, item: tuple) -> dict:
    """What a photo's row follows from: its files (path, size, modification time) and the settings."""
    def state(path) -> Optional[list]:
        try:
            stat = os.stat(path)
            return [str(path), stat.st_size, stat.st_mtime_ns]
        except (OSError, TypeError, ValueError):
            return None if path is None else [str(path)]

    from retinaseg import disc as disc_finding

    stem, photo_path, map_path, prob_path = item
    disc_mask = _disc_mask(job.disc_dir, stem) if job.disc_dir else None
    return {"format": MEASURED_FORMAT, "map": state(map_path), "probabilities": state(prob_path),
            "photo": state(photo_path), "disc_mask": state(disc_mask) if disc_mask else None,
            "disc_weights": None if job.disc_dir else _disc_weights(), "disc_grown_to": disc_finding.GROW_TO,
            "disc_among_rivals": None if job.disc_dir else disc_finding.AMONG_RIVALS,
            "jpeg_decoding": None if job.disc_dir else _jpeg_decoding(),
            "pixel_size_um": job.pixel_size_um, "disc_diameter_um": job.disc_diameter_um,
            "calibres_from": job.calibres_from}


def _jpeg_decoding() -> str:
    """How the disc model's photos are decoded (torch imported here: only where the disc model runs)."""
    from retinaseg.inference.segmenter import jpeg_decoding

    return jpeg_decoding()


def _disc_mask(disc_dir, stem: str) -> Optional[Path]:
    """The disc mask of a photo in --disc-dir: the first file, by name, named its stem and then anything but a letter
    or digit (eye1.png, eye1_disc.png; never eye10's mask for eye1)."""
    import bisect

    names = _names_in(str(disc_dir))
    at = bisect.bisect_left(names, stem)
    while at < len(names) and names[at].startswith(stem):
        rest = names[at][len(stem):]
        if not rest or not rest[0].isalnum():
            return Path(disc_dir) / names[at]
        at += 1
    return None


@lru_cache(maxsize=4)
def _names_in(folder: str) -> tuple:
    """The sorted file names in a folder, listed once per measure_items call (not once per photo: a study's folder
    of masks holds thousands)."""
    return tuple(sorted(entry.name for entry in os.scandir(folder) if entry.is_file()))


@lru_cache(maxsize=1)
def _disc_weights() -> Optional[str]:
    """The sha256 of the disc model's shipped weights, which find the disc when no masks are given."""
    from retinaseg.checkpoint import sha256
    from retinaseg.models import default_weights
    from retinaseg.registry import get_model

    path = default_weights(get_model("disc"))
    return sha256(path) if path is not None and path.is_file() else None


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _measure_in_processes(job: MeasureJob, notify, progress: bool, workers: int) -> list:
    """measure_item on each item in forked processes, the results in the items' order; each process's messages
    said here as its photos finish. A process that dies (the out-of-memory killer, a crash) fails the photos it and
    the pool had not finished, with that reason; the rest stand."""
    import gc
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    from retinaseg.errors import shown

    results: list = [None] * len(job.items)
    with ProcessPoolExecutor(min(workers, len(job.items)), mp_context=multiprocessing.get_context("fork"),
                             initializer=_start_measuring, initargs=(job,)) as pool:
        gc.freeze()  # the processes fork at the first submit; no finaliser of this process's objects runs there
        try:
            futures = {pool.submit(_measure_in_process, index): index for index in range(len(job.items))}
        finally:
            gc.unfreeze()
        for future in tqdm(as_completed(futures), total=len(futures), desc="measuring", unit="img",
                           disable=not progress):
            index = futures[future]
            try:
                row, detail, messages = future.result()
            except BrokenProcessPool:
                reason = (f"{shown(job.items[index][2])}: a measuring process died (out of memory, or a crash) before "
                          f"this map was measured")
                row, detail, messages = *_failed(job.items[index], reason), [f"failed: {reason}"]
            for message in messages:
                notify(message)
            results[index] = (row, detail)
    return results


_process_job: Optional[MeasureJob] = None  # in a measuring process: its job, disc model and messages
_process_disc = None
_process_messages: list = []


def _start_measuring(job: MeasureJob) -> None:
    global _process_job, _process_disc
    import sys

    if "torch" in sys.modules:  # OpenMP's thread team does not survive fork: a second thread would hang
        sys.modules["torch"].set_num_threads(1)
    _process_job, _process_disc = job, DiscFinder(job, _process_messages.append)


def _measure_in_process(index: int) -> tuple:
    row, detail = measure_item(_process_job, _process_job.items[index], _process_disc, _process_messages.append)
    messages = list(_process_messages)
    _process_messages.clear()
    return row, detail, messages


class DiscFinder:
    """The disc model, loaded at the first photo that needs it (none do with job.disc_dir)."""

    def __init__(self, job: MeasureJob, notify):
        self.needed, self.notify, self._segmenter = not job.disc_dir, notify, None

    @property
    def segmenter(self):
        if self.needed and self._segmenter is None:
            from retinaseg.inference.segmenter import Segmenter
            from retinaseg.models import load_model

            self._segmenter = Segmenter(load_model("disc"), notify=self.notify)
        return self._segmenter


def measure_item(job: MeasureJob, item: tuple, disc: DiscFinder, notify) -> tuple[dict, dict]:
    """(the table row, the JSON detail) of one (stem, photo, map, probabilities) item; writes its overlay and keeps
    the row in measured/ for a later run to reuse."""
    from retinaseg.errors import RetinasegError, shown
    from retinaseg.io.atomic import write_json, write_png

    stem, photo_path, map_path, prob_path = item
    try:
        result, overlay_image = _measure_one(job, stem, photo_path, map_path, prob_path, disc.segmenter)
    except Exception as exc:  # one bad map must not stop the folder
        reason = str(exc) if isinstance(exc, RetinasegError) \
            else f"{shown(map_path)}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        notify(f"failed: {reason}")
        return _failed(item, reason)
    row = _row_of(item)
    row.update(status=result.status, reason="; ".join(result.reasons), **result.values)
    if result.status != "ok":
        notify(f"{result.status}: {shown(stem)}: {row['reason']}")
    if overlay_image is not None:
        write_png(_overlay_path(job, stem), overlay_image)
    detail = {**row, "zone_b": result.zone_b}
    write_json(_measured_path(job, stem), {"key": _key(job, item), "row": row, "detail": detail}, indent=None)
    return row, detail


def _row_of(item: tuple) -> dict:
    stem, photo_path, map_path, _ = item
    return {"stem": stem, "input": str(photo_path) if photo_path else "", "map": str(map_path)}


def _failed(item: tuple, reason: str) -> tuple[dict, dict]:
    row = {**_row_of(item), "status": "failed", "reason": reason}
    return row, {**row, "zone_b": []}


def _measure_one(job: MeasureJob, stem: str, photo_path, map_path, prob_path, disc_segmenter):
    import tifffile

    from retinaseg.disc import find_disc
    from retinaseg.errors import RetinasegError, shown
    from retinaseg.fov import estimate_fov
    from retinaseg.io.images import read_binary_mask, read_photo

    labels = read_map(map_path)
    photo = read_photo(photo_path) if photo_path is not None and Path(photo_path).exists() else None
    if photo is not None and photo.shape[:2] != labels.shape:
        raise RetinasegError(f"{shown(map_path)}: the map is {labels.shape[1]}x{labels.shape[0]} but its photo "
                             f"{shown(photo_path)} is {photo.shape[1]}x{photo.shape[0]}")
    probability = None
    if prob_path is not None:
        probability = np.asarray(tifffile.imread(prob_path), np.float32)
        probability = probability[None] if probability.ndim == 2 else probability
    fov = estimate_fov(photo) if photo is not None else np.ones(labels.shape, bool)
    if job.disc_dir:
        disc_mask = _disc_mask(job.disc_dir, stem)
        if disc_mask is None:
            raise RetinasegError(f"{shown(job.disc_dir)}: no disc mask for {shown(stem)}")
        disc = find_disc(read_binary_mask(disc_mask).astype(np.float32))
    elif photo is not None:
        # found in the disc model's map before the others are dropped: its rivals counted and, where there are
        # some, the one the map's vessels converge on kept (not always the largest, which `run -m disc` keeps)
        disc = find_disc(disc_segmenter.predict_file(photo_path, finished=False, whole=photo)[0], labels > 0, fov)
    else:
        raise RetinasegError(f"{shown(map_path)}: no photo to find the optic disc in (give --photos or --disc-dir)")
    pixel_size = job.pixel_size_um
    if pixel_size is None and job.disc_diameter_um and disc.found:
        pixel_size = job.disc_diameter_um / disc.diameter
    result = measure(labels, disc, fov, probability, pixel_size, photo, job.calibres_from)
    return result, (_overlay(photo, labels, disc, result) if job.overlay else None)


def _overlay(photo, labels, disc: Disc, result: Measurements) -> np.ndarray:
    """The photo (or the map) with the disc, the zone B and zone C rings, and the zone-B vessels that CRAE and
    CRVE were computed from drawn over it."""
    base = (photo * 255).astype(np.uint8) if photo is not None else av.encode_colours(labels.astype(np.uint8))
    image = base.copy()
    if not disc.found:
        return image
    rows, cols = np.indices(labels.shape)
    radius = np.hypot(rows - disc.row, cols - disc.col) / disc.diameter
    line = 1.5 / disc.diameter
    for ring, colour in ((0.5, (255, 255, 255)), (ZONE_B[0], (255, 255, 0)), (ZONE_B[1], (255, 255, 0)),
                         (ZONE_C[1], (0, 255, 255))):
        image[np.abs(radius - ring) < line] = colour
    colours = {av.ARTERY: (255, 40, 40), av.VEIN: (40, 80, 255)}
    for path, code, calibre in result.used:  # each drawn as wide as it was measured
        half = max(calibre / 2, 0.5)
        reach = int(np.ceil(half))
        for row, col in path:
            top, left = max(row - reach, 0), max(col - reach, 0)
            patch = (np.hypot(rows[top:row + reach + 1, left:col + reach + 1] - row,
                              cols[top:row + reach + 1, left:col + reach + 1] - col) <= half)
            image[top:row + reach + 1, left:col + reach + 1][patch] = colours[code]
    return image


def _write_tables(out_dir, rows: list, details: list, name: str) -> None:
    import csv
    import io

    from retinaseg.io.atomic import atomic_path, write_json

    fields = ["stem", "input", "map", "status", "reason"]
    for row in rows:
        fields += [key for key in row if key not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    for row in rows:  # a measure that could not be made is an empty cell, its reason in the reason column
        writer.writerow({k: ("" if v != v else f"{v:.6g}") if isinstance(v, float) else v for k, v in row.items()})
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in details]
    write_json(out_dir / f"{name}.json", {"format": "retinaseg-measurements/1", "photos": clean})
