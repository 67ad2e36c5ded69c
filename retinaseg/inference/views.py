"""Test-time views: a photo seen at another scale and/or mirrored, whose predictions `--tta` averages.

Torch-free, so a plugin can declare its views (ModelSpec.tta_views) without importing the runner.
"""
from __future__ import annotations

from dataclasses import dataclass

FLIPS = ("", "h", "v", "hv")


@dataclass(frozen=True)
class View:
    """The photo at `scale` times the model's working scale, mirrored left-right ("h"), upside down ("v") or both."""

    scale: float = 1.0
    flip: str = ""

    def __post_init__(self):
        if self.flip not in FLIPS:
            raise ValueError(f"flip must be one of {FLIPS}; got {self.flip!r}")
        if not 0.25 <= self.scale <= 4:
            raise ValueError(f"view scale must be between 0.25 and 4; got {self.scale}")

    @property
    def dims(self) -> tuple:
        """Tensor dimensions (of a CxHxW image) the flip reverses."""
        return tuple(d for d, axis in ((-2, "v"), (-1, "h")) if axis in self.flip)

    def __str__(self) -> str:
        return f"x{self.scale:g}" + (f" flipped {self.flip}" if self.flip else "")


PLAIN = View()
# The four flips at the working scale: the default view set of `--tta`.
FLIP_VIEWS = tuple(View(flip=f) for f in FLIPS)
