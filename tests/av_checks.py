"""Checks on stored A/V probabilities, shared by the tests of what `retinaseg run --save-prob` writes."""
import numpy as np

from retinaseg import av
from retinaseg.io.images import PROBABILITY_SCALE


def decodes_to(prob: np.ndarray, labels: np.ndarray) -> bool:
    """The A/V map is its stored probabilities decoded (av.class_map), except where they lie within a step of the
    16-bit files of a tie (the background at 0.5, or the two likeliest vessel classes), where storing them may
    have decided it."""
    differ = av.class_map(prob) != labels
    step = 2 / PROBABILITY_SCALE
    likeliest = np.sort(prob[av.ARTERY:], axis=0)[-2:]
    tied = (np.abs(prob[av.BACKGROUND] - 0.5) <= step) | (likeliest[1] - likeliest[0] <= step)
    return bool(tied[differ].all())
