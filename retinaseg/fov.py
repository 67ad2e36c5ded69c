"""The field of view (FOV): the bright disc of retina inside the camera's black surround.

Estimated from the photo when no mask is supplied. The estimate works on a ~256-pixel thumbnail with
thresholds relative to the photo's own brightness (so dark photos work), treats a photo with no dark
surround as all-FOV (crops, wide-field photos), and fills each row and column between the outermost FOV
pixels (so dark vessels, the fovea or lesions inside never punch holes).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

THUMBNAIL_SIDE = 256
# A pixel is "surround" when darker than this fraction of the bright retina level.
DARK_FRACTION = 0.15
# Below this share of surround pixels, the photo has no surround: the FOV fills the frame. Low, since a disc cut
# on all four sides (an HRF-size photo cropped at the sides) leaves only ~1% of the frame dark, in its corners.
MIN_SURROUND_SHARE = 0.003
# Fewer edge pixels than this (in all) fit no circle.
MIN_EDGE_POINTS = 20


def _thumbnail(photo: np.ndarray) -> torch.Tensor:
    height, width = photo.shape[:2]
    scale = THUMBNAIL_SIDE / max(height, width)
    size = (max(8, round(height * scale)), max(8, round(width * scale)))
    step = max(1, max(height, width) // (4 * THUMBNAIL_SIDE))  # subsample first: a threshold needs no more
    tensor = torch.from_numpy(np.ascontiguousarray(photo[::step, ::step])).permute(2, 0, 1)[None].float()
    return F.interpolate(tensor, size=size, mode="area")[0].amax(dim=0)


def _fill_between_extremes(mask: torch.Tensor) -> torch.Tensor:
    """True between the first and last True of each row, and of each column; the two are intersected."""

    def fill_rows(m: torch.Tensor) -> torch.Tensor:
        index = torch.arange(m.shape[1]).expand_as(m)
        big = m.shape[1] + 1
        first = torch.where(m, index, big).amin(dim=1, keepdim=True)
        last = torch.where(m, index, -1).amax(dim=1, keepdim=True)
        return (index >= first) & (index <= last)

    return fill_rows(mask) & fill_rows(mask.T).T


def _open(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Morphological opening: removes specks and text smaller than the radius."""
    if radius < 1:
        return mask
    m = mask[None, None].float()
    return _square_max(-_square_max(-m, radius), radius)[0, 0] > 0.5


def _square_max(m: torch.Tensor, radius: int) -> torch.Tensor:
    """The maximum over a (2r+1)-square around each pixel, as a row pass then a column pass (the same result,
    2(2r+1) comparisons a pixel instead of (2r+1)^2)."""
    kernel = 2 * radius + 1
    rows = F.max_pool2d(m, (1, kernel), stride=1, padding=(0, radius))
    return F.max_pool2d(rows, (kernel, 1), stride=1, padding=(radius, 0))


def estimate_fov(photo: np.ndarray, size: Optional[tuple] = None) -> np.ndarray:
    """bool HxW FOV mask for a float HxWx3 photo in [0, 1], at the size (height, width) of the photo, or at `size`
    for a photo decoded at a reduced size."""
    height, width = size or photo.shape[:2]
    thumb = _thumbnail(photo)
    bright = torch.quantile(thumb.flatten(), 0.90)
    if bright <= 0:
        return np.ones((height, width), dtype=bool)
    dark = thumb < DARK_FRACTION * bright
    if dark.float().mean() < MIN_SURROUND_SHARE:
        return np.ones((height, width), dtype=bool)
    surround = torch.quantile(thumb[dark], 0.5) if dark.any() else thumb.new_tensor(0.0)
    # halfway in log-contrast terms would be fragile on noise; a fixed fraction of the range is robust
    threshold = surround + 0.25 * (bright - surround)
    mask = _open(thumb > threshold, radius=max(1, round(0.01 * max(thumb.shape))))
    if not mask.any():
        return np.ones((height, width), dtype=bool)
    mask = _fill_between_extremes(mask)
    full = F.interpolate(mask[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)
    return (full[0, 0] > 0.5).numpy()


def fov_diameter(mask: np.ndarray) -> int:
    """Pixels across the FOV. The larger side of its bounding box, so a disc cut off at the top and bottom (as on
    many cameras) still measures its true diameter; when the frame cuts the disc on both axes (only the corners
    dark), the box is too small on both sides, and the circle through the disc's visible edge measures it."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return max(mask.shape)
    box = int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
    cut_vertically = rows[0] == 0 or rows[-1] == mask.shape[0] - 1
    cut_horizontally = cols[0] == 0 or cols[-1] == mask.shape[1] - 1
    if cut_vertically and cut_horizontally:
        circle = _edge_circle_diameter(mask)
        if circle is not None:
            return max(box, round(circle))
    return box


def measured_diameter(fov: np.ndarray, raw_fov_diameter: Optional[int] = None) -> int:
    """The FOV's diameter in raw pixels: raw_fov_diameter, when given, if the FOV fills the whole frame (a crop
    inside the retina shows no edge to measure it by)."""
    return raw_fov_diameter if raw_fov_diameter and fov.all() else fov_diameter(fov)


def _edge_circle_diameter(mask: np.ndarray) -> Optional[float]:
    """Diameter of the least-squares circle (Kasa's fit) through the FOV's edge pixels that are not on the
    frame's border; None when too little edge is visible to fit one."""
    points = []  # (row, column) of each edge pixel: the first and last FOV pixel of each row, then of each column
    for m, transposed in ((mask, False), (mask.T, True)):
        lines = np.flatnonzero(m.any(axis=1))
        first = m[lines].argmax(axis=1)
        last = m.shape[1] - 1 - m[lines, ::-1].argmax(axis=1)
        for ends in (first, last):
            inner = (ends > 0) & (ends < m.shape[1] - 1)  # an end on the frame's border is the frame, not the edge
            pair = (ends[inner], lines[inner]) if transposed else (lines[inner], ends[inner])
            points.append(np.stack(pair, axis=1))
    points = np.concatenate(points).astype(np.float64)
    if len(points) < MIN_EDGE_POINTS:
        return None
    centre = points.mean(axis=0)
    y, x = (points - centre).T
    # x^2 + y^2 = a x + b y + c: linear in (a, b, c); centre (a/2, b/2), r^2 = c + (a^2 + b^2) / 4
    (a, b, c), *_ = np.linalg.lstsq(np.stack([x, y, np.ones_like(x)], axis=1), x**2 + y**2, rcond=None)
    radius_squared = c + (a * a + b * b) / 4
    if not np.isfinite(radius_squared) or radius_squared <= 0:
        return None
    return 2 * float(np.sqrt(radius_squared))
