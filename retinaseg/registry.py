"""What plugins register, and the getters that find it by name.

Names are lowercase (``unet-resnet34``). An unknown name raises UnknownNameError listing the valid ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from retinaseg.errors import DuplicateNameError, UnknownNameError
from retinaseg.inference import MAX_DOWNSCALE
from retinaseg.inference.views import FLIP_VIEWS
from retinaseg.plugins import load_plugins, plugin_package, pm

VESSEL_CLASSES = 1  # one sigmoid channel: vessel probability
AV_CLASSES = 4  # softmax over background, artery, vein, uncertain


@dataclass(frozen=True)
class ModelSpec:
    """A segmentation model as a plugin declares it.

    build(in_channels=3, classes=..., **options) returns a torch module mapping a normalised image batch
    (B, in_channels, H, W) to logits (B, classes, H, W) for H, W multiples of size_divisor.
    """

    name: str
    build: Callable[..., Any]
    description: str
    classes: int = VESSEL_CLASSES
    options: dict = field(default_factory=dict)
    # Working scale: the photo is resized so its field of view is this many pixels across.
    fov_diameter: int = 540
    size_divisor: int = 32
    # Default cap on shrinking high-resolution photos to the working scale (--max-downscale; 0: no limit).
    # A model that needs context more than fine detail (artery/vein calls) may declare a larger one.
    max_downscale: float = MAX_DOWNSCALE
    # Default for test-time augmentation (--tta / --no-tta): several times the inference time, so only a model
    # whose scores gain from it on held-out images, and for which accuracy matters more than speed, turns it on.
    tta: bool = False
    # The views --tta averages (retinaseg.inference.views.View: scale and flip); the four flips unless declared.
    tta_views: tuple = FLIP_VIEWS
    # Name of the weights file in weights/ used when --weights is not given (None: needs no weights).
    weights: Optional[str] = None
    # Optional custom training step factory (e.g. a GAN); see retinaseg.training.engine.TrainingStep.
    training_step: Optional[Callable[..., Any]] = None
    plugin: str = ""
    package: str = ""

    @property
    def task(self) -> str:
        return "vessel" if self.classes == VESSEL_CLASSES else "av"


@dataclass(frozen=True)
class LossSpec:
    """build(**options) returns loss(logits, target, fov) -> scalar tensor, counted inside the FOV."""

    name: str
    build: Callable[..., Any]
    description: str
    task: str = "vessel"  # "vessel" (binary target) or "av" (class-index target)
    plugin: str = ""
    package: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset reader. samples(root, split) lists Sample objects; see retinaseg.datasets."""

    name: str
    samples: Callable[..., Any]
    description: str
    task: str = "vessel"  # "vessel" or "av"
    folder: str = ""  # the folder name under --data-root where it is usually found
    splits: tuple = ("training", "test")
    plugin: str = ""
    package: str = ""


def _collect(hook_name: str, kind: str) -> dict:
    load_plugins()
    found: dict = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        owner = impl.plugin_name
        package = plugin_package(owner)

        def register(spec, owner=owner, package=package):
            name = spec.name
            if name != name.lower():
                raise ValueError(f"{kind} names are lowercase; plugin {owner!r} registered {name!r}")
            if name in found:
                other = found[name]
                raise DuplicateNameError(
                    f"{kind} {name!r} is registered twice: by plugin {other.plugin!r} ({other.package}) "
                    f"and by plugin {owner!r} ({package}); uninstall one, or restrict loading with "
                    f"RETINASEG_LOAD_PLUGINS"
                )
            found[name] = replace(spec, plugin=owner, package=package)

        impl.function(register=register)
    return found


def all_models() -> dict[str, ModelSpec]:
    return _collect("register_models", "model")


def all_losses() -> dict[str, LossSpec]:
    return _collect("register_losses", "loss")


def all_datasets() -> dict[str, DatasetSpec]:
    return _collect("register_datasets", "dataset")


def _get(table: dict, kind: str, name: str):
    key = name.strip().lower()
    if key not in table:
        raise UnknownNameError(kind, name, table)
    return table[key]


def get_model(name: str) -> ModelSpec:
    return _get(all_models(), "model", name)


def get_loss(name: str) -> LossSpec:
    return _get(all_losses(), "loss", name)


def get_dataset(name: str) -> DatasetSpec:
    return _get(all_datasets(), "dataset", name)
