"""Frangi vesselness as a torch module (declared in __init__.py, imported only when the model is built).

The shared runner hands the module photos at the working scale, standardised inside the FOV (zero mean, unit
variance per channel), so fixed thresholds mean the same on every camera. Dark tubular structures in the
green channel give a large positive second derivative across the vessel; the vesselness combines scales
sigma = 1..4 working pixels. The output is a logit: vesselness above `threshold` maps to probability > 0.5.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn



def _gaussian_derivative_kernels(sigma: float):
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = g / g.sum()
    g1 = -x / sigma**2 * g
    g2 = (x**2 / sigma**4 - 1 / sigma**2) * g
    return g, g1, g2, radius


class Frangi(nn.Module):
    def __init__(self, in_channels: int = 3, classes: int = 1, sigmas=(1.0, 1.5, 2.0, 3.0, 4.0),
                 beta: float = 0.5, c: float = 0.5, threshold: float = 0.05, sharpness: float = 60.0):
        super().__init__()
        if classes != 1:
            raise ValueError("frangi predicts one vessel channel")
        self.sigmas, self.beta, self.c = tuple(sigmas), beta, c
        self.threshold, self.sharpness = threshold, sharpness

    def _hessian(self, x: torch.Tensor, sigma: float):
        g, g1, g2, r = (k.to(x) if isinstance(k, torch.Tensor) else k for k in _gaussian_derivative_kernels(sigma))

        def sep(img, ky, kx):
            img = F.conv2d(F.pad(img, (0, 0, r, r), mode="replicate"), ky.view(1, 1, -1, 1))
            return F.conv2d(F.pad(img, (r, r, 0, 0), mode="replicate"), kx.view(1, 1, 1, -1))

        scale = sigma**2  # scale-normalised derivatives
        return scale * sep(x, g2, g), scale * sep(x, g1, g1), scale * sep(x, g, g2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        green = image[:, 1:2]
        best = torch.zeros_like(green)
        for sigma in self.sigmas:
            hyy, hxy, hxx = self._hessian(green, sigma)
            root = torch.sqrt((hxx - hyy) ** 2 + 4 * hxy**2)
            l1, l2 = (hxx + hyy + root) / 2, (hxx + hyy - root) / 2  # l1 >= l2
            big, small = torch.where(l1.abs() >= l2.abs(), l1, l2), torch.where(l1.abs() >= l2.abs(), l2, l1)
            rb2 = (small / big.abs().clamp_min(1e-6)) ** 2
            s2 = big**2 + small**2
            v = torch.exp(-rb2 / (2 * self.beta**2)) * (1 - torch.exp(-s2 / (2 * self.c**2)))
            v = torch.where(big > 0, v, torch.zeros_like(v))  # dark vessels on a bright background
            best = torch.maximum(best, v)
        # the runner zeroes pixels outside the FOV; the rim would read as a dark ridge, so ignore its vicinity
        outside = (image.abs().sum(dim=1, keepdim=True) == 0).float()
        reach = 2 * int(math.ceil(2 * max(self.sigmas))) + 1
        near_rim = F.max_pool2d(outside, reach, stride=1, padding=reach // 2) > 0
        best = torch.where(near_rim, torch.zeros_like(best), best)
        return (best - self.threshold) * self.sharpness
