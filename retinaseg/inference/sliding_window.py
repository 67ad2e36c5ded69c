"""Sliding-window inference: where tiles are planned, batched (across images) and blended.

`SlidingWindow` holds the configuration and checks it up front; `predict_stream` does the work for a stream
of images, batching tiles from consecutive images together and blending overlapping tiles with Gaussian
weights; `sliding_window_inference` is the one-image form. An image whose padded size fits
`whole_image_pixels` goes through in one pass, which on small working sizes is cheaper than tiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Hashable, Iterable, Iterator, NamedTuple

import torch
import torch.nn.functional as F

Predictor = Callable[[torch.Tensor], torch.Tensor]  # (B,C,h,w) -> (B,K,h,w) probabilities


@dataclass(frozen=True)
class SlidingWindow:
    tile_size: int = 512
    overlap: float = 0.25
    size_divisor: int = 32
    whole_image_pixels: int = 1280 * 1280
    sigma_scale: float = 0.125
    # the padded image laid out channels last, as the torch predictor feeds every input to the network: the padding
    # is then the input's one copy (ONNX Runtime takes it channels first)
    channels_last: bool = False

    def __post_init__(self):
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1); got {self.overlap}")
        if self.size_divisor < 1:
            raise ValueError(f"size_divisor must be positive; got {self.size_divisor}")
        if self.tile_size < self.size_divisor or self.tile_size % self.size_divisor:
            raise ValueError(f"tile size {self.tile_size} must be a positive multiple of the model's size "
                             f"divisor {self.size_divisor}")
        if self.sigma_scale <= 0:
            raise ValueError(f"sigma_scale must be positive; got {self.sigma_scale}")

    def frame(self, image: torch.Tensor) -> "Framed":
        """A CxHxW image in the zero frame its windows cover (top left), in the layout the predictor takes."""
        height, width = image.shape[-2:]
        (padded_h, padded_w), _ = self.windows(height, width)
        frame = _padded(image, padded_h, padded_w) if self.channels_last else \
            F.pad(image, (0, padded_w - width, 0, padded_h - height))
        return Framed(frame, height, width)

    def windows(self, height: int, width: int) -> tuple[tuple[int, int], list[tuple[int, int, int, int]]]:
        """(padded height, padded width) and the windows (top, left, height, width) covering it."""
        whole_h, whole_w = _round_up(height, self.size_divisor), _round_up(width, self.size_divisor)
        if whole_h * whole_w <= self.whole_image_pixels:
            return (whole_h, whole_w), [(0, 0, whole_h, whole_w)]
        padded_h, padded_w = max(height, self.tile_size), max(width, self.tile_size)
        tile = self.tile_size
        return (padded_h, padded_w), [(top, left, tile, tile)
                                      for top in tile_starts(padded_h, tile, self.overlap)
                                      for left in tile_starts(padded_w, tile, self.overlap)]


def _round_up(value: int, divisor: int) -> int:
    return int(math.ceil(value / divisor) * divisor)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles covering [0, length), evenly spread, the last one flush with the end."""
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1 - overlap)))
    count = int(math.ceil((length - tile) / stride)) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


@lru_cache(maxsize=8)
def gaussian_weights(height: int, width: int, sigma_scale: float) -> torch.Tensor:
    """Blending weights peaking at the tile centre; never zero, so border pixels covered by one tile keep
    that tile's prediction exactly. Each axis is floored separately: along an image border, where every tile
    is at its edge in one axis, the other axis still decides which tile is trusted."""

    def axis(n):
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        return torch.exp(-0.5 * (x / (sigma_scale * n)) ** 2).clamp_min(1e-3)

    weights = axis(height)[:, None] * axis(width)[None, :]
    return weights / weights.max()


class Framed(NamedTuple):
    """An image already in its frame (SlidingWindow.frame): made where the photo is prepared, a worker process,
    so the process that runs the network reads it where it lies and copies nothing."""
    frame: torch.Tensor  # C x padded height x padded width
    height: int  # the image's, in the frame's top left
    width: int


