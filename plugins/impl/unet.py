"""U-Net (as the Kaggle retina U-Net project) with same-padding convolutions, so the output is the input's size,
and a width option."""
import torch
from torch import nn

from retinaseg.nets import EncoderDecoder


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(EncoderDecoder):
    """Encoder of `depth` double-conv blocks with 2x2 max pooling, channels doubling from `width`; decoder
    of transposed-convolution upsampling, concatenated skip links and double convs; 1x1 output conv."""

    def __init__(self, in_channels: int = 3, classes: int = 1, width: int = 16, depth: int = 4):
        super().__init__(in_channels, width, depth, block=double_conv,
                         upsample=lambda i, o: nn.ConvTranspose2d(i, o, 2, stride=2), interpolate=False,
                         names=("down", "up", "merge"))
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[0])
