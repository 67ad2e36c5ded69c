"""U-Net (seed 001) with same-padding convolutions, so the output is the input's size, and a width option."""
import torch
from torch import nn

from retinaseg import hookimpl
from retinaseg.registry import ModelSpec


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder of `depth` double-conv blocks with 2x2 max pooling, channels doubling from `width`; decoder
    of transposed-convolution upsampling, concatenated skip links and double convs; 1x1 output conv."""

    def __init__(self, in_channels: int = 3, classes: int = 1, width: int = 16, depth: int = 4):
        super().__init__()
        channels = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([double_conv(in_channels, channels[0])])
        self.down.extend(double_conv(channels[i], channels[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2)
                                for i in reversed(range(depth)))
        self.merge = nn.ModuleList(double_conv(2 * channels[i], channels[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(channels[0], classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="unet",
        build=UNet,
        description="U-Net (seed 001), same-padding convolutions; options: width (16), depth (4)",
        options={"width": 16, "depth": 4},
        size_divisor=16,
        weights="unet.pt",
    ))
