"""FOV estimation: ordinary, dark, cut-off, frame-filling and wide-field photos."""
import numpy as np
import pytest

from retinaseg.fov import estimate_fov, fov_diameter
from retinaseg.synthetic import synthetic_fundus

from conftest import f1


@pytest.mark.parametrize("brightness", [1.0, 0.3, 0.08])
def test_estimate_matches_the_true_fov_at_any_brightness(brightness):
    sample = synthetic_fundus((220, 260), seed=1, brightness=brightness)
    estimate = estimate_fov(sample.image)
    assert f1(estimate, sample.fov) > 0.98
    assert abs(fov_diameter(estimate) - fov_diameter(sample.fov)) <= 6


def test_fov_cut_at_top_and_bottom_keeps_its_true_diameter():
    sample = synthetic_fundus((200, 320), seed=2, fov_fraction=1.4)  # disc taller than the frame
    estimate = estimate_fov(sample.image)
    assert f1(estimate, sample.fov) > 0.98
    radius = 1.4 * 200 / 2
    assert abs(fov_diameter(estimate) - 2 * radius) < 8


@pytest.mark.parametrize("rows, cols", [
    (slice(60, 540), slice(60, 540)),  # cut on all four sides: only the corners are dark
    (slice(0, 400), slice(0, 400)),  # one corner of the disc in the frame
    (slice(0, 400), slice(80, 520)),  # the top half, cut on three sides
    (slice(107, 493), slice(84, 516)),  # HRF-like: cut at top and bottom, then on the sides; corners ~1% dark
])
def test_fov_cut_on_both_axes_keeps_its_true_diameter(rows, cols):
    sample = synthetic_fundus(600, seed=2, fov_fraction=0.9)
    true_diameter = fov_diameter(sample.fov)
    crop = np.ascontiguousarray(sample.image[rows, cols])
    assert abs(fov_diameter(sample.fov[rows, cols]) - true_diameter) <= 3
    assert abs(fov_diameter(estimate_fov(crop)) - true_diameter) <= 6


def test_photo_whose_fov_fills_the_frame_is_all_fov():
    sample = synthetic_fundus(200, seed=3, fov_fraction=3.0)
    assert sample.fov.all()
    assert estimate_fov(sample.image).mean() > 0.99


def test_wide_field_elliptical_fov_with_dark_vessels_has_no_holes():
    sample = synthetic_fundus((200, 300), seed=4)
    yy, xx = np.mgrid[0:200, 0:300]
    ellipse = ((yy - 99.5) / 95) ** 2 + ((xx - 149.5) / 145) ** 2 <= 1
    image = sample.image.copy()
    image[~ellipse] = 0.01
    image[ellipse & ~sample.fov] = image[sample.fov].mean(axis=0)
    image[90:110, 140:160] = 0.0  # a black lesion inside must not punch a hole
    estimate = estimate_fov(image)
    assert f1(estimate, ellipse) > 0.97
    assert estimate[90:110, 140:160].all()


def test_text_burnt_into_the_surround_is_ignored():
    sample = synthetic_fundus(240, seed=5, fov_fraction=0.8)
    image = sample.image.copy()
    image[5:8, 5:60] = 1.0  # a thin caption line in the black corner
    assert f1(estimate_fov(image), sample.fov) > 0.98


def test_standardising_uses_the_fov_pixels_statistics_and_zeroes_the_rest():
    import torch

    from retinaseg.preprocess import standardize

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 40, 30, generator=generator) * torch.tensor([1.0, 2.0, 0.5])[:, None, None]
    fov = torch.rand(40, 30, generator=generator) > 0.4
    out = standardize(image, fov)
    inside = out[:, fov]
    assert torch.allclose(inside.mean(dim=1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(inside.std(dim=1), torch.ones(3), atol=1e-5)
    assert not out[:, ~fov].any()
    lone = torch.zeros(40, 30, dtype=torch.bool)
    lone[3, 4] = True  # one FOV pixel: no spread to divide by, and no NaN
    assert torch.isfinite(standardize(image, lone)).all()
