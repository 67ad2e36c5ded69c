"""TTA (the model's test-time views) on or off (or, with --vessel-model, the vessel gate off or on; with
--av-graph, the vessel graph's one-type-per-vessel step off or on), scored on the images a training run held out
for validation.

    python benchmarks/held_out_tta.py --model av-fusion --datasets drive-av,les-av,hrf-av --seed 1
    python benchmarks/held_out_tta.py --model av-fusion --seed 1 --views h   # the model's views / plain + mirror
    python benchmarks/held_out_tta.py --model av-fusion --datasets hrf-av --seed 0 --vessel-model vesselnet
    python benchmarks/held_out_tta.py --model av-fusion --datasets drive-av,les-av,hrf-av --seed 1 --av-graph
    python benchmarks/held_out_tta.py ... --av-graph --gate vesselnet     # the graph step, vessels from vesselnet
    python benchmarks/held_out_tta.py --model av-fusion --seed 1 --vessel-first   # A/V maps: arg-max / vessel first
    python benchmarks/held_out_tta.py --model disc --datasets idrid-od --seed 0 --disc-grow   # the disc grown or not
    python benchmarks/held_out_tta.py --model disc --datasets idrid-od --seed 0 --disc-open   # opened or not

The held-out images are drawn exactly as `retinaseg train` drew them (same datasets, --seed, --val-fraction),
so the comparison never touches a test split. Prints each image's headline score both ways, then the means
over all held-out images (`retinaseg eval`'s scoring, inside the FOV, at raw size).
"""
from __future__ import annotations

import argparse
import os

import torch

from retinaseg import av, disc
from retinaseg.evaluation.evaluate import HEADLINE, evaluate
from retinaseg.evaluation.metrics import summarize
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.inference.views import PLAIN, View
from retinaseg.models import load_model
from retinaseg.training.engine import held_out_ids


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--model", default="av-fusion")
    parser.add_argument("--weights", default=None, help="default: the model's shipped weights")
    parser.add_argument("--datasets", default="drive-av,les-av,hrf-av", help="the training run's -d")
    parser.add_argument("--seed", type=int, default=1,
                        help="the training run's --split-seed, or its --seed if it had none")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="the training run's --val-fraction")
    parser.add_argument("--vessel-model", default=None,
                        help="compare without / with this binary model gating the vessels (TTA: the model's default)")
    parser.add_argument("--av-graph", action="store_true", help="compare without / with --av-graph")
    parser.add_argument("--gate", default=None, help="with --av-graph: both sides use this --vessel-model")
    parser.add_argument("--vessel-first", action="store_true",
                        help="compare the A/V map as the arg-max / decided vessel first (av.class_map)")
    parser.add_argument("--disc-grow", action="store_true",
                        help="compare the disc as the blob at 0.5 / grown to its faint rim (disc.GROW_TO, 0.25)")
    parser.add_argument("--disc-open", action="store_true",
                        help="compare the disc as shipped / opened to its round body (disc.OPEN_SHARE 0.25)")
    parser.add_argument("--views", default=None, metavar="FLIPS",
                        help="compare TTA with the model's views / with the photo and these flips at the working "
                             "scale (comma-separated: h, v, hv)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grown = disc.GROW_TO or 0.25  # the shipped rim threshold (0.25 when growing is off, the variant it was)
    opened_share = 0.25  # the variant's opening, a share of the disc's diameter (docs/experiments.md)
    if args.av_graph:
        gate = load_model(args.gate) if args.gate else None
        runners = {on: Segmenter(load_model(args.model, args.weights), SegmentConfig(device="cpu", av_graph=on),
                                 vessel_model=gate) for on in (False, True)}
        what, labels = "without / with --av-graph", {False: "--no-av-graph", True: "--av-graph"}
    elif args.vessel_model:
        gate = load_model(args.vessel_model)
        runners = {on: Segmenter(load_model(args.model, args.weights), SegmentConfig(device="cpu"),
                              vessel_model=gate if on else None) for on in (False, True)}
        what, labels = f"without / with --vessel-model {args.vessel_model}", {False: "without", True: "with"}
    elif args.vessel_first or args.disc_grow or args.disc_open:
        runner = Segmenter(load_model(args.model, args.weights), SegmentConfig(device="cpu"))
        runners = {False: runner, True: runner}
        if args.vessel_first:
            what, labels = "the A/V map as the arg-max / decided vessel first", {False: "arg-max", True: "vessel first"}
        elif args.disc_grow:
            what, labels = "the disc as the blob at 0.5 / grown to its rim", {False: "at 0.5", True: "grown"}
        else:
            what, labels = "the disc as shipped / opened to its round body", {False: "as shipped", True: "opened"}
    elif args.views:
        runners = {on: Segmenter(load_model(args.model, args.weights), SegmentConfig(device="cpu", tta=True))
                   for on in (False, True)}
        runners[True].views = (PLAIN,) + tuple(View(flip=flip) for flip in args.views.split(","))
        what = f"TTA with the model's views / with {', '.join(map(str, runners[True].views))}"
        labels = {False: f"{len(runners[False].views)} views", True: f"{len(runners[True].views)} views"}
    else:
        runners = {on: Segmenter(load_model(args.model, args.weights), SegmentConfig(device="cpu", tta=on))
                   for on in (False, True)}
        what, labels = "without / with TTA (the model's test-time views)", {False: "--no-tta", True: "--tta"}
    rows = {on: [] for on in runners}  # False: the setting off, True: on
    task = None
    for dataset in args.datasets.split(","):
        ids = held_out_ids(dataset, args.data_root, args.val_fraction, args.seed)
        for on, runner in runners.items():
            if args.vessel_first:
                av.VESSEL_FIRST = on
            if args.disc_grow:
                disc.GROW_TO = grown if on else None
            if args.disc_open:
                disc.OPEN_SHARE = opened_share if on else None
            evaluation = evaluate(dataset, args.data_root, "training", segmenter=runner, ids=ids)
            rows[on] += [{"dataset": dataset, **row} for row in evaluation.rows]
            task = evaluation.task
    first, key = next(iter(HEADLINE[task].items()))
    print(f"{args.model} on the images held out of training (seed {args.seed}, {args.val_fraction:g} of "
          f"{args.datasets}); {first} {what}")
    for off, on in zip(rows[False], rows[True]):
        print(f"  {off['dataset']:<10} {off['id']:<14} {off[key]:.4f}  {on[key]:.4f}")
    columns = {**HEADLINE[task], **({"vessel F1": "vessel_f1"} if task == "av" else {})}
    print(f"{'mean over ' + str(len(rows[False])) + ' images':<26}" + "".join(f"{t:>10}" for t in columns))
    for on, label in labels.items():
        summary = summarize([{k: v for k, v in row.items() if k != "dataset"} for row in rows[on]])
        print(f"  {label:<24}" + "".join(f"{summary[k][0]:>10.4f}" for k in columns.values()))
    print(f"{first} higher with the second on {sum(b[key] > a[key] for a, b in zip(rows[False], rows[True]))} of "
          f"{len(rows[False])} images")


if __name__ == "__main__":
    main()
