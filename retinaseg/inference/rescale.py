"""A photo to the model's working scale, and its prediction back.

The network sees only the FOV's bounding box, resized so the FOV has the model's working diameter and
standardised inside the FOV. Its probabilities (one set per test-time view, merged at the output's size) go back
into the whole frame at the working scale (small_pre) or the raw size (raw_pre), background outside the FOV.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from retinaseg import av
from retinaseg.errors import RetinasegError
from retinaseg.fov import estimate_fov, measured_diameter
from retinaseg.io.images import reduction_of
from retinaseg.preprocess import photo_tensor, resize, resize_mask, standardize, working_size


@dataclass
class Prepared:
    """A photo ready for the network, and what is needed to bring its prediction back.

    The network sees only the FOV's bounding box (everything outside is background by definition);
    raw_box and work_box place that crop in the raw photo and in the full working-size frame."""

    index: int
    raw_size: tuple  # (height, width)
    work_size: tuple  # the whole photo at working scale
    raw_box: tuple  # (top, bottom, left, right) of the crop in raw pixels
    work_box: tuple  # the same in working pixels
    diameter: int  # FOV diameter in raw pixels
    fov_raw: np.ndarray
    fov_work: torch.Tensor  # inside the crop, working scale
    image: torch.Tensor  # 3 x crop at working scale, standardised
    photo: Optional[np.ndarray] = None  # kept for the vessel model until it has run, and decoded whole for an overlay
    seconds: float = 0.0
    source: Optional[str] = None  # the photo's file, when read from one (an overlay is drawn on it decoded whole)
    frame_is_fov: bool = False  # no FOV edge was found: the frame was taken as the FOV
    vessel: Optional[np.ndarray] = None  # raw-size probability (1xHxW) of the binary vessel model beside this one,
    # if any: it gates an A/V map's vessels, and chooses a disc model's disc among rivals
    # (image, FOV) of the crop as each test-time view sees it (the image scaled and flipped, the FOV at the view's
    # scale); without --tta one plain view, the image itself
    view_inputs: Optional[list] = None

    def spend_inputs(self) -> None:
        """The network has the photo's inputs: of them only each view's FOV stays, which views_undone applies when
        the photo is written."""
        self.image = None
        self.view_inputs = [(None, fov) for _, fov in self.view_inputs]


def _fov_box(fov: np.ndarray, margin: int) -> tuple:
    rows, cols = np.flatnonzero(fov.any(axis=1)), np.flatnonzero(fov.any(axis=0))
    if rows.size == 0:
        return 0, fov.shape[0], 0, fov.shape[1]
    return (max(0, rows[0] - margin), min(fov.shape[0], rows[-1] + 1 + margin),
            max(0, cols[0] - margin), min(fov.shape[1], cols[-1] + 1 + margin))


def _aligned(box: tuple, reduction: int, size: tuple) -> tuple:
    """The box widened to whole pixels of a photo decoded at 1/reduction, so its crop is exactly that region."""
    top, bottom, left, right = box
    return (top // reduction * reduction, min(size[0], -(-bottom // reduction) * reduction),
            left // reduction * reduction, min(size[1], -(-right // reduction) * reduction))


def to_working_scale(photo: np.ndarray, fov: Optional[np.ndarray], fov_diameter_px: int,
            fixed_size: Optional[tuple] = None, index: int = 0, keep_photo: bool = False,
            max_downscale: Optional[float] = None, raw_fov_diameter: Optional[int] = None,
            raw_size: Optional[tuple] = None) -> Prepared:
    """Bring a float HxWx3 photo to the model's working scale (shrunk by at most max_downscale) and
    normalisation. raw_fov_diameter, when given, is the FOV's diameter if the FOV fills the whole frame. raw_size
    is the photo's (height, width) when it was decoded at a reduced size (io.images.read_photo); the FOV and
    every output stay at raw_size."""
    height, width = raw_size = tuple(raw_size or photo.shape[:2])
    reduction = reduction_of(photo.shape, raw_size)
    if fov is None:
        fov = estimate_fov(photo, raw_size)
    elif fov.shape != raw_size:
        raise RetinasegError(f"FOV mask is {fov.shape[1]}x{fov.shape[0]} but the photo is {width}x{height}")
    diameter = measured_diameter(fov, raw_fov_diameter)
    if fixed_size:  # the seeds' fixed-size behaviour: the whole photo, stretched to WxH
        work_size = (fixed_size[1], fixed_size[0])
        raw_box, work_box = (0, height, 0, width), (0, work_size[0], 0, work_size[1])
    else:
        work_size = working_size((height, width), diameter, fov_diameter_px, max_downscale)
        raw_box = _aligned(_fov_box(fov, margin=max(2, diameter // 200)), reduction, raw_size)
        sy, sx = work_size[0] / height, work_size[1] / width
        top, left = round(raw_box[0] * sy), round(raw_box[2] * sx)
        work_box = (top, max(top + 1, round(raw_box[1] * sy)), left, max(left + 1, round(raw_box[3] * sx)))
    top, bottom, left, right = raw_box
    crop_size = (work_box[1] - work_box[0], work_box[3] - work_box[2])
    fov_work = resize_mask(fov[top:bottom, left:right], crop_size)
    crop = photo[top // reduction:-(-bottom // reduction), left // reduction:-(-right // reduction)]
    image = standardize(resize(photo_tensor(crop), crop_size), fov_work)
    return Prepared(index, raw_size, work_size, raw_box, work_box, diameter, fov, fov_work, image,
                    photo if keep_photo else None)


def _canvas(classes: int, size: tuple) -> torch.Tensor:
    """An all-background prediction."""
    canvas = torch.zeros((classes,) + tuple(size))
    if classes > 1:
        canvas[av.BACKGROUND] = 1.0
    return canvas


def merge_views(probs: list, size: tuple) -> torch.Tensor:
    """Mean of the crop's probabilities as the test-time views saw it (one KxH'xW' tensor per view, flips undone),
    resized to `size`. Views at other scales are merged at the output's size, not the working scale: resampling a
    larger view onto a coarser grid first blurred thin vessels (on HRF-size photos F1 fell below the plain view's).
    Views of one size (flips) are summed before their one resize: resizing is linear, so the mean is the same, for
    a quarter of the resizing and memory of four flips."""
    if len(probs) == 1:
        return resize(probs[0], size)
    sums: dict = {}  # fresh tensors, so everything after adds and divides in place (raw-size maps are large)
    for prob in probs:
        shape = tuple(prob.shape)
        if shape in sums:
            sums[shape] += prob
        else:
            sums[shape] = prob.clone()
    merged = None
    for total in sums.values():
        resized = resize(total, size)
        merged = resized if merged is None else merged.add_(resized)
    return merged.div_(len(probs))


def gate_with_fov(prob: torch.Tensor, fov: torch.Tensor) -> torch.Tensor:
    """Outside the FOV is background."""
    prob = prob * fov.to(prob.dtype)
    if prob.shape[0] > 1:
        prob[av.BACKGROUND][~fov] = 1.0
    return prob


def to_work_size(probs: list, prepared: Prepared) -> torch.Tensor:
    """Crop probabilities of each view -> the whole photo at working scale (gated by the vessel model's, if
    any)."""
    top, bottom, left, right = prepared.work_box
    prob = merge_views(probs, (bottom - top, right - left))
    canvas = _canvas(prob.shape[0], prepared.work_size)
    canvas[:, top:bottom, left:right] = prob
    if prepared.vessel is not None and canvas.shape[0] > 1:
        vessel = resize(torch.from_numpy(prepared.vessel), prepared.work_size).clamp_(0, 1).numpy()
        canvas = torch.from_numpy(av.gate_with_vessels(canvas.numpy(), vessel))
    return canvas


def to_raw_size(probs: list, prepared: Prepared) -> np.ndarray:
    """Crop probabilities of each view -> raw size, with everything outside the raw FOV set to background."""
    top, bottom, left, right = prepared.raw_box
    prob = merge_views(probs, (bottom - top, right - left)).clamp_(0, 1)
    canvas = _canvas(prob.shape[0], prepared.raw_size).numpy()
    # outside the crop the canvas is background already; inside it, the FOV gates by a product (a boolean index of
    # a raw-size map cost three times as much)
    inside = prepared.fov_raw[top:bottom, left:right]
    np.multiply(prob.numpy(), inside, out=canvas[:, top:bottom, left:right])
    if canvas.shape[0] > 1:
        canvas[av.BACKGROUND, top:bottom, left:right] += ~inside
        if prepared.vessel is not None:
            canvas = av.gate_with_vessels(canvas, prepared.vessel)
    return canvas


def vessels_of(prepared: Prepared, size: tuple) -> tuple:
    """The vessel model's map (at 0.5) and the FOV of the photo at a size (raw or working): what a disc model's
    disc is chosen by among rivals. (None, None) without a vessel model."""
    from retinaseg.inference import VESSEL_THRESHOLD

    if prepared.vessel is None:
        return None, None
    if tuple(size) == tuple(prepared.raw_size):
        return prepared.vessel[0] >= VESSEL_THRESHOLD, prepared.fov_raw
    vessel = resize(torch.from_numpy(prepared.vessel), tuple(size))[0].numpy()
    return vessel >= VESSEL_THRESHOLD, resize_mask(prepared.fov_raw, tuple(size)).numpy()
