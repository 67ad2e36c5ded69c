"""Checkpoints: a model's weights together with everything needed to use them (architecture options, classes,
working scale, normalisation). Loaded with torch.load(weights_only=True), which refuses pickled code."""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path
from typing import Optional

import torch

from retinaseg.errors import CheckpointError
from retinaseg.io.atomic import write_bytes_via

FORMAT = "retinaseg-checkpoint/1"
WEIGHTS_DIR_ENV = "RETINASEG_WEIGHTS_DIR"


def weights_dir() -> Path:
    """The shipped weights: $RETINASEG_WEIGHTS_DIR, else weights/ beside the package."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or Path(__file__).resolve().parent.parent / "weights")


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path, state_dict: dict, config: dict, **extra) -> None:
    payload = {"format": FORMAT, "config": dict(config), "state_dict": state_dict, **extra}
    write_bytes_via(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it is about to refuse
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # a damaged pickle stream, not a refused object
            raise CheckpointError(f"{path}: not a readable weights file (truncated or corrupt); use weights "
                                  f"written by `retinaseg train`") from None
        raise CheckpointError(f"{path}: refused to load: the file holds pickled Python objects, which could run "
                              f"code, and retinaseg loads only tensors and plain values. Use weights written by "
                              f"`retinaseg train`, or packed from them") from None
    except Exception:
        raise CheckpointError(f"{path}: not a readable weights file (truncated or corrupt); use weights written "
                              f"by `retinaseg train`") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a retinaseg checkpoint (expected format {FORMAT})")
    return payload


def pack_checkpoint(source, destination, half: bool = False, max_downscale: Optional[float] = None,
                    fov_diameter: Optional[int] = None, disc_min_probability: Optional[float] = None) -> None:
    """Copy a training checkpoint's weights, config and info for shipping, without optimiser state. With
    half=True, convolution and linear kernels (tensors of 2+ dims, nearly all the bytes) are stored as float16,
    halving the file; biases and BatchNorm statistics stay float32. Loading casts them back to float32.
    max_downscale records the file's own default cap on shrinking (chosen on held-out images; 0: no limit);
    fov_diameter the working scale it runs at (FOV width in pixels), when held-out images favour another scale
    than the one it was trained at; disc_min_probability, for a disc model, the mean probability a blob must have
    to be a disc with this file (disc.MIN_MEAN_PROBABILITY otherwise), when it was chosen for the file's own maps."""
    payload = load_checkpoint(source)
    state, config = for_shipping(payload, half, max_downscale, fov_diameter, disc_min_probability)
    save_checkpoint(destination, state, config, info=payload.get("info", {}))


def for_shipping(payload: dict, half: bool = False, max_downscale: Optional[float] = None,
                 fov_diameter: Optional[int] = None, disc_min_probability: Optional[float] = None) -> tuple[dict, dict]:
    """(state_dict, config) of a loaded checkpoint as pack_checkpoint ships them."""
    state = {key: value.half() if half and value.is_floating_point() and value.dim() >= 2 else value
             for key, value in payload["state_dict"].items()}
    config = dict(payload["config"])
    if max_downscale is not None:
        if max_downscale != 0 and max_downscale < 1:
            raise CheckpointError(f"max_downscale must be 0 (no limit) or at least 1, got {max_downscale}")
        config["max_downscale"] = float(max_downscale)
    if fov_diameter is not None:
        if fov_diameter < 32:
            raise CheckpointError(f"fov_diameter must be at least 32 pixels, got {fov_diameter}")
        config["fov_diameter"] = int(fov_diameter)
    if disc_min_probability is not None:
        if not 0 < disc_min_probability < 1:
            raise CheckpointError(f"disc_min_probability must be between 0 and 1, got {disc_min_probability}")
        config["disc_min_probability"] = float(disc_min_probability)
    return state, config
