"""Flip TTA on or off (or, with --vessel-model, the vessel gate off or on), scored on the images a training run
held out for validation.

    python benchmarks/held_out_tta.py --model av-fusion --datasets drive-av,les-av,hrf-av --seed 1
    python benchmarks/held_out_tta.py --model av-fusion --datasets hrf-av --seed 0 --vessel-model vesselnet

The held-out images are drawn exactly as `retinaseg train` drew them (same datasets, --seed, --val-fraction),
so the comparison never touches a test split. Prints each image's headline score both ways, then the means
over all held-out images (`retinaseg eval`'s scoring, inside the FOV, at raw size).
"""
from __future__ import annotations

import argparse
import os

import torch

from retinaseg.datasets import load_samples
from retinaseg.evaluation.evaluate import HEADLINE, evaluate
from retinaseg.evaluation.metrics import summarize
from retinaseg.inference.runner import RunConfig, Runner
from retinaseg.models import load_model
from retinaseg.training.engine import split_validation


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--model", default="av-fusion")
    parser.add_argument("--weights", default=None, help="default: the model's shipped weights")
    parser.add_argument("--datasets", default="drive-av,les-av,hrf-av", help="the training run's -d")
    parser.add_argument("--seed", type=int, default=1, help="the training run's --seed")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="the training run's --val-fraction")
    parser.add_argument("--vessel-model", default=None,
                        help="compare without / with this binary model gating the vessels (TTA: the model's default)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.vessel_model:
        gate = load_model(args.vessel_model)
        runners = {on: Runner(load_model(args.model, args.weights), RunConfig(device="cpu"),
                              vessel_model=gate if on else None) for on in (False, True)}
        compared = (f"without / with --vessel-model {args.vessel_model}", "without", "with")
    else:
        runners = {tta: Runner(load_model(args.model, args.weights), RunConfig(device="cpu", tta=tta))
                   for tta in (False, True)}
        compared = ("without / with flip TTA", "--no-tta", "--tta")
    rows = {tta: [] for tta in runners}
    task = None
    for dataset in args.datasets.split(","):
        _, samples = load_samples(dataset, args.data_root, "training")
        _, held = split_validation(samples, args.val_fraction, args.seed)
        for tta, runner in runners.items():
            evaluation = evaluate(dataset, args.data_root, "training", runner=runner, ids={s.id for s in held})
            rows[tta] += [{"dataset": dataset, **row} for row in evaluation.rows]
            task = evaluation.task
    first, key = next(iter(HEADLINE[task].items()))
    print(f"{args.model} on the images held out of training (seed {args.seed}, {args.val_fraction:g} of "
          f"{args.datasets}); {first} {compared[0]}")
    for plain, flipped in zip(rows[False], rows[True]):
        print(f"  {plain['dataset']:<10} {plain['id']:<14} {plain[key]:.4f}  {flipped[key]:.4f}")
    print(f"{'mean over ' + str(len(rows[False])) + ' images':<26}" + "".join(f"{t:>10}" for t in HEADLINE[task]))
    for tta, label in ((False, compared[1]), (True, compared[2])):
        summary = summarize([{k: v for k, v in row.items() if k != "dataset"} for row in rows[tta]])
        print(f"  {label:<24}" + "".join(f"{summary[k][0]:>10.4f}" for k in HEADLINE[task].values()))


if __name__ == "__main__":
    main()
