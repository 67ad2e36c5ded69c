"""What a training run is: TrainConfig, each setting declared once with the `retinaseg train` option that sets
it, so the command and the config cannot drift apart. No torch import: `retinaseg train --help` stays instant."""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Optional

import click

from retinaseg.options import check_device, check_max_downscale, parse_names, parse_options, parse_range

JPEG_BEST_QUALITY = 95  # the highest quality drawn: cameras' and archives' usual "high" setting
BLUR_LEAST_SIGMA = 0.5  # the softest Gaussian blur drawn when --blur is on (about the 3x3 binomial's)
# Settings a resumed run may change: how long it goes on, and where it runs and reads from
RESUMABLE = ("epochs", "patience", "device", "data_root", "out")


def _check_blur(ctx, param, value):
    if value and value < BLUR_LEAST_SIGMA:
        raise click.BadParameter(f"the largest Gaussian sigma in pixels is at least {BLUR_LEAST_SIGMA} (e.g. 1.2), "
                                 f"or 0 for the fixed 3x3 blur; got {value}")
    return value


def _option(*declarations, default=MISSING, factory=MISSING, **click_settings):
    """A TrainConfig field and the click option that sets it (None: not on the command line)."""
    metadata = {"option": (declarations, click_settings)} if declarations else {}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    model: str = _option("--model", "-m", required=True, help="Model to train (see `retinaseg plugins`).")
    datasets: list = _option("--dataset", "-d", required=True, multiple=True, callback=parse_names,
                             help="Dataset name, or several joined by commas (e.g. drive,les,hrf) or given as "
                                  "repeated -d. Only training splits are used.")
    data_root: str = _option("--data-root", required=True, type=click.Path(exists=True, file_okay=False),
                             help="Folder holding the datasets (e.g. ../shared/data; docs/data.md) or the dataset "
                                  "itself.")
    out: str = _option("--out", "-o", required=True, type=click.Path(file_okay=False),
                       help="Run folder: best.pt, last.pt, metrics.csv, config.json.")
    loss: Optional[str] = _option("--loss", "-l", default=None,
                                  help="Loss plugin. Default: bce-dice for vessel models, ce for A/V.")
    model_options: dict = _option("--model-option", factory=dict, multiple=True, metavar="KEY=VALUE",
                                  callback=parse_options, help="Architecture option, e.g. width=16. Repeatable.")
    loss_options: dict = _option("--loss-option", factory=dict, multiple=True, metavar="KEY=VALUE",
                                 callback=parse_options, help="Loss option, e.g. alpha=0.25. Repeatable.")
    dataset_options: dict = _option("--dataset-option", factory=dict, multiple=True, metavar="KEY=VALUE",
                                    callback=parse_options,
                                    help="Dataset option (the folder dataset: images=, labels=, fov=, "
                                         "label_suffix=). Repeatable.")
    epochs: int = _option("--epochs", default=50, type=click.IntRange(min=1),
                          help="Passes of --iterations steps; validation and checkpoints after each.")
    iterations: int = _option("--iterations", default=200, type=click.IntRange(min=1),
                              help="Optimiser steps per epoch.")
    batch_size: int = _option("--batch-size", default=8, type=click.IntRange(min=1),
                              help="Patches (or whole images) per optimiser step.")
    patch_size: int = _option("--patch-size", default=128, type=click.IntRange(min=32),
                              help="Patch side in working-scale pixels; a multiple of the model's size divisor.")
    sampling: str = _option("--sampling", default="patch", type=click.Choice(["patch", "whole"]),
                            help="patch: vessel-aware random patches (fast on CPU); whole: whole images.")
    vessel_fraction: float = 0.5  # share of patches centred on a vessel pixel
    lr: float = _option("--lr", default=2e-3, type=click.FloatRange(min=0, min_open=True),
                        help="Peak learning rate (warm-up, then cosine decay).")
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    val_fraction: float = _option("--val-fraction", default=0.15, type=click.FloatRange(0, 1, max_open=True),
                                  help="Share of training images held out for validation (best.pt is chosen on "
                                       "them).")
    patience: int = _option("--patience", default=0, type=click.IntRange(min=0),
                            help="Stop after this many epochs without validation gain (0: never).")
    seed: int = _option("--seed", default=0, help="Seeds the weights, the patches and (unless --split-seed is "
                                                  "given) which images are held out.")
    split_seed: Optional[int] = _option("--split-seed", default=None, type=int,
                                        help="Seeds only which images are held out, so runs with different --seed "
                                             "compare on the same images. Default: --seed.")
    fov_diameter: Optional[int] = _option("--fov-diameter", default=None, type=click.IntRange(min=32),
                                          help="Working scale: FOV width in pixels the photos are resized to. "
                                               "Default: the model's.")
    max_downscale: Optional[float] = _option("--max-downscale", default=None, type=float,
                                             callback=check_max_downscale,
                                             help="Cap on shrinking photos to the working scale, as in `retinaseg "
                                                  "run`; the weights file records it. 0: no limit. Default: the "
                                                  "model's.")
    augment: bool = _option("--augment/--no-augment", default=True,
                            help="Flips, rotations, zoom, colour and blur on the patches.")
    elastic: float = _option("--elastic", default=0.0, type=click.FloatRange(min=0), metavar="PIXELS",
                             help="Elastic deformation: a smooth random displacement of this std (working pixels, "
                                  "e.g. 3). 0: off.")
    jpeg: int = _option("--jpeg", default=0, type=click.IntRange(0, JPEG_BEST_QUALITY), metavar="QUALITY",
                        help=f"Re-encode half the patches as JPEG at a random quality from this (e.g. 40) to "
                             f"{JPEG_BEST_QUALITY}. 0: off.")
    grey: float = _option("--grey", default=0.0, type=click.FloatRange(0, 1), metavar="SHARE",
                          help="Turn this share of the patches grey (green channel or luminance), e.g. 0.3. 0: off.")
    scale_range: Optional[tuple] = _option("--scale-range", default=None, metavar="LOW,HIGH", callback=parse_range,
                                           help="Zoom each patch by a random LOW to HIGH factor (above 1, vessels "
                                                "look thinner). Default: 0.8,1.25.")
    blur: float = _option("--blur", default=0.0, type=click.FloatRange(min=0), callback=_check_blur,
                          metavar="SIGMA",
                          help=f"Blur the blurred 20% of patches by a Gaussian of random sigma from "
                               f"{BLUR_LEAST_SIGMA} to this (working pixels). 0: a fixed 3x3 blur.")
    noise: float = _option("--noise", default=0.0, type=click.FloatRange(0, 0.5), metavar="STD",
                           help="Add Gaussian noise of random std up to this (pixel values 0-1) to half the "
                                "patches. 0: off.")
    balance_datasets: bool = _option("--balance-datasets", default=False, is_flag=True,
                                     help="With several datasets, each gives the same share of patches. Default: "
                                          "each image does.")
    device: str = _option("--device", default="auto", callback=check_device,
                          help="auto (CUDA when present), cpu, cuda or cuda:N.")
    init_weights: Optional[str] = _option("--init-weights", default=None,
                                          type=click.Path(exists=True, dir_okay=False),
                                          help="Start from these weights (fine-tuning).")
    ema: float = _option("--ema", default=0.0, type=click.FloatRange(0, 1, max_open=True), metavar="DECAY",
                         help="Keep a moving average of the weights (decay per step, e.g. 0.999); validation "
                              "scores it and best.pt holds it. 0: off.")


def train_options(command):
    """Decorates a click command with an option for each TrainConfig field that has one, in field order."""
    for setting in reversed(fields(TrainConfig)):
        if "option" not in setting.metadata:
            continue
        declarations, settings = setting.metadata["option"]
        settings = dict(settings)
        if setting.default is not MISSING and "required" not in settings:
            settings.setdefault("default", setting.default)
            settings.setdefault("show_default", setting.default not in (None, False))
        command = click.option(*declarations, setting.name, **settings)(command)
    return command
