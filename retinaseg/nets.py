"""Building blocks that model plugins share: the U-shaped encoder-decoder.

The encoder is `depth + 1` blocks with 2x max pooling between them, channels doubling from `width`; the decoder
upsamples each level, concatenates the skip link of the same level and merges both in a block. Plugins give the
block, the upsampling and the names of the three module lists, so files trained before this class existed keep
their parameter names and still load.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Block = Callable[[int, int], nn.Module]


class EncoderDecoder(nn.Module):
    """features(x) -> (the last decoder output, every decoder output from the deepest up).

    upsample(in_channels, out_channels) makes the module that brings a level up to the next: with interpolate,
    its output is resized bilinearly to the skip link's size (a 1x1 convolution then a resize); otherwise it must
    double the size itself (a 2x2 transposed convolution)."""

    def __init__(self, in_channels: int, width: int, depth: int, block: Block, upsample: Block,
                 interpolate: bool, names: tuple = ("encoder", "reduce", "decoder")):
        super().__init__()
        channels = [width * 2**i for i in range(depth + 1)]
        self.channels, self.interpolate, self._names = channels, interpolate, names
        encoder = nn.ModuleList([block(in_channels, channels[0])])
        encoder.extend(block(channels[i], channels[i + 1]) for i in range(depth))
        ups = nn.ModuleList(upsample(channels[i + 1], channels[i]) for i in reversed(range(depth)))
        decoder = nn.ModuleList(block(2 * channels[i], channels[i]) for i in reversed(range(depth)))
        for name, modules in zip(names, (encoder, ups, decoder)):
            setattr(self, name, modules)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        encoder, ups, decoder = (getattr(self, name) for name in self._names)
        skips = []
        for i, block in enumerate(encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        decoded = []
        for up, block in zip(ups, decoder):
            skip = skips.pop()
            x = up(x)
            if self.interpolate:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
            decoded.append(x)
        return x, decoded
