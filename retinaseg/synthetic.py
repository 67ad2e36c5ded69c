"""Synthetic fundus photographs with exact ground truth, for tests and the demo.

A retina-coloured disc with illumination fall-off and a dark surround, a bright optic disc, and two branching
vessel trees (arteries: lighter and narrower; veins: darker and wider) growing from the disc with curving,
tapering branches. Returns the photo, the FOV, the vessel mask and the A/V codes (crossings are uncertain).
draw_vessels makes maps of hand-placed vessels of known widths, types and crossings, for the vessel graph's tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from retinaseg import av


@dataclass
class SyntheticFundus:
    image: np.ndarray  # float32 HxWx3 in [0, 1]
    fov: np.ndarray  # bool HxW
    vessels: np.ndarray  # bool HxW
    av_labels: np.ndarray  # uint8 HxW codes 0..3
    disc_centre: tuple = (0.0, 0.0)  # (row, column) of the optic disc's brightest point
    disc_radius: float = 0.0  # its Gaussian's sigma, pixels

    def image_uint8(self) -> np.ndarray:
        return np.clip(self.image * 255 + 0.5, 0, 255).astype(np.uint8)


def _draw_segment(coverage: np.ndarray, p0, p1, width: float) -> None:
    """Max-accumulate anti-aliased coverage of a thick line segment."""
    height, width_px = coverage.shape
    pad = width / 2 + 2
    y0, y1 = int(max(0, min(p0[0], p1[0]) - pad)), int(min(height, max(p0[0], p1[0]) + pad + 1))
    x0, x1 = int(max(0, min(p0[1], p1[1]) - pad)), int(min(width_px, max(p0[1], p1[1]) + pad + 1))
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = np.array(p1, dtype=np.float32) - np.array(p0, dtype=np.float32)
    length2 = float(d @ d) or 1e-6
    t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / length2, 0, 1)
    dist = np.hypot(yy - (p0[0] + t * d[0]), xx - (p0[1] + t * d[1]))
    cover = np.clip(width / 2 - dist + 0.5, 0, 1)
    np.maximum(coverage[y0:y1, x0:x1], cover, out=coverage[y0:y1, x0:x1])


def _grow_tree(coverage, rng, start, angle, width, centre, radius, min_width, depth=0):
    """A tapering, gently curving branch that forks into two thinner ones until too thin or off the disc."""
    point = np.array(start, dtype=np.float64)
    length = radius * rng.uniform(0.25, 0.45) * (0.85 ** depth)
    steps = max(4, int(length / 4))
    for _ in range(steps):
        angle += rng.normal(0, 0.12)
        nxt = point + (length / steps) * np.array([math.sin(angle), math.cos(angle)])
        if np.hypot(*(nxt - centre)) > radius * 0.97:
            return
        _draw_segment(coverage, point, nxt, width)
        point = nxt
    if width * 0.72 < min_width or depth > 7:
        return
    spread = rng.uniform(0.35, 0.7)
    for sign, shrink in ((1, rng.uniform(0.7, 0.85)), (-1, rng.uniform(0.6, 0.8))):
        _grow_tree(coverage, rng, point, angle + sign * spread, width * shrink, centre, radius, min_width, depth + 1)


def synthetic_fundus(size=256, seed: int = 0, fov_fraction: float = 0.92, brightness: float = 1.0,
                     noise: float = 0.01) -> SyntheticFundus:
    """A synthetic photo of `size` (int or (height, width)) pixels; the same seed gives the same image."""
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    radius = fov_fraction * min(height, width) / 2
    r = np.hypot(yy - centre[0], xx - centre[1]) / radius
    fov = r <= 1.0

    side = rng.choice([-1, 1])
    disc = centre + np.array([rng.uniform(-0.1, 0.1) * radius, side * 0.35 * radius])
    disc_radius = 0.13 * radius
    arteries = np.zeros((height, width), np.float32)
    veins = np.zeros((height, width), np.float32)
    base_width = max(2.0, 0.03 * radius)
    min_width = 1.0
    for tree, scale in ((arteries, 0.8), (veins, 1.0)):
        for k, direction in enumerate((-1, 1)):  # upper and lower arcades, heading away from the disc side
            angle = math.atan2(direction, -side) + rng.normal(0, 0.15) + (0.2 if tree is veins else -0.2) * direction
            _grow_tree(tree, rng, disc, angle, base_width * scale, centre, radius, min_width)
        for _ in range(2):  # shorter nasal branches
            angle = math.atan2(rng.uniform(-1, 1), side)
            _grow_tree(tree, rng, disc, angle, base_width * scale * 0.6, centre, radius, min_width, depth=2)

    illumination = np.clip(1.0 - 0.45 * r**2, 0.3, 1.0)
    retina = np.array([0.78, 0.38, 0.16], dtype=np.float32)
    image = retina[None, None, :] * illumination[..., None]
    # low-frequency texture so the background is not flat
    coarse = torch.from_numpy(rng.normal(0, 1, (1, 1, max(2, height // 16), max(2, width // 16))).astype(np.float32))
    texture = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0, 0].numpy()
    image *= (1 + 0.04 * texture)[..., None]
    od = np.exp(-((yy - disc[0]) ** 2 + (xx - disc[1]) ** 2) / (2 * disc_radius**2))
    image += od[..., None] * np.array([0.25, 0.35, 0.2], dtype=np.float32)
    # as in real photos, vessels show mostly in green, weakly in red; veins are darker than arteries
    image *= 1 - arteries[..., None] * np.array([0.08, 0.30, 0.20], dtype=np.float32)
    image *= 1 - veins[..., None] * np.array([0.15, 0.42, 0.30], dtype=np.float32)
    image = image * brightness + rng.normal(0, noise, image.shape).astype(np.float32)
    image[~fov] = 0.02 * brightness
    image = np.clip(image, 0, 1).astype(np.float32)

    is_artery, is_vein = (arteries >= 0.5) & fov, (veins >= 0.5) & fov
    labels = np.zeros((height, width), np.uint8)
    labels[is_artery] = av.ARTERY
    labels[is_vein] = av.VEIN
    labels[is_artery & is_vein] = av.UNCERTAIN
    return SyntheticFundus(image, fov, labels > 0, labels, (float(disc[0]), float(disc[1])), float(disc_radius))


@dataclass
class DrawnVessel:
    """A polyline vessel of constant width for hand-made test maps: points are (row, column)."""
    points: list
    width: float
    label: int = av.ARTERY


def draw_vessels(shape: tuple, vessels: list) -> tuple[np.ndarray, np.ndarray]:
    """A/V codes (HxW uint8) and vessel coverage (HxW float32, anti-aliased) of hand-drawn vessels with known
    widths and types; where an artery and a vein overlap the code is UNCERTAIN, as annotators mark crossings."""
    labels = np.zeros(shape, np.uint8)
    coverage = np.zeros(shape, np.float32)
    for vessel in vessels:
        one = np.zeros(shape, np.float32)
        for p0, p1 in zip(vessel.points[:-1], vessel.points[1:]):
            _draw_segment(one, p0, p1, vessel.width)
        inside = one >= 0.5
        labels[inside & (labels > 0) & (labels != vessel.label)] = av.UNCERTAIN
        labels[inside & (labels == 0)] = vessel.label
        np.maximum(coverage, one, out=coverage)
    return labels, coverage


def write_samples(folder) -> list:
    """The demo's sample photos: DRIVE-sized, a larger dark one, and one whose FOV is cut at top and bottom."""
    from pathlib import Path

    import imageio.v3 as iio

    from retinaseg.io.atomic import atomic_path

    folder = Path(folder)
    specs = [("synthetic_drive_size", (584, 565), 1, {}),
             ("synthetic_dark", (900, 1000), 2, {"brightness": 0.45}),
             ("synthetic_cut_fov", (700, 1050), 3, {"fov_fraction": 1.3})]
    written = []
    for name, size, seed, options in specs:
        sample = synthetic_fundus(size, seed=seed, **options)
        path = folder / f"{name}.jpg"  # JPEG, as fundus cameras save
        with atomic_path(path) as tmp:
            iio.imwrite(tmp, sample.image_uint8(), extension=".jpg", quality=92)
        written.append(path)
    return written


if __name__ == "__main__":
    import sys

    for path in write_samples(sys.argv[1] if len(sys.argv) > 1 else "examples/images"):
        print(path)
