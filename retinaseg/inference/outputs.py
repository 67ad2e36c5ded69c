"""What `retinaseg run` writes of a prediction: the output folders, thresholded labels, PNG forms, overlays."""
from __future__ import annotations

import numpy as np

from retinaseg import av
from retinaseg.inference import VESSEL_THRESHOLD

OUTPUT_FOLDERS = {"raw": "raw_pre", "small": "small_pre", "prob": "prob", "overlay": "overlay", "graph": "graph"}
VESSEL_OVERLAY_COLOUR = np.array([255, 255, 0], dtype=np.float32)  # yellow shows on red-orange fundus
OVERLAY_ALPHA = 0.6


def labels_of(prob: np.ndarray) -> np.ndarray:
    """Thresholded vessel mask (bool) or A/V codes (av.class_map)."""
    return prob[0] >= VESSEL_THRESHOLD if prob.shape[0] == 1 else av.class_map(prob)


def render(labels: np.ndarray) -> np.ndarray:
    """The PNG form of a prediction: 0/255 mask, or the A/V colour map."""
    return (labels.view(np.uint8) * np.uint8(255)) if labels.dtype == bool else av.encode_colours(labels)


def overlay(photo: np.ndarray, labels: np.ndarray) -> np.ndarray:
    base = photo.astype(np.float32) * 255
    if labels.dtype == bool:
        colour, where = VESSEL_OVERLAY_COLOUR, labels
        base[where] = (1 - OVERLAY_ALPHA) * base[where] + OVERLAY_ALPHA * colour
    else:
        where = labels > 0
        base[where] = (1 - OVERLAY_ALPHA) * base[where] + OVERLAY_ALPHA * av.COLOURS[labels[where]]
    return np.clip(base + 0.5, 0, 255).astype(np.uint8)
