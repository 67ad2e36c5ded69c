"""The training loop shared by every model: patches or whole images, augmentation, validation F1 inside the
FOV, best/last checkpoints, resume, LR schedule, early stopping, AMP on CUDA, an optional moving average of
the weights.

A model whose training differs (the A/V fusion GAN) brings its own step through ModelSpec.training_step:
a factory that returns a TrainingStep (below); the engine does everything else. train() runs in phases:
check the settings, build the run, restore it (--resume), then epochs of steps, each ending in checkpoints.
Under torchrun each process runs all of it on its part of the batch (training/distributed.py); only the first
writes.
"""
from __future__ import annotations

import csv
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from retinaseg import __version__, av
from retinaseg.checkpoint import load_checkpoint, save_checkpoint
from retinaseg.io.atomic import atomic_path
from retinaseg.datasets import load_samples
from retinaseg.errors import OptionError, RetinasegError
from retinaseg.evaluation.metrics import confusion, scores_from_confusion
from retinaseg.inference import VESSEL_THRESHOLD
from retinaseg.inference.sliding_window import SlidingWindow, sliding_window_inference
from retinaseg.models import (build_module, load_model, member_count, model_config, resolve_device,
                              to_probabilities)
from retinaseg.preprocess import standardize
from retinaseg.registry import BINARY_TASKS, check_options, get_loss, get_model
from retinaseg.training.config import RESUMABLE, TrainConfig
from retinaseg.training.data import Augmentation, PatchSampler, load_training_image
from retinaseg.training.distributed import World, joined


class TrainingStep(Protocol):
    """What the engine calls for one optimiser step; ModelSpec.training_step makes one with
    factory(model=..., loss=..., lr=..., weight_decay=..., device=...). SupervisedStep is the default."""

    optimizers: list  # their learning rates follow the engine's schedule

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, fov: torch.Tensor) -> dict:
        """One step on a batch; returns the losses to log (a "loss" key at least)."""

    def state_dict(self) -> dict:
        """What --resume needs to go on exactly (optimisers, scalers)."""

    def load_state_dict(self, state: dict) -> None:
        """Restores state_dict()'s result."""


