"""Building a registered model and loading it with its weights."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

from retinaseg.checkpoint import for_shipping, load_checkpoint, save_checkpoint, sha256, weights_dir
from retinaseg.errors import CheckpointError, RetinasegError
from retinaseg.preprocess import NORMALIZATION
from retinaseg.registry import ModelSpec, check_options, get_model

DEFAULT_MODEL = "vesselnet"


@dataclass
class LoadedModel:
    spec: ModelSpec
    module: torch.nn.Module
    config: dict  # classes, options, fov_diameter, size_divisor, normalization[, max_downscale]
    weights: Optional[Path]
    weights_sha256: Optional[str]

    @property
    def classes(self) -> int:
        return self.config["classes"]

    @property
    def fov_diameter(self) -> int:
        return self.config["fov_diameter"]

    @property
    def max_downscale(self) -> float:
        """The weights file's own cap on shrinking (a file fine-tuned on one camera's photos may work best at
        another scale than the model's other files), else the model's."""
        return self.config.get("max_downscale", self.spec.max_downscale)

    @property
    def disc_min_probability(self) -> Optional[float]:
        """For a disc model: the mean probability a blob needs to be a disc with this file, if the file sets its own
        (chosen for its maps); None: disc.MIN_MEAN_PROBABILITY."""
        return self.config.get("disc_min_probability")


def model_config(spec: ModelSpec, options: Optional[dict] = None, fov_diameter: Optional[int] = None) -> dict:
    """A new model's config; options are checked against what its builder accepts."""
    options = check_options("model", spec.name, spec.build, options or {}, declared=spec.options,
                            fixed=("in_channels", "classes"))
    return {
        "model": spec.name,
        "classes": spec.classes,
        "options": {**spec.options, **options},
        "fov_diameter": int(fov_diameter or spec.fov_diameter),
        "size_divisor": spec.size_divisor,
        "normalization": NORMALIZATION,
    }


class ProbabilityMean(torch.nn.Module):
    """Several trainings of one architecture as one model: their probabilities are averaged and returned as
    logits, so the runner, evaluation and TTA treat the ensemble like any model. The output kind is fixed at
    construction (no branching on shapes), so torch.fx can trace it and the runner folds its BatchNorms."""

    def __init__(self, members: list[torch.nn.Module], classes: int):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.binary = classes == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.binary:
            mean = torch.stack([torch.sigmoid(member(x).float()) for member in self.members]).mean(dim=0)
            return torch.logit(mean, eps=1e-6)
        mean = torch.stack([torch.softmax(member(x).float(), dim=1) for member in self.members]).mean(dim=0)
        return torch.log(mean.clamp_min(1e-12))  # softmax(log p) = p


def member_count(config: dict) -> int:
    """How many trainings a weights file's config holds: 1, or an ensemble's members."""
    return config.get("members", 1)


def build_module(spec: ModelSpec, config: dict) -> torch.nn.Module:
    """The architecture config describes; config["members"] > 1 makes a ProbabilityMean of that many copies."""
    def one():
        return spec.build(in_channels=3, classes=config["classes"], **config["options"])
    members = member_count(config)
    return ProbabilityMean([one() for _ in range(members)], config["classes"]) if members > 1 else one()


def pack_ensemble(sources: list, destination, **options) -> None:
    """One weights file holding several trainings of the same model and settings, which loads as a
    ProbabilityMean of them. The options (half, max_downscale, fov_diameter, ...) are pack_checkpoint's, applied to
    every member. Settings are compared with the model's option defaults filled in, so files saved before an
    option existed still match."""
    if len(sources) < 2:
        raise CheckpointError("an ensemble needs at least two weights files")
    state, settings = {}, []
    for index, source in enumerate(sources):
        member_state, config = for_shipping(load_checkpoint(source), **options)
        if member_count(config) > 1:
            raise CheckpointError(f"{source} is an ensemble already; name its members instead")
        config["options"] = {**get_model(config["model"]).options, **config["options"]}
        if settings and config != settings[0]:
            raise CheckpointError(f"{source}: its model or settings differ from {sources[0]}'s ({config} vs "
                                  f"{settings[0]}); an ensemble's members must share them")
        settings.append(config)
        state.update({f"members.{index}.{key}": value for key, value in member_state.items()})
    save_checkpoint(destination, state, {**settings[0], "members": len(sources)},
                    info={"members": [Path(source).name for source in sources]})


def default_weights(spec: ModelSpec) -> Optional[Path]:
    return weights_dir() / spec.weights if spec.weights else None


@lru_cache(maxsize=8)
def shipped_weights_sha256(name: str) -> Optional[str]:
    """The sha256 of a model's shipped weights file, without loading the model: what run records and measured rows
    name it by (None when it has no file, or the file is missing)."""
    try:
        path = default_weights(get_model(name))
    except RetinasegError:  # no such model installed
        return None
    return sha256(path) if path is not None and path.is_file() else None


def load_model(name: str, weights=None) -> LoadedModel:
    """The model `name` with `weights` (a checkpoint path), or its shipped weights when none is given.
    Models that need no training (classical filters) load without weights."""
    spec = get_model(name)
    path = Path(weights) if weights else default_weights(spec)
    if path is None:
        config = model_config(spec)
        return LoadedModel(spec, build_module(spec, config).eval(), config, None, None)
    if not path.is_file():
        hint = "pass --weights FILE, or train some with `retinaseg train`" if not weights else "check the path"
        raise CheckpointError(f"model {name!r}: weights file {path} not found; {hint}")
    payload = load_checkpoint(path)
    config = payload["config"]
    if config.get("model") != spec.name:
        raise CheckpointError(f"{path}: weights are for model {config.get('model')!r}, not {spec.name!r}")
    module = build_module(spec, config)
    try:
        module.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit model {spec.name!r} "
                              f"({str(exc).splitlines()[0][:160]})") from None
    return LoadedModel(spec, module.eval(), config, path, sha256(path))


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid for one-channel vessel models, softmax over classes otherwise."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RetinasegError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return torch.device(device)
