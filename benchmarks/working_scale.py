"""Scores against the working scale: how wide the FOV is made before the network sees it.

    python benchmarks/working_scale.py --dataset hrf --split training --diameters 540,960,1440
    python benchmarks/working_scale.py --model av-fusion --dataset hrf-av --split training

Runs `retinaseg eval`'s scoring (the one metric implementation) once per working FOV diameter, overriding
what --max-downscale would choose, and prints F1, AUC-ROC and Acc for each (for A/V models: class-weighted
F1 and AUC-ROC, and A/V accuracy). Choose the scale on a training split; the test split is for reporting.
"""
from __future__ import annotations

import argparse
import os

import torch

from retinaseg.evaluation.evaluate import HEADLINE, evaluate
from retinaseg.inference.runner import RunConfig, Runner
from retinaseg.models import load_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--dataset", default="hrf")
    parser.add_argument("--split", default="training")
    parser.add_argument("--model", default="vesselnet")
    parser.add_argument("--diameters", default="540,960,1440", help="working FOV diameters, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.model} on {args.dataset} {args.split}, scored at raw size inside the FOV")
    for row, diameter in enumerate(int(d) for d in args.diameters.split(",")):
        model = load_model(args.model)
        model.config["fov_diameter"] = diameter  # every photo's FOV becomes this wide
        runner = Runner(model, RunConfig(device="cpu", max_downscale=0))
        evaluation = evaluate(args.dataset, args.data_root, args.split, runner=runner)
        columns = HEADLINE[evaluation.task]  # the task is known once a model meets the data
        if row == 0:
            print(f"{'FOV px':>8}" + "".join(f"{name:>10}" for name in columns))
        print(f"{diameter:>8}" + "".join(f"{evaluation.summary[key][0]:>10.4f}" for key in columns.values()),
              flush=True)


if __name__ == "__main__":
    main()
