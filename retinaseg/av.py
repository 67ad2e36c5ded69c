"""Artery/vein label codes and their colour maps.

Codes (DRIVE_AV, LES-AV, HRF-AV as distributed): 0 background, 1 artery, 2 vein, 3 uncertain/crossing.
Colours (the seed's raw_pre output): artery red, vein blue, uncertain green, background black.
"""
from typing import Optional

import numpy as np

BACKGROUND, ARTERY, VEIN, UNCERTAIN = 0, 1, 2, 3
CLASS_NAMES = ("background", "artery", "vein", "uncertain")
COLOURS = np.array([(0, 0, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)], dtype=np.uint8)


VESSEL_FIRST = True  # vessel or background first, then the type: decided on held-out images (docs/experiments.md)


def class_map(prob: np.ndarray, vessel_first: Optional[bool] = None) -> np.ndarray:
    """HxW uint8 class codes of CxHxW probabilities: the arg-max over classes (the first of ties, as argmax); or,
    vessel first (default VESSEL_FIRST), vessel where the background's probability is at most 0.5 and then the
    most probable vessel class. A loop over the few class planes: numpy's argmax across the first axis of an
    HRF-size map takes ten times as long."""
    vessel_first = VESSEL_FIRST if vessel_first is None else vessel_first
    first = 1 if vessel_first else 0
    best = prob[first].copy()
    codes = np.full(prob.shape[1:], first, dtype=np.uint8)
    for code in range(first + 1, len(prob)):
        higher = prob[code] > best
        codes[higher] = code
        np.maximum(best, prob[code], out=best)
    if vessel_first:
        codes[prob[BACKGROUND] > 0.5] = BACKGROUND
    return codes


def encode_colours(labels: np.ndarray) -> np.ndarray:
    """HxW codes 0..3 -> HxWx3 uint8 colour map."""
    return COLOURS[np.clip(labels, 0, 3).astype(np.intp)]


def decode_colours(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 colour map -> HxW codes. Red alone is artery, blue alone vein; green, and mixtures such as the
    purple or white some annotators use for crossings, are uncertain."""
    red, green, blue = (rgb[..., i] > 127 for i in range(3))
    labels = np.zeros(rgb.shape[:2], dtype=np.uint8)
    labels[red & ~green & ~blue] = ARTERY
    labels[blue & ~red & ~green] = VEIN
    labels[(green | (red & blue)) & (red | green | blue)] = UNCERTAIN
    return labels


def decode_label(array: np.ndarray) -> np.ndarray:
    """A stored AV label (0..3 codes or a colour map) -> HxW codes."""
    if array.ndim == 3:
        return decode_colours(array)
    if array.max() > 3:
        raise ValueError(f"AV label codes must be 0..3, found values up to {int(array.max())}")
    return array.astype(np.uint8)


def gate_with_vessels(prob: np.ndarray, vessel: np.ndarray) -> np.ndarray:
    """A/V class probabilities (4xHxW) whose vessel/background split comes from a binary vessel probability
    (1xHxW or HxW) instead: background 1 - v, and each vessel class v times its share of the A/V model's vessel
    probability. A model trained for the binary task alone can find thin vessels the A/V model misses; the A/V
    model still names them, and names alike the vessels both find. The arg-max of the result is the A/V map."""
    vessel = vessel.reshape((1,) + prob.shape[1:]).astype(prob.dtype)
    classes = prob[BACKGROUND + 1:]
    # Where the A/V model gives the vessel classes no mass at all, it cannot name the vessel: uncertain.
    tiny = np.zeros((len(classes), 1, 1), dtype=prob.dtype)
    tiny[UNCERTAIN - 1] = 1e-7
    share = (classes + tiny) / (classes.sum(axis=0, keepdims=True) + tiny.sum())
    return np.concatenate([1 - vessel, vessel * share])
