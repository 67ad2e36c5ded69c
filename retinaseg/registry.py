"""What plugins register, and the getters that find it by name.

Names are lowercase (``unet-resnet34``). An unknown name raises UnknownNameError listing the valid ones.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from retinaseg.errors import DuplicateNameError, OptionError, PluginError, UnknownNameError
from retinaseg.inference import MAX_DOWNSCALE
from retinaseg.inference.views import FLIP_VIEWS
from retinaseg.plugins import load_plugins, plugin_package, pm

VESSEL_CLASSES = 1  # one sigmoid channel: vessel probability
AV_CLASSES = 4  # softmax over background, artery, vein, uncertain
# What a model segments. Binary tasks have one sigmoid channel and 0/1 labels, and share losses and scoring.
TASKS = ("vessel", "av", "disc")
BINARY_TASKS = ("vessel", "disc")


class Lazy:
    """A builder named "package.module:attribute" and imported when it is first called (or its signature checked),
    so that loading every plugin to list or look one up does not import torch or a plugin's other heavy
    dependencies, and a run imports only the model it uses. Use it for ModelSpec.build, ModelSpec.training_step
    and LossSpec.build."""

    def __init__(self, target: str):
        module, sep, attribute = target.partition(":")
        if not (sep and module and attribute):
            raise ValueError(f"Lazy({target!r}): name it as 'package.module:attribute'")
        self.target = target

    def resolve(self) -> Callable[..., Any]:
        module, _, attribute = self.target.partition(":")
        try:
            found = importlib.import_module(module)
            for part in attribute.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"{self.target}: cannot be imported ({type(exc).__name__}: {exc})") from None
        return found

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:  # what check_options reads: the target's own parameters
        return inspect.signature(self.resolve())

    def __eq__(self, other):
        return isinstance(other, Lazy) and other.target == self.target

    def __hash__(self):
        return hash(self.target)

    def __repr__(self):
        return f"Lazy({self.target!r})"


@dataclass(frozen=True)
class ModelSpec:
    """A segmentation model as a plugin declares it.

    build(in_channels=3, classes=..., **options) returns a torch module mapping a normalised image batch
    (B, in_channels, H, W) to logits (B, classes, H, W) for H, W multiples of size_divisor. Give it as
    Lazy("package.module:Class") to keep torch out of the plugin's import.
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
    # Default for --av-graph (A/V models): one type per vessel from the vessel graph, decided on held-out images.
    av_graph: bool = False
    # Name of the weights file in weights/ used when --weights is not given (None: needs no weights).
    weights: Optional[str] = None
    # Optional custom training step factory (e.g. a GAN); see retinaseg.training.engine.TrainingStep.
    training_step: Optional[Callable[..., Any]] = None
    # "vessel", "av" or "disc" (the optic disc); "" takes it from classes: 1 vessel, else av
    task: str = ""
    plugin: str = ""
    package: str = ""

    def __post_init__(self):
        if not self.task:
            object.__setattr__(self, "task", "vessel" if self.classes == VESSEL_CLASSES else "av")
        if self.task not in TASKS or (self.task in BINARY_TASKS) != (self.classes == VESSEL_CLASSES):
            raise ValueError(f"model {self.name!r}: task {self.task!r} with {self.classes} classes; tasks are "
                             f"{', '.join(TASKS)}, the binary ones ({', '.join(BINARY_TASKS)}) with 1 class")


@dataclass(frozen=True)
class LossSpec:
    """build(**options) returns loss(logits, target, fov) -> scalar tensor, counted inside the FOV."""

    name: str
    build: Callable[..., Any]
    description: str
    task: str = "vessel"  # "vessel" (any binary target: vessels, the disc) or "av" (class-index target)
    plugin: str = ""
    package: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset reader. samples(root, split) lists Sample objects; see retinaseg.datasets."""

    name: str
    samples: Callable[..., Any]
    description: str
    task: str = "vessel"  # "vessel", "av" or "disc": what its labels mark
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


def check_options(kind: str, name: str, builder: Callable[..., Any], options: dict, declared: Optional[dict] = None,
                  fixed: tuple = (), leading: int = 0) -> dict:
    """The options a user gave for a plugin's builder, checked against its signature before anything is built:
    names it does not accept, and values whose type differs from the default's, raise OptionError listing the
    accepted options. fixed: parameters the core passes itself by name (in_channels, classes); leading: how
    many it passes by position first (a dataset's root and split). declared: the
    ModelSpec's own defaults, which take precedence over the signature's. Ints given for float options become
    floats."""
    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
        return dict(options)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    fixed = (*fixed, *list(parameters)[:leading])
    accepted = {key: (declared or {}).get(key, p.default) for key, p in parameters.items()
                if key not in fixed and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                   inspect.Parameter.KEYWORD_ONLY)}
    listing = ", ".join(f"{key}={default!r}" if default is not inspect.Parameter.empty else key
                        for key, default in accepted.items()) or "none"
    checked = {}
    for key, value in options.items():
        if key not in accepted:
            if takes_any and key not in fixed:
                checked[key] = value
                continue
            raise OptionError(f"{kind} {name!r} has no option {key!r}; it accepts: {listing}")
        default = accepted[key]
        expected = type(default) if default not in (None, inspect.Parameter.empty) else None
        if expected is float and type(value) is int:
            value = float(value)
        if expected in (bool, int, float, str) and type(value) is not expected:
            words = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
            raise OptionError(f"{kind} {name!r} option {key}={value!r}: expected {words[expected]} (default "
                              f"{default!r}); it accepts: {listing}")
        checked[key] = value
    return checked
