"""Training images at the model's working scale, and the patch sampler that augments them."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from retinaseg.datasets import Sample, check_same_size, read_fov, read_label
from retinaseg.fov import fov_diameter
from retinaseg.io.images import read_photo
from retinaseg.registry import BINARY_TASKS
from retinaseg.training.config import BLUR_LEAST_SIGMA, JPEG_BEST_QUALITY
from retinaseg.preprocess import channel_statistics, photo_tensor, resize, resize_mask, standardize, working_size

STATISTICS_PIXELS = 4096  # FOV pixels kept per image to renormalise after photometric augmentation
ELASTIC_CONTROL_POINTS = 5  # per side of a patch: displacements drawn there, smoothly interpolated between
JPEG_SHARE = 0.5  # of patches re-encoded when --jpeg is on; the rest stay as read
# Grey versions of a colour patch (R, G, B weights): a red-free photo is close to the green channel alone; a
# colour photo saved as grey is its luminance (ITU-R BT.601)
GREY_WEIGHTS = ((0.0, 1.0, 0.0), (0.299, 0.587, 0.114))
NOISE_SHARE = 0.5  # of patches given sensor noise when --noise is on


@dataclass
class TrainingImage:
    id: str
    image: torch.Tensor  # 3xhxw in [0, 1], working scale
    target: torch.Tensor  # Kxhxw soft target: vessel probability (K=1) or class probabilities (K=4)
    fov: torch.Tensor  # hxw bool
    vessel_pixels: torch.Tensor  # flat indices of vessel pixels, for vessel-aware sampling
    fov_pixels: torch.Tensor  # flat indices of FOV pixels
    statistics_sample: torch.Tensor  # 3xN FOV pixel values
    dataset: str = ""  # the dataset it came from, for --balance-datasets
    pixels: torch.Tensor = field(init=False, repr=False)  # (3+K+1)xhxw: image, target and FOV (0/1) in one

    def __post_init__(self):
        # image and target become views into one stacked tensor, which the patch sampler resamples in one
        # pass; so the stack is not a second copy of every training photo
        self.pixels = torch.cat([self.image, self.target, self.fov[None].to(self.image.dtype)])
        self.image, self.target = self.pixels[:3], self.pixels[3:-1]


def load_training_image(sample: Sample, task: str, fov_diameter_px: int, classes: int,
            max_downscale: Optional[float] = None, dataset: str = "") -> TrainingImage:
    """The sample (from `dataset`) at the working scale the runner will use for it (the same cap on shrinking)."""
    photo = read_photo(sample.image)
    label = read_label(sample.label, task)
    check_same_size(sample, photo, label)
    fov = read_fov(sample, photo)
    size = working_size(photo.shape[:2], fov_diameter(fov), fov_diameter_px, max_downscale)
    image = resize(photo_tensor(photo), size)
    if task in BINARY_TASKS:
        target = torch.from_numpy(label.astype(np.float32))[None]
    else:
        target = F.one_hot(torch.from_numpy(label.astype(np.int64)), classes).permute(2, 0, 1).float()
    # area averaging keeps thin vessels as partial-vessel pixels instead of dropping them
    target = resize(target, size, mode="area" if size[0] <= label.shape[0] else "bilinear")
    fov_small = resize_mask(fov, size)
    vessel = (target[0] > 0.5) if task in BINARY_TASKS else (target[0] < 0.5)  # where patches are centred
    fov_idx = torch.nonzero(fov_small.flatten()).flatten()
    generator = torch.Generator().manual_seed(len(fov_idx))
    pick = fov_idx[torch.randint(len(fov_idx), (STATISTICS_PIXELS,), generator=generator)]
    return TrainingImage(sample.id, image, target, fov_small,
                         torch.nonzero((vessel & fov_small).flatten()).flatten(), fov_idx,
                         image.flatten(1)[:, pick].contiguous(), dataset)


@dataclass(frozen=True)
class Augmentation:
    rotate: bool = True  # free rotation (covers the 90-degree ones)
    flip: bool = True
    scale: tuple = (0.8, 1.25)
    gamma: tuple = (0.7, 1.4)
    brightness: float = 0.1
    contrast: tuple = (0.75, 1.3)
    colour: float = 0.1  # per-channel gain jitter
    blur_probability: float = 0.2  # simulates softer optics
    blur: float = 0.0  # largest Gaussian sigma (working-scale pixels) of the blurred patches; 0: a 3x3 binomial
    noise: float = 0.0  # largest std of the Gaussian sensor noise added to some patches (pixel values 0-1); 0: off
    elastic: float = 0.0  # std of a smooth random displacement, in working-scale pixels (bends vessels); 0: off
    jpeg: int = 0  # lowest quality of the JPEG re-encoding of some patches (uniform up to JPEG_BEST_QUALITY); 0: off
    grey: float = 0.0  # share of patches turned grey, each by one of GREY_WEIGHTS (red-free photos); 0: off

    @classmethod
    def none(cls):
        return cls(rotate=False, flip=False, scale=(1.0, 1.0), gamma=(1.0, 1.0), brightness=0.0, contrast=(1.0, 1.0),
                   colour=0.0, blur_probability=0.0, blur=0.0, noise=0.0, elastic=0.0, jpeg=0, grey=0.0)


def _uniform(low, high, generator):
    return low + (high - low) * torch.rand((), generator=generator).item()


def photometric(pixels: torch.Tensor, gamma, contrast, brightness, gain) -> torch.Tensor:
    """Gamma, contrast, brightness and per-channel gain on Bx3x... values in [0, 1]; each parameter holds one
    value per sample (gain: three)."""
    def per_sample(values):
        return values.reshape(values.shape[:2] + (1,) * (pixels.dim() - 2))
    out = pixels.clamp(0, 1) ** per_sample(gamma)
    out = (out - 0.5) * per_sample(contrast) + 0.5 + per_sample(brightness)
    return (out * per_sample(gain)).clamp(0, 1)


class PatchSampler:
    """Draws augmented, normalised training patches. Half the patches (by default) are centred on a vessel
    pixel, so the thin-vessel signal is not drowned by background."""

    def __init__(self, images: list[TrainingImage], patch_size: int, augmentation: Augmentation,
                 vessel_fraction: float = 0.5, whole_image: bool = False, device="cpu",
                 balance_datasets: bool = False):
        self.images, self.patch_size = images, patch_size
        # balanced: each dataset gives the same share of patches; otherwise each image does
        self._image_weights = _dataset_balancing_weights(images) if balance_datasets else None
        self.augmentation, self.vessel_fraction, self.whole_image = augmentation, vessel_fraction, whole_image
        # Each image's stacked pixels live on the training device (on the CPU: the same tensor, no copy), so
        # patches are cut and augmented where the model trains. Pixel indices and the random draws stay on the
        # CPU, so a seed gives the same patches on either device.
        self.device = torch.device(device)
        self._stacks = [item.pixels[None].to(self.device) for item in images]
        self._statistics = [item.statistics_sample.to(self.device) for item in images]
        # whole-image sampling: one square side that holds the largest image, a multiple of 32
        self._whole_size = int(math.ceil(max(max(item.fov.shape) for item in images) / 32) * 32)

    def _params(self, g: torch.Generator) -> dict:
        a = self.augmentation
        return {
            "angle": _uniform(0, 2 * math.pi, g) if a.rotate else 0.0,
            "flip": a.flip and torch.rand((), generator=g).item() < 0.5,
            "scale": math.exp(_uniform(math.log(a.scale[0]), math.log(a.scale[1]), g)),
            "gamma": math.exp(_uniform(math.log(a.gamma[0]), math.log(a.gamma[1]), g)),
            "contrast": _uniform(*a.contrast, g),
            "brightness": _uniform(-a.brightness, a.brightness, g),
            "gain": 1 + (torch.rand(3, generator=g) * 2 - 1) * a.colour,
            "blur": _blur_sigma(a, g),
            # drawn only when on, so runs without it repeat their earlier patches
            "warp": (torch.randn(2, ELASTIC_CONTROL_POINTS, ELASTIC_CONTROL_POINTS, generator=g) * a.elastic
                     if a.elastic else None),
            "jpeg": (torch.randint(a.jpeg, JPEG_BEST_QUALITY + 1, (), generator=g).item()
                     if a.jpeg and torch.rand((), generator=g).item() < JPEG_SHARE else None),
            "grey": (GREY_WEIGHTS[torch.randint(len(GREY_WEIGHTS), (), generator=g).item()]
                     if a.grey and torch.rand((), generator=g).item() < a.grey else None),
            "noise": (_uniform(0, a.noise, g) if a.noise and torch.rand((), generator=g).item() < NOISE_SHARE
                      else None),
        }

    def _draw_image(self, g: torch.Generator) -> int:
        """The index of the image the next patch is cut from."""
        if self._image_weights is None:
            return torch.randint(len(self.images), (), generator=g).item()
        return torch.multinomial(self._image_weights, 1, generator=g).item()

    def _centre(self, item: TrainingImage, g: torch.Generator) -> tuple[float, float]:
        height, width = item.fov.shape
        if self.whole_image:
            return (height - 1) / 2, (width - 1) / 2
        pool = item.vessel_pixels if (len(item.vessel_pixels) and
                                      torch.rand((), generator=g).item() < self.vessel_fraction) else item.fov_pixels
        flat = pool[torch.randint(len(pool), (), generator=g)].item()
        return float(flat // width), float(flat % width)

    def _grids(self, draws: list, size: int) -> torch.Tensor:
        """Bxsizexsizex2 sampling positions, each in its image's grid_sample [-1, 1] (align_corners=False)."""
        offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        yy, xx = torch.meshgrid(offsets, offsets, indexing="ij")
        scale = _per_patch([params["scale"] for _, params, _ in draws])
        xx = xx * _per_patch([-1.0 if params["flip"] else 1.0 for _, params, _ in draws])
        cos = _per_patch([math.cos(params["angle"]) for _, params, _ in draws])
        sin = _per_patch([math.sin(params["angle"]) for _, params, _ in draws])
        y = _per_patch([cy for _, _, (cy, _) in draws]) + scale * (cos * yy - sin * xx)
        x = _per_patch([cx for _, _, (_, cx) in draws]) + scale * (sin * yy + cos * xx)
        if draws[0][1]["warp"] is not None:
            warp = F.interpolate(torch.stack([params["warp"] for _, params, _ in draws]), size=(size, size),
                                 mode="bicubic", align_corners=True)
            y, x = y + warp[:, 0], x + warp[:, 1]
        height = _per_patch([self.images[index].fov.shape[0] for index, _, _ in draws])
        width = _per_patch([self.images[index].fov.shape[1] for index, _, _ in draws])
        return torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1).to(self.device)

    def _colour(self, draws: list) -> tuple:
        """photometric()'s gamma, contrast, brightness and gain (three) of each drawn patch."""
        def column(key):
            return _per_patch([params[key] for _, params, _ in draws], self.device)
        gain = torch.stack([params["gain"] for _, params, _ in draws]).to(self.device)
        return column("gamma"), column("contrast"), column("brightness"), gain

    def sample(self, batch_size: int, g: torch.Generator):
        """(images Bx3xPxP normalised, targets BxKxPxP, fov Bx1xPxP)."""
        size = self._whole_size if self.whole_image else self.patch_size
        draws = []
        for _ in range(batch_size):
            index = self._draw_image(g)
            params = self._params(g)
            draws.append((index, params, self._centre(self.images[index], g)))
        # one resampling per patch (the images differ in size); the augmentation then runs once per batch
        grids = self._grids(draws, size)
        patch = torch.cat([F.grid_sample(self._stacks[index], grids[i:i + 1], mode="bilinear",
                                         padding_mode="zeros", align_corners=False)
                           for i, (index, _, _) in enumerate(draws)])
        image, target, fov = patch[:, :3], patch[:, 3:-1], patch[:, -1:] > 0.5
        colour = self._colour(draws)
        image = photometric(image, *colour)
        statistics = photometric(torch.stack([self._statistics[index] for index, _, _ in draws]), *colour)
        # each optional step runs once on the patches that drew it (chosen on the CPU: no GPU sync), in the
        # order a photo meets them: optics, sensor, grey conversion, compression
        blurred, sigmas = _drawn(draws, "blur")
        if blurred:
            image[blurred] = _blur(image[blurred], sigmas)
        noisy, stds = _drawn(draws, "noise")
        if noisy:  # the statistics too: the runner takes them from the noisy photo
            image[noisy] = _add_noise(image[noisy], stds, g)
            statistics[noisy] = _add_noise(statistics[noisy], stds, g)
        greyed, weights = _drawn(draws, "grey")
        if greyed:  # the normalising statistics too, as the runner takes them from the grey photo
            weights = torch.tensor(weights, device=self.device)
            image[greyed], statistics[greyed] = to_grey(image[greyed], weights), to_grey(statistics[greyed], weights)
        compressed, qualities = _drawn(draws, "jpeg")
        if compressed:
            image[compressed] = jpeg_round_trip(image[compressed], qualities)
        mean, std = channel_statistics(statistics)
        image = standardize(image, fov, mean, std)
        return image, target, fov.float()


