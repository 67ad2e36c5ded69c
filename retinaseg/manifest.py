"""weights/manifest.json: how each shipped weight file was made and what it scored.

    python -m retinaseg.manifest pack runs/linkseg/best.pt weights/linkseg.pt --half
    python -m retinaseg.manifest add weights/vesselnet.pt --run runs/vesselnet \\
        --command "retinaseg train ..." --eval drive=drive.json --eval hrf=hrf.json
    python -m retinaseg.manifest metric weights/vesselnet.pt --eval hrf=hrf.json
    python -m retinaseg.manifest pack weights/vesselnet.pt weights/vesselnet.pt --half --fov-diameter 640
    python -m retinaseg.manifest pack runs/a/best.pt runs/b/best.pt pair.pt --half   # an ensemble of the two

Re-packing a shipped file in place updates its entry; its metrics must then be measured again.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path

from retinaseg.checkpoint import load_checkpoint, pack_checkpoint, sha256, weights_dir
from retinaseg.errors import RetinasegError
from retinaseg.io.atomic import write_json
from retinaseg.models import pack_ensemble


def manifest_path() -> Path:
    return weights_dir() / "manifest.json"


def read_manifest() -> dict:
    path = manifest_path()
    return json.loads(path.read_text()) if path.exists() else {}


def _require_entry(manifest: dict, name: str) -> dict:
    if name not in manifest:
        raise SystemExit(f"Error: no manifest entry {name!r}; entries: {', '.join(sorted(manifest))}")
    return manifest[name]


def _starting_entry(manifest: dict, start: str) -> dict:
    """The entry of the weights a run started from: a manifest name, or a weights file recorded anywhere in the
    manifest (a retired file survives inside the entries fine-tuned from it), found by its sha256."""
    if start in manifest or not Path(start).is_file():
        return _require_entry(manifest, start)
    digest = sha256(start)
    pending = list(manifest.values())
    while pending:
        entry = pending.pop()
        if entry.get("sha256") == digest:
            return entry
        if "fine_tuned_from" in entry:
            pending.append(entry["fine_tuned_from"])
    raise SystemExit(f"Error: {start} is not recorded in the manifest (sha256 {digest[:12]}...)")


def _metric_entries(evaluations: dict) -> dict:
    return {name: {"command": result.get("command", ""), "mean": result["mean"], "std": result["std"]}
            for name, result in evaluations.items()}


def add_entry(weights: Path, run_dir: Path, command: str, evaluations: dict, notes: str = "",
              fine_tuned_from: str | None = None) -> dict:
    """Record a weight file: sha256, model and settings, datasets, epochs and wall time (from the run's
    metrics.csv), the exact training command, and the `retinaseg eval --json` results given.

    fine_tuned_from names the weights the run started from (`--init-weights`): a manifest entry, or a file the
    manifest records; that entry is kept inside this one, so the history and the total training time stay on
    record."""
    manifest = read_manifest()
    start = None if fine_tuned_from is None else _starting_entry(manifest, fine_tuned_from)
    checkpoint = load_checkpoint(weights)
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    training = json.loads((run_dir / "config.json").read_text())
    entry = {
        "sha256": sha256(weights),
        "model": checkpoint["config"]["model"],
        "config": checkpoint["config"],
        "datasets": training["datasets"],
        "splits": ("training splits only; validation held out from them" if training["val_fraction"] > 0
                   else "training splits only, every image (no validation split)"),
        "loss": training["loss"],
        "epochs": len(rows),
        "best_epoch": checkpoint.get("info", {}).get("epoch"),
        "iterations_per_epoch": training["iterations"],
        "wall_time_minutes": round(sum(float(r["seconds"]) for r in rows) / 60, 1),
        "command": command,
        "metrics": _metric_entries(evaluations),
        "notes": notes,
    }
    if start is not None:
        start = {k: v for k, v in start.items() if k != "metrics"}
        entry["fine_tuned_from"] = start
        entry["total_wall_time_minutes"] = round(
            entry["wall_time_minutes"] + start.get("total_wall_time_minutes", start["wall_time_minutes"]), 1)
    manifest[Path(weights).name] = entry
    write_json(manifest_path(), manifest)
    return entry


def set_metrics(weights: Path, evaluations: dict) -> dict:
    """Replace or add named metric results of an existing entry (e.g. after an inference default changed)."""
    manifest = read_manifest()
    entry = _require_entry(manifest, Path(weights).name)
    if sha256(weights) != entry["sha256"]:
        raise SystemExit(f"Error: {weights} does not match its manifest sha256; record it with `add`")
    entry["metrics"].update(_metric_entries(evaluations))
    write_json(manifest_path(), manifest)
    return entry


def pack_and_record(sources: list[Path], destination: Path, command: str, **options) -> str:
    """pack_checkpoint (models.pack_ensemble for several sources), keeping the manifest true. Re-packing a
    recorded file in place (to record a working scale, say) updates its entry: the new sha256 and config, the
    pack command appended to the entry's command, and the old metrics moved to metrics_before_repack, since they
    were measured with the old settings. Returns what the user should do next, if anything."""
    manifest = read_manifest()
    entry = manifest.get(destination.name) if destination.resolve().parent == weights_dir().resolve() else None
    repacked_in_place = (entry is not None and destination.exists() and len(sources) == 1
                         and sources[0].resolve() == destination.resolve() and sha256(destination) == entry["sha256"])
    if len(sources) == 1:
        pack_checkpoint(sources[0], destination, **options)
    else:
        pack_ensemble(sources, destination, **options)
    if entry is None:
        return ""
    if not repacked_in_place:
        return (f"{destination.name}'s manifest entry describes other weights: record this file with "
                f"`python -m retinaseg.manifest add`")
    digest = sha256(destination)
    if digest == entry["sha256"]:
        return ""  # the same bytes again: the entry and its metrics still hold
    entry.update(sha256=digest, config=load_checkpoint(destination)["config"],
                 command=f"{entry['command']}; {command}", metrics_before_repack=entry["metrics"], metrics={})
    write_json(manifest_path(), manifest)
    return (f"{destination.name}'s manifest entry updated; its metrics were measured before this re-pack: "
            f"re-measure them with `retinaseg eval --json` and record them with `python -m retinaseg.manifest metric`")


def _read_evaluations(items: list[str]) -> dict:
    evaluations = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"Error: --eval {item!r}: expected NAME=EVAL.json")
        evaluations[name] = json.loads(Path(path).read_text())
    return evaluations


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
    add.add_argument("--fine-tuned-from", metavar="ENTRY",
                     help="the weights the run started from: a manifest entry (e.g. av-fusion.pt), or a weights "
                          "file the manifest records, even inside another entry")
    metric = sub.add_parser("metric", help="replace or add metric results of an existing entry")
    metric.add_argument("weights", type=Path)
    metric.add_argument("--eval", action="append", required=True, metavar="NAME=EVAL.json",
                        help="a `retinaseg eval --json` output")
    pack = sub.add_parser("pack", help="copy a run's best.pt for shipping, without optimiser state (several: one "
                          "file that runs them as an ensemble, the mean of their probabilities); re-packing a "
                          "shipped file in place updates its manifest entry")
    pack.add_argument("sources", type=Path, nargs="+", metavar="SOURCE")
    pack.add_argument("destination", type=Path)
    pack.add_argument("--half", action="store_true", help="store kernels as float16 (half the size)")
    pack.add_argument("--max-downscale", type=float, default=None,
                      help="the file's own default cap on shrinking large photos (overrides the model's)")
    pack.add_argument("--fov-diameter", type=int, default=None,
                      help="the working scale the file runs at: FOV width in pixels (default: its training scale)")
    args = parser.parse_args(argv)
    if args.action == "pack":
        command = shlex.join(["python", "-m", "retinaseg.manifest", *(sys.argv[1:] if argv is None else argv)])
        try:
            advice = pack_and_record(args.sources, args.destination, command, half=args.half,
                                     max_downscale=args.max_downscale, fov_diameter=args.fov_diameter)
        except RetinasegError as exc:
            raise SystemExit(f"Error: {exc}") from None
        print(f"{args.destination}: {args.destination.stat().st_size / 1e6:.1f} MB")
        if advice:
            print(advice)
        return
    evaluations = _read_evaluations(args.eval)
    if args.action == "metric":
        entry = set_metrics(args.weights, evaluations)
    else:
        entry = add_entry(args.weights, args.run, args.command, evaluations, args.notes, args.fine_tuned_from)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