class SupervisedStep:
    """One optimiser step on (images, targets, fov): the loss plugin's value, AdamW, AMP on CUDA."""

    def __init__(self, model, loss, lr, weight_decay, device):
        self.model, self.loss, self.device = model, loss, device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.optimizers = [self.optimizer]
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")

    def __call__(self, images, targets, fov) -> dict:
        self.model.train()
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            logits = self.model(images)
        loss = self.loss(logits.float(), targets, fov)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": float(loss.detach())}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 2% of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def split_validation(samples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(training, validation): the held-out share is drawn by seed, so a run's validation images can be named
    again later (benchmarks/held_out_tta.py scores them)."""
    if fraction <= 0 or len(samples) < 2:
        return samples, []
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    count = max(1, round(len(samples) * fraction))
    val = sorted(order[:count])
    return [s for i, s in enumerate(samples) if i not in val], [samples[i] for i in val]


def held_out_ids(dataset: str, data_root, fraction: float, seed: int) -> set:
    """Ids of the training images that a run with this --val-fraction and --seed held out of `dataset`."""
    _, samples = load_samples(dataset, data_root, "training")
    return {s.id for s in split_validation(samples, fraction, seed)[1]}


def validate(model, images, device, size_divisor, world: World = World()) -> float:
    """Mean F1 inside the FOV at threshold 0.5 (vessel) or mean artery/vein F1 on the A/V map (av.class_map). Several
    training processes score each image once, each its share, and agree on the mean."""
    model.eval()
    window = SlidingWindow(size_divisor=size_divisor, tile_size=max(size_divisor, 512 // size_divisor * size_divisor))
    scores = []

    @torch.inference_mode()
    def predictor(batch):
        return to_probabilities(model(batch.to(device)).float())

    for item in images[world.rank::world.size]:
        prob = sliding_window_inference(standardize(item.image, item.fov), predictor, window)
        fov = item.fov.numpy()
        if prob.shape[0] == 1:
            tp_fp_fn_tn = confusion((prob[0] >= VESSEL_THRESHOLD).numpy()[fov], (item.target[0] >= 0.5).numpy()[fov])
            scores.append(scores_from_confusion(*tp_fp_fn_tn)["f1"])
        else:
            pred, truth = av.class_map(prob.numpy())[fov], item.target.argmax(0).numpy()[fov]
            per_class = [scores_from_confusion(*confusion(pred == c, truth == c))["f1"] for c in (1, 2)]
            scores.append(float(np.nanmean(per_class)))
    scored = [score for score in scores if not math.isnan(score)]
    total, count = world.sum([sum(scored), len(scored)])
    return total / count if count else float("nan")


def _load_images(config: TrainConfig, task: str, model_cfg: dict, classes: int, progress: bool):
    train, val = [], []
    split_seed = config.seed if config.split_seed is None else config.split_seed
    for name in config.datasets:
        spec, samples = load_samples(name, config.data_root, "training", **config.dataset_options)
        if spec.task != task and not (spec.task == "av" and task == "vessel"):
            raise RetinasegError(f"dataset {name} has {spec.task} labels but model {config.model} is a {task} "
                                 f"model")
        fit, held = split_validation(samples, config.val_fraction, split_seed)
        train += [(s, name) for s in fit]
        val += [(s, name) for s in held]
    prepared = []
    for part in (train, val):
        items = []
        for sample, name in tqdm(part, desc="reading images", unit="img", disable=not progress, leave=False):
            # a run resumed from before training applied the cap has none in its config: keep it uncapped
            items.append(load_training_image(sample, task, model_cfg["fov_diameter"], classes,
                                             model_cfg.get("max_downscale", 0), dataset=name))
        prepared.append(items)
    return prepared


@dataclass
class _Run:
    """What a training run works with, built once."""

    spec: object
    world: World
    device: torch.device
    model_cfg: dict
    model: torch.nn.Module
    step: TrainingStep
    averaged: Optional[AveragedModel]  # the moving average of the weights, when --ema is on
    generator: torch.Generator
    base_lrs: list  # each optimiser's groups' peak rates, which the schedule scales
    start_epoch: int = 1
    best: float = -1.0

    @property
    def kept(self) -> torch.nn.Module:
        """What validation scores and best.pt holds: the average, not the last step's weights, when there is one."""
        return self.averaged.module if self.averaged is not None else self.model


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train; returns a summary dict (best_val_f1 is None when no images were held out). Writes best.pt,
    last.pt, metrics.csv and config.json to config.out."""
    with joined(resolve_device(config.device)) as world:
        return _train(config, resume, progress and world.is_main, world)


def _train(config: TrainConfig, resume: bool, progress: bool, world: World) -> dict:
    out = Path(config.out)
    config, loss_options = _check(config, resume, world)
    run = _build(config, loss_options, resume, world)
    if resume:
        _restore(run, config, out / "last.pt")
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _keep_rows_up_to(out / "metrics.csv", run.start_epoch - 1)
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    train_images, val_images = _load_images(config, run.spec.task, run.model_cfg, run.spec.classes, progress)
    if not train_images:
        raise RetinasegError("no training images")
    sampler = PatchSampler(train_images, config.patch_size,
                           _augmentation(config) if config.augment else Augmentation.none(),
                           config.vessel_fraction, whole_image=config.sampling == "whole", device=run.device,
                           balance_datasets=config.balance_datasets)
    started, epochs_without_gain, last_epoch = time.time(), 0, run.start_epoch - 1
    for epoch in range(run.start_epoch, config.epochs + 1):
        epoch_start = time.time()
        row = {"epoch": epoch, **_train_epoch(run, sampler, config, epoch, progress)}
        score = validate(run.kept, val_images, run.device, run.model_cfg["size_divisor"], run.world) \
            if val_images else float("nan")
        row.update(val_f1=score, seconds=round(time.time() - epoch_start, 1))
        improved = bool(val_images) and score > run.best
        if improved:
            run.best, epochs_without_gain = score, 0
        else:
            epochs_without_gain += 1
        _checkpoint(run, config, out, epoch, row, save_best=improved or not val_images)
        last_epoch = epoch
        if config.patience and epochs_without_gain >= config.patience:  # every process has the same score
            if world.is_main:
                tqdm.write(f"early stop: no validation gain in {config.patience} epochs")
            break
    return {"best_val_f1": run.best if val_images else None, "epochs": last_epoch,
            "seconds": round(time.time() - started, 1), "writer": world.is_main}


def _check(config: TrainConfig, resume: bool, world: World) -> tuple[TrainConfig, dict]:
    """The settings made whole (the default loss) and checked against the plugins and the run folder, before
    anything is built. Ranges of numbers are checked where they enter (TrainConfig's options)."""
    out = Path(config.out)
    spec = get_model(config.model)
    binary = spec.task in BINARY_TASKS
    config = replace(config, loss=config.loss or ("bce-dice" if binary else "ce"))
    loss_spec = get_loss(config.loss)
    if loss_spec.task != ("vessel" if binary else "av"):
        raise RetinasegError(f"loss {loss_spec.name} is for {'class' if loss_spec.task == 'av' else 'binary'} "
                             f"targets but model {spec.name} predicts {'a binary map' if binary else 'classes'}")
    if config.sampling not in ("patch", "whole"):
        raise OptionError(f"sampling must be 'patch' or 'whole'; got {config.sampling!r}")
    loss_options = check_options("loss", loss_spec.name, loss_spec.build, config.loss_options)
    world.share(config.batch_size)
    if world.distributed and spec.training_step is not None:
        raise RetinasegError(f"model {spec.name} brings its own training step, which does not average gradients "
                             f"over processes: train it in one process, without torchrun")
    if resume and not (out / "last.pt").is_file():
        raise RetinasegError(f"--resume: no {out / 'last.pt'} to resume from")
    if not resume and (out / "last.pt").exists():
        raise RetinasegError(f"{out} already holds a training run; use --resume to continue it or choose "
                             f"another --out")
    return config, loss_options


def _build(config: TrainConfig, loss_options: dict, resume: bool, world: World) -> _Run:
    """The model (from --init-weights when given), its training step and the moving average. The weights start
    the same in every process (one seed); each draws its own patches."""
    spec = get_model(config.model)
    device = world.device(resolve_device(config.device))
    torch.manual_seed(config.seed)
    model_cfg = model_config(spec, config.model_options, config.fov_diameter)
    # trained at the scale it will run at: the file records the cap, and the runner applies it
    model_cfg["max_downscale"] = float(spec.max_downscale if config.max_downscale is None else config.max_downscale)
    model = build_module(spec, model_cfg)
    if config.init_weights:
        _start_from(model, spec, config, model_cfg, note=not resume and world.is_main)
    model.to(device)
    factory = spec.training_step or SupervisedStep
    step = factory(model=world.wrap(model, device), loss=get_loss(config.loss).build(**loss_options), lr=config.lr,
                   weight_decay=config.weight_decay, device=device)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True) \
        if config.ema else None
    base_lrs = [[group["lr"] for group in opt.param_groups] for opt in step.optimizers]
    return _Run(spec, world, device, model_cfg, model, step, averaged,
                torch.Generator().manual_seed(world.seed(config.seed)), base_lrs)


