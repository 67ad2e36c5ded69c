"""weights/manifest.json: how each shipped weight file was made and what it scored.

    python -m retinaseg.manifest pack runs/linkseg/best.pt weights/linkseg.pt --half
    python -m retinaseg.manifest add weights/vesselnet.pt --run runs/vesselnet \\
        --command "retinaseg train ..." --eval drive=drive.json --eval hrf=hrf.json
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from retinaseg.checkpoint import load_checkpoint, pack_checkpoint, sha256, weights_dir
from retinaseg.io.atomic import write_json


def manifest_path() -> Path:
    return weights_dir() / "manifest.json"


def read_manifest() -> dict:
    path = manifest_path()
    return json.loads(path.read_text()) if path.exists() else {}


def add_entry(weights: Path, run_dir: Path, command: str, evaluations: dict, notes: str = "") -> dict:
    """Record a weight file: sha256, model and settings, datasets, epochs and wall time (from the run's
    metrics.csv), the exact training command, and the `retinaseg eval --json` results given."""
    checkpoint = load_checkpoint(weights)
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    training = json.loads((run_dir / "config.json").read_text())
    entry = {
        "sha256": sha256(weights),
        "model": checkpoint["config"]["model"],
        "config": checkpoint["config"],
        "datasets": training["datasets"],
        "splits": "training splits only; validation held out from them",
        "loss": training["loss"],
        "epochs": len(rows),
        "best_epoch": checkpoint.get("info", {}).get("epoch"),
        "iterations_per_epoch": training["iterations"],
        "wall_time_minutes": round(sum(float(r["seconds"]) for r in rows) / 60, 1),
        "command": command,
        "metrics": {name: {"command": result.get("command", ""), "mean": result["mean"], "std": result["std"]}
                    for name, result in evaluations.items()},
        "notes": notes,
    }
    manifest = read_manifest()
    manifest[Path(weights).name] = entry
    write_json(manifest_path(), manifest)
    return entry


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m retinaseg.manifest")
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="add or update a weight file's entry")
    add.add_argument("weights", type=Path)
    add.add_argument("--run", type=Path, required=True, help="the training run folder")
    add.add_argument("--command", required=True, help="the exact training command")
    add.add_argument("--eval", action="append", default=[], metavar="NAME=EVAL.json",
                     help="a `retinaseg eval --json` output; its 'command' key, if any, is kept")
    add.add_argument("--notes", default="")
    pack = sub.add_parser("pack", help="copy a run's best.pt for shipping, without optimiser state")
    pack.add_argument("source", type=Path)
    pack.add_argument("destination", type=Path)
    pack.add_argument("--half", action="store_true", help="store kernels as float16 (half the size)")
    args = parser.parse_args(argv)
    if args.action == "pack":
        pack_checkpoint(args.source, args.destination, half=args.half)
        print(f"{args.destination}: {args.destination.stat().st_size / 1e6:.1f} MB")
        return
    evaluations = {}
    for item in args.eval:
        name, path = item.split("=", 1)
        evaluations[name] = json.loads(Path(path).read_text())
    entry = add_entry(args.weights, args.run, args.command, evaluations, args.notes)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
