"""Shared fixtures. Everything here is synthetic: nothing needs ../shared."""
from contextlib import contextmanager

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import layouts
from retinaseg import hookimpl
from retinaseg.plugins import load_plugins, pm
from retinaseg.registry import ModelSpec
from retinaseg.synthetic import synthetic_fundus

torch.set_num_threads(2)


@contextmanager
def registered(plugin, name: str):
    """Register a plugin object for the duration of a block; always unregistered afterwards."""
    load_plugins()
    pm.register(plugin, name=name)
    try:
        yield plugin
    finally:
        pm.unregister(name=name)


@pytest.fixture
def cli():
    return CliRunner()


@pytest.fixture
def folder_dataset(tmp_path):
    """The folder dataset's layout with four training photos (one is held out for validation)."""
    root = tmp_path / "data"
    layouts.folder(root)
    layouts.folder(root / "extra")
    for p in (root / "extra" / "images").iterdir():  # a third image so there is a validation split
        p.rename(root / "images" / ("x" + p.name))
    for kind in ("labels", "fov"):
        for p in (root / "extra" / kind).iterdir():
            p.rename(root / kind / ("x" + p.name))
    return root


@pytest.fixture(scope="session")
def fundus():
    return synthetic_fundus(192, seed=7)


@pytest.fixture
def photo_folder(tmp_path, fundus):
    """Three small synthetic photos of different, odd sizes."""
    folder = tmp_path / "photos"
    folder.mkdir()
    iio.imwrite(folder / "a.png", fundus.image_uint8())
    iio.imwrite(folder / "b.jpg", synthetic_fundus((151, 173), seed=2).image_uint8())
    iio.imwrite(folder / "c.tif", synthetic_fundus((97, 133), seed=3).image_uint8())
    return folder


def f1(pred: np.ndarray, truth: np.ndarray, mask=None) -> float:
    if mask is not None:
        pred, truth = pred[mask], truth[mask]
    tp = np.count_nonzero(pred & truth)
    return 2 * tp / max(1, np.count_nonzero(pred) + np.count_nonzero(truth))


class DarkVessels(torch.nn.Module):
    """A classical 'model' needing no weights: vessels are pixels darker than their neighbourhood in the
    standardised green channel (a black top-hat)."""

    def __init__(self, in_channels=3, classes=1):
        super().__init__()

    def forward(self, x):
        green = x[:, 1:2]
        background = torch.nn.functional.avg_pool2d(green, 15, stride=1, padding=7, count_include_pad=False)
        return -8.0 * (green - background + 0.25)


class HalvesAV(torch.nn.Module):
    """A fake A/V model: dark pixels are arteries in the left half of the input, veins in the right half."""

    def __init__(self, in_channels=3, classes=4):
        super().__init__()

    def forward(self, x):
        dark = DarkVessels()(x)
        left = (torch.arange(x.shape[-1], device=x.device) < x.shape[-1] / 2).to(x.dtype).expand_as(dark)
        return torch.cat([-dark, dark + 10 * left - 5, dark - 10 * left + 5, dark - 20], dim=1)


class FakeModelPlugin:
    @hookimpl
    def register_models(self, register):
        register(ModelSpec(name="dark-vessels", build=DarkVessels, description="test", fov_diameter=150,
                           size_divisor=8))
        register(ModelSpec(name="halves-av", build=HalvesAV, description="test", classes=4, fov_diameter=150,
                           size_divisor=8, max_downscale=1))


@pytest.fixture
def fake_models():
    with registered(FakeModelPlugin(), "fake-model-plugin"):
        yield
