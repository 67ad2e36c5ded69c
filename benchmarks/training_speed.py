"""Training step rate, and how much of it the patch sampler takes, on CPU or GPU.

    python benchmarks/training_speed.py                                # vesselnet, batch 8, 128 px, CPU
    python benchmarks/training_speed.py --device cuda --batch-size 32 --patch-size 192 --width 24

Prints steps per second of the whole training step (sample, forward, loss, backward, AdamW; AMP on CUDA) and
batches per second of the sampler alone, in the same run. When the two are close, the sampler limits training:
on a GPU that is the number to watch. The images are random tensors at the working-scale sizes of a DRIVE
(584x565), an LES-AV (540x600) and an HRF-AV (667x1000) photo, so no data set is needed.
"""
from __future__ import annotations

import argparse
import time

import torch

from retinaseg.models import build_module, model_config, resolve_device
from retinaseg.registry import get_loss, get_model
from retinaseg.training.data import Augmentation, PatchSampler, TrainingImage
from retinaseg.training.engine import SupervisedStep

WORKING_SIZES = [(584, 565), (540, 600), (667, 1000)]


def _images(count: int, g: torch.Generator) -> list[TrainingImage]:
    images = []
    for i in range(count):
        height, width = WORKING_SIZES[i % len(WORKING_SIZES)]
        target = (torch.rand(1, height, width, generator=g) > 0.88).float()
        images.append(TrainingImage(f"random{i}", torch.rand(3, height, width, generator=g), target,
                                    torch.ones(height, width, dtype=torch.bool),
                                    torch.nonzero(target.flatten()).flatten(), torch.arange(height * width),
                                    torch.rand(3, 4096, generator=g)))
    return images


def _rate(work, steps: int, device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(3):  # warm-up: allocator, cuDNN algorithm choice
        work()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        work()
    sync()
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vesselnet")
    parser.add_argument("--width", type=int, default=None, help="model width option (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda[:N] on a GPU machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    spec = get_model(args.model)
    options = {} if args.width is None else {"width": args.width}
    model = build_module(spec, model_config(spec, options, None)).to(device)
    step = SupervisedStep(model, get_loss("bce-dice").build(), 2e-3, 1e-4, device)
    sampler = PatchSampler(_images(9, g), args.patch_size, Augmentation(), device=device)
    sampled = _rate(lambda: sampler.sample(args.batch_size, g), args.steps, device)
    trained = _rate(lambda: step(*sampler.sample(args.batch_size, g)), args.steps, device)
    print(f"{args.model} {options or ''} batch {args.batch_size} x {args.patch_size} px on {device}, "
          f"{args.threads} CPU threads")
    print(f"  sampler alone   {sampled:8.1f} batches/s")
    print(f"  training step   {trained:8.2f} steps/s ({args.batch_size * trained:.0f} patches/s)")


if __name__ == "__main__":
    main()