def _drawn(draws: list, key: str) -> tuple[list[int], list]:
    """(indices, values) of the patches whose drawn parameter `key` is set."""
    chosen = [(i, params[key]) for i, (_, params, _) in enumerate(draws) if params[key]]
    return [i for i, _ in chosen], [value for _, value in chosen]


def _per_patch(values: list, device="cpu") -> torch.Tensor:
    """One number per patch as a Bx1x1 tensor, to broadcast over each patch's pixels."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


def to_grey(pixels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Bx3x... colour pixels as grey in all three channels, each sample with its Bx3 channel weights."""
    grey = (pixels * weights.view(weights.shape + (1,) * (pixels.dim() - 2))).sum(dim=1, keepdim=True)
    return grey.expand_as(pixels)


def jpeg_round_trip(images: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """Bx3xHxW images in [0, 1], each encoded as a JPEG at its quality and decoded again: the 8x8 blocks and
    ringing of compressed photos, which an untrained model reads as thin vessels."""
    from torchvision.io import decode_jpeg, encode_jpeg

    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    decoded = [decode_jpeg(encode_jpeg(patch, quality=quality)) for patch, quality in zip(pixels, qualities)]
    return torch.stack(decoded).to(images.device, images.dtype) / 255


def _dataset_balancing_weights(images: list[TrainingImage]) -> torch.Tensor:
    """Each image's drawing weight: 1 / (images of its dataset), so every dataset weighs the same."""
    counts = Counter(item.dataset for item in images)
    return torch.tensor([1 / counts[item.dataset] for item in images], dtype=torch.float64)


def _add_noise(pixels: torch.Tensor, stds: list, g: torch.Generator) -> torch.Tensor:
    """Bx3x... values in [0, 1] plus Gaussian noise of each sample's std, drawn on the CPU from the generator."""
    noise = torch.randn(pixels.shape, generator=g) * torch.tensor(stds).view((-1,) + (1,) * (pixels.dim() - 1))
    return (pixels + noise.to(pixels.device)).clamp(0, 1)


def _blur_sigma(augmentation: Augmentation, g: torch.Generator):
    """A patch's blur: False (none), True (the 3x3 binomial) or, with Augmentation.blur, a Gaussian sigma."""
    if not torch.rand((), generator=g).item() < augmentation.blur_probability:
        return False
    # drawn only when on, so runs without it repeat their earlier patches
    return _uniform(BLUR_LEAST_SIGMA, augmentation.blur, g) if augmentation.blur else True


def _blur(images: torch.Tensor, sigmas: list) -> torch.Tensor:
    """Bx3xHxW images, each blurred by its sigma (True: a 3x3 binomial)."""
    from torchvision.transforms.functional import gaussian_blur

    if all(sigma is True for sigma in sigmas):
        kernel = torch.tensor([0.25, 0.5, 0.25], device=images.device)
        kernel2d = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
        return F.conv2d(images, kernel2d, padding=1, groups=3)
    return torch.cat([gaussian_blur(image[None], [2 * math.ceil(3 * sigma) + 1] * 2, [sigma] * 2)
                      for image, sigma in zip(images, sigmas)])