def _start_from(model, spec, config: TrainConfig, model_cfg: dict, note: bool) -> None:
    start = load_model(spec.name, config.init_weights)
    members = member_count(start.config)
    if members > 1:
        raise RetinasegError(f"--init-weights {config.init_weights}: an ensemble of {members} trainings; "
                             f"fine-tune from one of its members")
    model.load_state_dict(start.module.state_dict())
    if start.fov_diameter != model_cfg["fov_diameter"] and note:
        # a packed file may run at another scale than it trained at (the default: 540 trained, 640 run)
        tqdm.write(f"note: {config.init_weights} runs with the FOV {start.fov_diameter} px across; this run "
                   f"trains, and its files run, at {model_cfg['fov_diameter']} px (--fov-diameter). To run a "
                   f"result at {start.fov_diameter} px: retinaseg weights pack {config.out}/best.pt OUT.pt "
                   f"--fov-diameter {start.fov_diameter}", file=sys.stderr)


def _restore(run: _Run, config: TrainConfig, last: Path) -> None:
    """Continues from last.pt: its settings must be this run's, but for RESUMABLE ones (--epochs may grow)."""
    state = load_checkpoint(last)
    if state["config"]["model"] != run.spec.name:
        raise RetinasegError(f"{last} is a {state['config']['model']} run, not {run.spec.name}")
    saved = state["training"].get("config")  # absent in runs saved before settings were recorded
    if saved is not None:
        ours = json.loads(json.dumps(asdict(config)))  # tuples as lists, as the checkpoint stores them
        differ = [key for key in ours if key not in RESUMABLE and saved.get(key) != ours[key]]
        if differ:
            listed = "; ".join(f"{key} was {saved.get(key)!r}, now {ours[key]!r}" for key in differ)
            raise RetinasegError(f"{last}: --resume goes on with the run's own settings, and these differ: "
                                 f"{listed}")
    if (run.averaged is None) != ("averaged" not in state["training"]):
        raise RetinasegError(f"{last} was trained {'with' if run.averaged is None else 'without'} a moving "
                             f"average of the weights: resume with the run's own --ema setting")
    run.model_cfg = state["config"]
    run.model.load_state_dict(state["state_dict"])
    run.step.load_state_dict(state["training"]["step"])
    if run.averaged is not None:
        run.averaged.load_state_dict(state["training"]["averaged"])
    # one generator per process (runs saved before torchrun support kept one)
    generators = state["training"].get("generators") or [state["training"]["generator"]]
    if len(generators) != run.world.size:
        raise RetinasegError(f"{last} was trained in {len(generators)} process(es), and this is {run.world.size}: "
                             f"resume it with torchrun --nproc_per_node {len(generators)}"
                             if len(generators) > 1 else f"{last} was trained in one process: resume it without "
                                                         f"torchrun")
    run.generator.set_state(generators[run.world.rank])
    run.start_epoch, run.best = state["training"]["epoch"] + 1, state["training"]["best"]


