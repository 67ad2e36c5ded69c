"""What every model sees: the photo at its working scale, standardised inside the FOV.

The runner and the training engine both go through here, so a model meets new photos exactly as it met its
training data. The working scale makes the FOV `fov_diameter` pixels across, which brings a 3504x2336 HRF
photo and a 565x584 DRIVE photo to the same vessel widths. At inference, high-resolution photos may be shrunk
less (max_downscale): their manual labels, and their readers, count capillaries that full shrinking erases.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

NORMALIZATION = "fov-standardize"


def working_size(raw_size: tuple[int, int], measured_diameter: int, fov_diameter: int,
                 max_downscale: Optional[float] = None) -> tuple[int, int]:
    """Size that brings the FOV to fov_diameter pixels across, shrinking by at most max_downscale (if given)."""
    scale = fov_diameter / max(1, measured_diameter)
    if max_downscale:
        scale = max(scale, 1.0 / max_downscale)
    return max(1, round(raw_size[0] * scale)), max(1, round(raw_size[1] * scale))


def resize(tensor: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize a CxHxW float tensor; antialiased when shrinking so thin vessels average rather than alias."""
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    if mode == "area":
        return F.interpolate(tensor[None], size=size, mode="area")[0]
    shrinking = size[0] < tensor.shape[-2] or size[1] < tensor.shape[-1]
    return F.interpolate(tensor[None], size=size, mode=mode, align_corners=False, antialias=shrinking)[0]


def photo_tensor(photo: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1).float()


def resize_mask(mask: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)[None]
    return resize(m, size, mode="area" if size[0] <= m.shape[-2] else "bilinear")[0] > 0.5


def channel_statistics(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of CxN (or BxCxN) pixel values (std floored for flat images)."""
    return pixels.mean(dim=-1), pixels.std(dim=-1).clamp_min(1e-3)


def fov_statistics(image: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over the FOV pixels of a CxHxW image (weight: the FOV as 0/1 of the
    image's dtype), and the image less its mean, a new tensor. Sums over the masked image, which take a third of the
    time of gathering the FOV's pixels first (the same values, to float rounding)."""
    if not weight.any():
        mean, std = channel_statistics(image.flatten(1))
        return mean, std, image - mean[:, None, None]
    count = weight.sum()
    mean = (image * weight).sum(dim=(1, 2)) / count
    centred = image - mean[:, None, None]
    spread = centred * weight
    std = (spread.mul_(spread).sum(dim=(1, 2)) / (count - 1).clamp_min(1)).sqrt()
    return mean, std.clamp_min(1e-3), centred


def standardize(image: torch.Tensor, fov: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """(x - mean) / std per channel using FOV statistics; pixels outside the FOV become 0. With a batch
    (BxCxHxW, FOV Bx1xHxW) mean and std are given per sample (BxC)."""
    weight = fov.to(image.dtype)
    if mean is None:
        mean, std, centred = fov_statistics(image, weight)
    else:
        centred = image - mean[..., None, None]
    return centred.div_(std[..., None, None]).mul_(weight)  # in the new tensor: the same values, fewer copies
