"""vesselnet: the default vessel segmenter. A compact residual U-Net built for CPU speed.

Residual double-conv blocks (they train faster than plain ones on small data), bilinear upsampling followed
by a convolution (no transposed-convolution checkerboard on thin vessels), and concatenated skip links.
Optional DropBlock on each block's output (SA-UNet's remedy for overfitting a few dozen photos); it is the
identity at inference, so it changes training only.
"""
import torch
import torch.nn.functional as F
from torch import nn

from retinaseg.nets import EncoderDecoder

DROPBLOCK_SIZE = 7  # SA-UNet's block; smaller (odd) on feature maps narrower than that


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropblock: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.dropblock = dropblock  # applied to the block's output, so the shipped files' names stay as they are
        self.shortcut = (nn.Identity() if in_channels == out_channels else
                         nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                       nn.BatchNorm2d(out_channels)))

    def forward(self, x):
        x = F.relu(self.body(x) + self.shortcut(x), inplace=True)
        if self.training and self.dropblock > 0:
            from torchvision.ops import drop_block2d  # here, not at the top: torchvision adds a second to start-up

            size = min(DROPBLOCK_SIZE, *x.shape[-2:])
            x = drop_block2d(x, self.dropblock, size - (size % 2 == 0), training=True)
        return x


class VesselNet(EncoderDecoder):
    def __init__(self, in_channels: int = 3, classes: int = 1, width: int = 16, depth: int = 4,
                 dropblock: float = 0.0):
        super().__init__(in_channels, width, depth, block=lambda i, o: ResidualBlock(i, o, dropblock),
                         upsample=lambda i, o: nn.Conv2d(i, o, 1), interpolate=True)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[0])