def _train_epoch(run: _Run, sampler: PatchSampler, config: TrainConfig, epoch: int, progress: bool) -> dict:
    """config.iterations steps on the learning-rate schedule; returns the epoch's mean losses and last rate."""
    total, warmup = config.epochs * config.iterations, config.warmup_epochs * config.iterations
    sums, factor = {}, 1.0
    share = run.world.share(config.batch_size)
    bar = tqdm(range(config.iterations), desc=f"epoch {epoch}/{config.epochs}", unit="it", disable=not progress,
               leave=False)
    for i in bar:
        factor = lr_factor((epoch - 1) * config.iterations + i, total, warmup)
        for opt, lrs in zip(run.step.optimizers, run.base_lrs):
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr * factor
        images, targets, fov = sampler.sample(share, run.generator)
        stats = run.step(images, targets, fov)
        if run.averaged is not None:
            run.averaged.update_parameters(run.model)
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value
        bar.set_postfix(loss=f"{stats.get('loss', float('nan')):.4f}")
    run.world.average_buffers(run.model)
    if run.averaged is not None:
        run.world.average_buffers(run.averaged)
    keys = sorted(sums)
    means = [total / (config.iterations * run.world.size) for total in run.world.sum([sums[k] for k in keys])]
    return {**dict(zip(keys, means)), "lr": run.base_lrs[0][0] * factor}


def _checkpoint(run: _Run, config: TrainConfig, out: Path, epoch: int, row: dict, save_best: bool) -> None:
    """best.pt when it improved, the metrics row, then last.pt with all --resume needs; one line per epoch. Every
    process calls it (their generators are saved); the first writes."""
    generators = run.world.gather(run.generator.get_state())
    if not run.world.is_main:
        return
    info = {"epoch": epoch, "best_val_f1": run.best, "datasets": config.datasets, "loss": config.loss,
            "global_batch_size": config.batch_size, "processes": run.world.size, "lr": config.lr,
            "retinaseg": __version__}
    if save_best:
        save_checkpoint(out / "best.pt", run.kept.state_dict(), run.model_cfg, info=info)
    # the row goes first: a kill between the two leaves a row that resume drops, never a missing one
    _append_row(out / "metrics.csv", row)
    progress_state = {"step": run.step.state_dict(), "generators": generators, "epoch": epoch,
                      "best": run.best, "config": json.loads(json.dumps(asdict(config)))}
    if run.averaged is not None:
        progress_state["averaged"] = run.averaged.state_dict()
    save_checkpoint(out / "last.pt", run.model.state_dict(), run.model_cfg, info=info, training=progress_state)
    tqdm.write(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in row.items() if k != "epoch"))


def _augmentation(config: TrainConfig) -> Augmentation:
    """The run's augmentation: the defaults, with the options the command line set."""
    chosen = dict(elastic=config.elastic, jpeg=config.jpeg, grey=config.grey, blur=config.blur, noise=config.noise)
    if config.scale_range is not None:
        chosen["scale"] = tuple(config.scale_range)
    return Augmentation(**chosen)


def _keep_rows_up_to(path: Path, epoch: int) -> None:
    """Drop metric rows of epochs after the checkpoint being resumed (written just before a kill)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if int(r["epoch"]) <= epoch]
    if len(kept) == len(rows):
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)


def _append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
