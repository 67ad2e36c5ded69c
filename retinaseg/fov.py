"""The field of view (FOV): the bright disc of retina inside the camera's black surround.

Estimated from the photo when no mask is supplied. The estimate works on a ~256-pixel thumbnail with
thresholds relative to the photo's own brightness (so dark photos work), treats a photo with no dark
surround as all-FOV (crops, wide-field photos), and fills each row and column between the outermost FOV
pixels (so dark vessels, the fovea or lesions inside never punch holes).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

THUMBNAIL_SIDE = 256
# A pixel is "surround" when darker than this fraction of the bright retina level.
DARK_FRACTION = 0.15
# Below this share of surround pixels, the photo has no surround: the FOV fills the frame.
MIN_SURROUND_SHARE = 0.01


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
    kernel = 2 * radius + 1
    m = mask[None, None].float()
    eroded = -F.max_pool2d(-m, kernel, stride=1, padding=radius)
    return F.max_pool2d(eroded, kernel, stride=1, padding=radius)[0, 0] > 0.5


def estimate_fov(photo: np.ndarray) -> np.ndarray:
    """bool HxW FOV mask for a float HxWx3 photo in [0, 1]."""
    height, width = photo.shape[:2]
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
    """Pixels across the FOV: the larger side of its bounding box, so a disc cut off at the top and bottom
    (as on many cameras) still measures its true diameter."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return max(mask.shape)
    return int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