def _padded(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A CxHxW image in the top left of a zero frame of height x width, laid out channels last (a batch of it is
    then channels-last contiguous), in one copy."""
    channels, h, w = image.shape
    frame = torch.empty((1, channels, height, width), dtype=image.dtype, memory_format=torch.channels_last)[0]
    frame[:, h:] = 0
    frame[:, :h, w:] = 0
    frame[:, :h, :w] = image
    return frame


class _Canvas:
    """Accumulates weighted tile predictions for one image."""

    def __init__(self, key, image: torch.Tensor | Framed, config: SlidingWindow):
        self.key = key
        self.image, self.height, self.width = image if isinstance(image, Framed) else config.frame(image)
        (padded_h, padded_w), self.windows = config.windows(self.height, self.width)
        if tuple(self.image.shape[-2:]) != (padded_h, padded_w):
            raise ValueError(f"a framed image of {tuple(self.image.shape[-2:])} where this window's frame is "
                             f"{(padded_h, padded_w)}")
        self.single = len(self.windows) == 1
        self.sum = None
        self.weight = torch.zeros((1, padded_h, padded_w)) if not self.single else None
        self.pending = len(self.windows)

    def add(self, window, prediction: torch.Tensor, config: SlidingWindow):
        top, left, h, w = window
        prediction = prediction.float().cpu()
        if self.single:
            self.sum = prediction
        else:
            if self.sum is None:
                self.sum = torch.zeros((prediction.shape[0],) + tuple(self.weight.shape[-2:]))
            weights = gaussian_weights(h, w, config.sigma_scale)
            self.sum[:, top:top + h, left:left + w] += prediction * weights
            self.weight[:, top:top + h, left:left + w] += weights
        self.pending -= 1

    def result(self) -> torch.Tensor:
        """The blended prediction cropped to the image: a view (its users compute from it, not in it)."""
        out = self.sum if self.single else self.sum / self.weight
        return out[:, :self.height, :self.width]


def predict_stream(items: Iterable[tuple[Hashable, torch.Tensor | Framed]], predictor: Predictor,
                   config: SlidingWindow, batch_size: int = 4) -> Iterator[tuple[Hashable, torch.Tensor]]:
    """Predict a stream of (key, CxHxW image, or the image framed by config.frame) pairs, yielding (key, KxHxW
    prediction) in input order.

    Windows of the same shape from consecutive images share a batch, so small tiles from many photos fill
    the batch; only the images whose windows are in flight are held in memory.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1; got {batch_size}")
    canvases: list[_Canvas] = []
    batch: list[tuple[_Canvas, tuple]] = []

    def run_batch():
        tiles = [c.image[:, t:t + h, l:l + w] for c, (t, l, h, w) in batch]
        inputs = tiles[0][None] if len(tiles) == 1 else torch.stack(tiles)  # a view, not a copy, for batch 1
        outputs = predictor(inputs)
        for (canvas, window), output in zip(batch, outputs):
            canvas.add(window, output, config)
        batch.clear()

    def finished():
        while canvases and canvases[0].pending == 0:
            canvas = canvases.pop(0)
            yield canvas.key, canvas.result()

    for key, image in items:
        canvas = _Canvas(key, image, config)
        canvases.append(canvas)
        for window in canvas.windows:
            if batch and (len(batch) == batch_size or batch[0][1][2:] != window[2:]):
                run_batch()
                yield from finished()
            batch.append((canvas, window))
    if batch:
        run_batch()
    yield from finished()


def sliding_window_inference(image: torch.Tensor, predictor: Predictor, config: SlidingWindow = SlidingWindow(),
                             batch_size: int = 4) -> torch.Tensor:
    """Predict one CxHxW image; returns KxHxW."""
    return next(predict_stream([(0, image)], predictor, config, batch_size))[1]
