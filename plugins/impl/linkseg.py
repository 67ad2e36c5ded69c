"""LinkSeg: LinkNet with a ResNet18 encoder whose every encoder block is linked to its decoder
block by concatenation, and whose decoder upsamples (bilinear) and convolves instead of using transposed
convolutions, which leave checkerboard noise."""
import torch
import torch.nn.functional as F
from torch import nn



def _conv_bn_relu(in_channels, out_channels, kernel=3):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """Upsample x2, concatenate the linked encoder features, then 1x1 reduce + 3x3 conv (LinkNet-style)."""

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.body = nn.Sequential(_conv_bn_relu(in_channels + skip_channels, out_channels, 1),
                                  _conv_bn_relu(out_channels, out_channels, 3))

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.body(torch.cat([x, skip], dim=1))


class LinkSeg(nn.Module):
    def __init__(self, in_channels: int = 3, classes: int = 1):
        super().__init__()
        from torchvision.models import resnet18  # here, not at the top: torchvision adds a second to start-up

        encoder = resnet18(weights=None)
        if in_channels != 3:
            encoder.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu)  # /2, 64
        self.pool = encoder.maxpool  # /4
        self.blocks = nn.ModuleList([encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4])
        self.up4 = UpBlock(512, 256, 256)
        self.up3 = UpBlock(256, 128, 128)
        self.up2 = UpBlock(128, 64, 64)
        self.up1 = UpBlock(64, 64, 32)
        self.head = nn.Sequential(_conv_bn_relu(32 + in_channels, 32), nn.Conv2d(32, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        e1 = self.blocks[0](self.pool(stem))
        e2 = self.blocks[1](e1)
        e3 = self.blocks[2](e2)
        e4 = self.blocks[3](e3)
        d = self.up1(self.up2(self.up3(self.up4(e4, e3), e2), e1), stem)
        d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([d, x], dim=1))
