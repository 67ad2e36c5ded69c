"""Scores against the working scale: how wide the FOV is made before the network sees it.

    python benchmarks/working_scale.py --dataset hrf --split training --diameters 540,960,1440
    python benchmarks/working_scale.py --model av-fusion --dataset hrf-av --split training
    python benchmarks/working_scale.py --model av-fusion --dataset hrf-av --weights weights/av-fusion-hrf-av.pt \\
        --held-out-seed 1 --max-downscales 4.3,5.0,5.7

Runs `retinaseg eval`'s scoring (the one metric implementation) once per setting, and prints F1, AUC-ROC and
Acc for each (for A/V models: class-weighted F1 and AUC-ROC, and A/V accuracy). --diameters fixes the working
FOV diameter of every photo; --max-downscales instead caps the shrinking as `--max-downscale` does, with the
model's own FOV scale. --held-out-seed scores only the images a training run with that --seed (and
--val-fraction) held out for validation. Choose the scale on training or held-out images; the test split is
for reporting.
"""
from __future__ import annotations

import argparse
import os

import torch

from retinaseg.evaluation.evaluate import HEADLINE, evaluate
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.models import load_model
from retinaseg.training.engine import held_out_ids


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--dataset", default="hrf")
    parser.add_argument("--split", default="training")
    parser.add_argument("--model", default="vesselnet")
    parser.add_argument("--weights", default=None, help="default: the model's shipped weights")
    scales = parser.add_mutually_exclusive_group()
    scales.add_argument("--diameters", default="540,960,1440", help="working FOV diameters, comma-separated")
    scales.add_argument("--max-downscales", default=None, help="caps on shrinking, comma-separated")
    parser.add_argument("--held-out-seed", type=int, default=None,
                        help="score only the training images held out by a run with this --split-seed (or --seed)")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="that run's --val-fraction")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ids = None
    if args.held_out_seed is not None:
        if args.split != "training":
            parser.error("--held-out-seed picks training images; use --split training")
        ids = held_out_ids(args.dataset, args.data_root, args.val_fraction, args.held_out_seed)
    by_cap = args.max_downscales is not None
    settings = [float(v) for v in (args.max_downscales if by_cap else args.diameters).split(",")]
    where = f"the {len(ids)} images held out by seed {args.held_out_seed}" if ids else "every image"
    print(f"{args.model} ({args.weights or 'shipped weights'}) on {args.dataset} {args.split}, {where}, "
          "scored at raw size inside the FOV")
    for row, value in enumerate(settings):
        model = load_model(args.model, args.weights)
        if by_cap:
            config = SegmentConfig(device="cpu", max_downscale=value)
        else:
            model.config["fov_diameter"] = int(value)  # every photo's FOV becomes this wide
            config = SegmentConfig(device="cpu", max_downscale=0)
        evaluation = evaluate(args.dataset, args.data_root, args.split, segmenter=Segmenter(model, config), ids=ids)
        columns = HEADLINE[evaluation.task]  # the task is known once a model meets the data
        label = "max down" if by_cap else "FOV px"
        if row == 0:
            print(f"{label:>8}" + "".join(f"{name:>10}" for name in columns))
        print(f"{value:>8g}" + "".join(f"{evaluation.summary[key][0]:>10.4f}" for key in columns.values()),
              flush=True)


if __name__ == "__main__":
    main()
