"""weights/manifest.json: how each shipped weight file was made and what it scored. The `retinaseg weights`
commands (pack, add, metric) call these functions.

Re-packing a shipped file in place updates its entry; its metrics must then be measured again.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from retinaseg.checkpoint import load_checkpoint, pack_checkpoint, sha256, weights_dir
from retinaseg.errors import CheckpointError, RetinasegError
from retinaseg.io.atomic import write_json
from retinaseg.models import pack_ensemble


def manifest_path() -> Path:
    return weights_dir() / "manifest.json"


def read_manifest() -> dict:
    path = manifest_path()
    return json.loads(path.read_text()) if path.exists() else {}


def _require_entry(manifest: dict, name: str) -> dict:
    if name not in manifest:
        raise CheckpointError(f"no manifest entry {name!r}; entries: {', '.join(sorted(manifest))}")
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
    raise CheckpointError(f"{start} is not recorded in the manifest (sha256 {digest[:12]}...)")


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
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        training = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise RetinasegError(f"{run_dir}: not a readable training run folder ({exc})") from None
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
        raise CheckpointError(f"{weights} does not match its manifest sha256; record it with `retinaseg weights add`")
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
                f"`retinaseg weights add`")
    digest = sha256(destination)
    if digest == entry["sha256"]:
        return ""  # the same bytes again: the entry and its metrics still hold
    entry.update(sha256=digest, config=load_checkpoint(destination)["config"],
                 command=f"{entry['command']}; {command}", metrics_before_repack=entry["metrics"], metrics={})
    write_json(manifest_path(), manifest)
    return (f"{destination.name}'s manifest entry updated; its metrics were measured before this re-pack: "
            f"re-measure them with `retinaseg eval --json` and record them with `retinaseg weights metric`")


def read_evaluations(items) -> dict:
    """NAME=EVAL.json pairs -> {name: the `retinaseg eval --json` result}."""
    evaluations = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise RetinasegError(f"--eval {item!r}: expected NAME=EVAL.json")
        try:
            evaluations[name] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise RetinasegError(f"--eval {item!r}: not a readable `retinaseg eval --json` file ({exc})") from None
    return evaluations
