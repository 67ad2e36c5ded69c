"""The retinaseg command line: run, train, eval, plugins."""
from __future__ import annotations

import contextlib
import os
import shlex
import sys
import warnings
from pathlib import Path

import click

from retinaseg import __version__, cores
from retinaseg.errors import OptionError, RetinasegError
from retinaseg.inference import FEW_VESSELS, MAX_DOWNSCALE, RUNNER_ENVIRONMENT
from retinaseg.inference.views import FLIP_VIEWS
from retinaseg.options import AUTO, check_device, check_max_downscale, parse_options, parse_shard, parse_workers
from retinaseg.training.config import TrainConfig, train_options


class _Command(click.Command):
    """Turns domain errors into `Error: ...` with exit status 1 (2 for an option a plugin does not accept, as
for any bad option), without a traceback."""

    def parse_args(self, ctx, args):
        ctx.meta["retinaseg.argv"] = list(args)  # kept to record the exact command beside its results
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OptionError as exc:
            raise click.UsageError(str(exc), ctx) from None
        except RetinasegError as exc:
            raise click.ClickException(str(exc)) from None


class _Group(click.Group):
    command_class = _Command


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


warnings.showwarning = _one_line_warning  # e.g. a plugin that failed to import: one line, no source dump


def _device_option(help: str = "auto (CUDA when present), cpu, cuda or cuda:N."):
    return click.option("--device", default="auto", show_default=True, callback=check_device, help=help)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="retinaseg")
def cli():
    """Segment retinal vessels (binary and artery/vein) in colour fundus photographs, and train and evaluate
    the models that do it.

    \b
    Quick start:
      retinaseg run photos/ out/                    # default model, every image in photos/
      retinaseg run --model av-fusion photos/ out/  # artery/vein maps
      retinaseg plugins                             # models, losses and datasets available
      retinaseg eval --dataset drive --data-root ../shared/data --model vesselnet
    """


@cli.command()
def plugins():
    """List every model, loss and dataset, with the plugin and package that provides it.

    Third-party packages add entries by declaring a `retinaseg` entry point; set
    RETINASEG_LOAD_PLUGINS=name,name to load only some plugins.

    \b
    Examples:
      retinaseg plugins
      pip install -e examples/retinaseg-frangi && retinaseg plugins   # now lists frangi
      RETINASEG_LOAD_PLUGINS=vesselnet,datasets retinaseg plugins
    """
    from retinaseg.registry import all_datasets, all_losses, all_models

    def own_defaults(spec) -> str:
        own = [f"--max-downscale default {spec.max_downscale:g}"] if spec.max_downscale != MAX_DOWNSCALE else []
        own += ["--tta by default"] if spec.tta else []
        own += [f"--tta views: {', '.join(map(str, spec.tta_views))}"] if spec.tta_views != FLIP_VIEWS else []
        return f" [{'; '.join(own)}]" if own else ""

    tables = [("models", all_models(), lambda s: f"{s.task}, {s.classes} class(es)", own_defaults),
              ("losses", all_losses(), lambda s: s.task, lambda s: ""),
              ("datasets", all_datasets(), lambda s: s.task, lambda s: "")]
    for title, table, kind, note in tables:
        click.echo(f"{title}:")
        for name, spec in sorted(table.items()):
            click.echo(f"  {name:<22} {kind(spec):<20} {spec.plugin} ({spec.package})")
            click.echo(f"  {'':<22} {spec.description}{note(spec)}")
        click.echo()


FOV_DIR_HELP = ("Folder of FOV masks, each named as its photo's file, or that and _anything (eye1_mask.gif), with an "
                "image extension; for a recursive run, in the sub-folders the photos are in.")


def _max_downscale_option(help: str):
    """--max-downscale, the same option (type, check, default None) for run, eval and train."""
    return click.option("--max-downscale", type=float, default=None, callback=check_max_downscale, help=help)


@cli.command()
@train_options
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt (same settings; --epochs "
              "may grow).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars (epoch lines are still printed).")
def train(resume, quiet, **settings):
    """Train a model on one or more datasets' training splits.

    \b
    Examples:
      retinaseg train -m unet -d drive --data-root ../shared/data -o runs/unet
      retinaseg train -m vesselnet -d drive,les,hrf --data-root ../shared/data -o runs/v --epochs 80
      retinaseg train -m unet -d drive --data-root ../shared/data -o runs/unet --resume
      torchrun --nproc_per_node 2 -m retinaseg train -m unet -d drive --data-root ../shared/data -o runs/unet

    Under torchrun the processes share each step's --batch-size (the global batch) and average their gradients;
    the first process writes the run folder.
    """
    from retinaseg.registry import get_model
    from retinaseg.training.engine import train as run_training

    spec = get_model(settings["model"])
    if settings["patch_size"] % spec.size_divisor:
        raise click.BadParameter(f"model {spec.name!r} needs a multiple of {spec.size_divisor}; got "
                                 f"{settings['patch_size']}", param_hint="--patch-size")
    summary = run_training(TrainConfig(**settings), resume=resume, progress=not quiet)
    chosen = (f"best validation F1 {summary['best_val_f1']:.4f}" if summary["best_val_f1"] is not None
              else "no validation images, so best.pt holds the last epoch")
    if summary["writer"]:
        click.echo(f"done: {summary['epochs']} epochs, {chosen}; weights in {Path(settings['out']) / 'best.pt'}")


def _executor(name: str, address, actors: int):
    """None for the local runner, or the Ray executor (a context that stops the Ray it started)."""
    if name != "ray":
        return contextlib.nullcontext(None)
    from retinaseg.inference.ray_executor import RayExecutor

    return RayExecutor(address, actors)


def _parse_size(ctx, param, value):
    if value is None:
        return None
    try:
        width, height = (int(v) for v in value.lower().split("x"))
        if width < 16 or height < 16:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT of at least 16x16, e.g. 512x512; got {value!r}")
    return width, height


def _inference_options(f):
    f = _max_downscale_option("Shrink photos to the weights' working scale by at most this factor, so "
                              "high-resolution photos keep their finest vessels. 0: no limit. Given, it holds for "
                              "--vessel-model too. Default: each weights file's own, else its model's "
                              f"({MAX_DOWNSCALE} unless `retinaseg plugins` says otherwise).")(f)
    f = click.option("--tta/--no-tta", default=None,
                     help="Average the prediction over the model's test-time views of each photo (`retinaseg "
                          "plugins`; the four flips unless it declares others): slower, slightly better. Default: "
                          "the model's own.")(f)
    f = click.option("--av-graph/--no-av-graph", default=None,
                     help="A/V models: give each vessel one type, by its pixels' vote along the vessel graph "
                          "(through crossings; weak votes take their bifurcation neighbours' type). The vessel map "
                          "is unchanged. Default: the model's own (`retinaseg plugins`).")(f)
    f = click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Tiles (or whole small images) per forward pass; tiles of several photos share a "
                          "batch.")(f)
    f = _device_option()(f)
    f = click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
                     help="What runs the network: torch, or ONNX Runtime on the CPU (`pip install "
                          "'retinaseg[onnx]'`; the model is exported once, at start).")(f)
    f = click.option("--weights", "-w", type=click.Path(dir_okay=False), default=None,
                     help="Checkpoint to use instead of the model's shipped weights.")(f)
    f = click.option("--vessel-weights", type=click.Path(dir_okay=False), default=None,
                     help="Checkpoint for --vessel-model instead of its shipped weights.")(f)
    f = click.option("--vessel-model", default=None, metavar="NAME",
                     help="A binary vessel model (e.g. vesselnet) run beside the model at its own scale and "
                          "defaults. With an A/V model it decides vessel or background, and the A/V model names each "
                          "vessel pixel artery, vein or uncertain. With a disc model, where another region would "
                          "pass as a disc, the disc kept is the one its vessels converge on (without this option, "
                          "vesselnet's, run on those photos only).")(f)
    return f


def _runner_environment() -> None:
    """The runner's environment (inference.RUNNER_ENVIRONMENT), where the user has not set it: before torch is
    imported, which reads it once."""
    for key, value in RUNNER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def _help_with(**values):
    """Fills {names} in a command's docstring before click reads it, so --help shows the code's own values."""
    def decorate(f):
        f.__doc__ = f.__doc__.format(**values)
        return f
    return decorate


def _message(text: str) -> None:
    """A warning or failure line on stderr, above the progress bar rather than through it."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)
    sys.stderr.flush()  # before the summary on stdout, also where stderr is buffered


def _segmenter(model, weights, device, backend, batch_size, tta, max_downscale, av_graph, notify,
               vessel_model=None, vessel_weights=None, **settings):
    from retinaseg.inference.segmenter import segmenter_of

    if vessel_weights and not vessel_model:
        raise click.UsageError("--vessel-weights needs --vessel-model")
    return segmenter_of(model, weights, vessel_model, vessel_weights, notify=notify, device=device, backend=backend,
                        batch_size=batch_size, tta=tta, max_downscale=max_downscale, av_graph=av_graph, **settings)


@cli.command()
@_help_with(few_vessels=f"{FEW_VESSELS:.0%}")
@click.argument("inputs", nargs=-1, required=True)
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--model", "-m", default=None, help="Model name (see `retinaseg plugins`). Default: vesselnet.")
@_inference_options
@click.option("--recursive", "-r", is_flag=True, help="Search folders (and ** globs) recursively.")
@click.option("--shard", callback=parse_shard, default=None, metavar="K/N",
              help="Process only shard K of N of the sorted inputs (every N-th photo from the K-th), recorded in "
                   "run-K-of-N.json, so N processes (a SLURM array, one per GPU) share one output folder; "
                   "`retinaseg report OUTPUT_DIR` adds them up.")
@click.option("--save-prob", is_flag=True, help="Also write prob/<stem>.tif: probabilities at raw size as 16-bit "
              "integers, value / 65535 (HxW vessel, or CxHxW background/artery/vein/uncertain).")
@click.option("--overlay", is_flag=True, help="Also write overlay/<stem>.png: the prediction drawn over the photo.")
@click.option("--measure", "also_measure", is_flag=True,
              help="Then measure the maps written, as `retinaseg measure OUTPUT_DIR` does: measurements.csv (with "
                   "--overlay, measure_overlay/<stem>.png too).")
@click.option("--save-graph", is_flag=True, help="Also write graph/<stem>.json: the vessel graph (nodes, segments "
              "with path, length, calibre and A/V label, crossings) at the photo's own size; see docs/running.md.")
@click.option("--overwrite", is_flag=True, help="Redo inputs whose outputs already exist (default: skip them, "
              "so an interrupted run resumes).")
@click.option("--fov-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help=FOV_DIR_HELP + " Default: the FOV estimated from each photo.")
@click.option("--raw-fov-diameter", type=click.IntRange(min=8), default=None, metavar="PX",
              help="For photos that show no dark surround (crops inside the retina, close-ups): the diameter the "
              "whole FOV would have, in the photos' own pixels, so they are scaled like the rest. Default: the frame "
              "is taken as the FOV. Photos with a visible FOV edge are always measured.")
@click.option("--tile-size", type=click.IntRange(64, 4096), default=512, show_default=True,
              help="Sliding-window tile side (working pixels); photos under 1280x1280 at the working scale go in "
                   "one pass.")
@click.option("--overlap", type=click.FloatRange(0, 0.75), default=0.25, show_default=True,
              help="Share of a tile that overlaps its neighbour.")
@click.option("--resize", callback=_parse_size, default=None, metavar="WxH",
              help="Resize every photo to this fixed working size instead of scaling it by its FOV.")
@click.option("--workers", callback=parse_workers, default=AUTO, show_default=True, metavar="N|auto",
              help="Worker processes that read and prepare photos ahead of the network and write their outputs "
                   "behind it (0: all in this process), and with --measure the processes that then measure the "
                   "maps; with --executor ray, Ray actors, each with its own copy of the model. auto: 2 for a "
                   "network on the CPU (it needs the cores itself) or with --executor ray; on a GPU, one per core "
                   "but the network's (up to 16); for measuring, one per core (up to 8).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: Ray actors (`pip install 'retinaseg[ray]'`), on a Ray instance "
                   "started here or the cluster at --ray-address. The same files either way.")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="With --executor ray: join this Ray cluster (e.g. auto, or ray://head:10001) instead of starting "
                   "a local instance.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def run(inputs, output_dir, model, weights, vessel_model, vessel_weights, backend, device, batch_size, av_graph,
        tta, max_downscale, recursive, shard, save_prob, overlay, also_measure, save_graph, overwrite, fov_dir,
        raw_fov_diameter, tile_size, overlap, resize, workers, executor, ray_address, quiet):
    """Segment every photo in INPUTS (files, folders or globs) into OUTPUT_DIR.

    \b
    Writes, for each input <stem>:
      raw_pre/<stem>.png     prediction at the photo's own size (0/255 vessels, or
                             A/V colours: artery red, vein blue, uncertain green)
      small_pre/<stem>.png   the same at the model's working size
      prob/<stem>.tif        probabilities (--save-prob)
      overlay/<stem>.png     prediction over the photo (--overlay)
      graph/<stem>.json      the vessel graph (--save-graph)
      run.json               model, weights sha256, settings, versions; per image:
                             status, sizes, vessel_fraction (FOV share labelled vessel)
    Photos are rescaled so their field of view matches the weights' working scale,
    so any camera resolution works. Inputs already done are skipped, so re-running
    an interrupted command resumes it. Bad files are reported and skipped; the exit
    status is 0 only if every input succeeded. Photos with under {few_vessels} of their FOV
    labelled vessel are written but flagged "check the photo".

    \b
    Examples:
      retinaseg run photos/ out/
      retinaseg run --model av-fusion --save-prob --overlay photos/ out/
      retinaseg run -r "study/**/*.jpg" out/ --device cuda
      retinaseg run -m av-fusion --vessel-model vesselnet photos/ out/
    """
    _runner_environment()
    from retinaseg.errors import shown
    from retinaseg.inference.runner import BatchConfig, run_batch, shard_of
    from retinaseg.io.images import max_pixels
    from retinaseg.io.inputs import find_inputs

    max_pixels()  # a malformed RETINASEG_MAX_PIXELS is said once, not once per photo
    if also_measure:  # before any model is loaded
        from retinaseg.models import DEFAULT_MODEL
        from retinaseg.registry import get_model

        if get_model(model or DEFAULT_MODEL).task == "disc":
            raise click.UsageError("--measure measures vessel and artery/vein maps; a disc model's maps are discs "
                                   "(the disc is found on the way when a vessel model's maps are measured)")
    segmenter = _segmenter(model, weights, device, backend, batch_size, tta, max_downscale, av_graph,
                           notify=_message, vessel_model=vessel_model, vessel_weights=vessel_weights,
                           raw_fov_diameter=raw_fov_diameter,
                           tile_size=tile_size, overlap=overlap, resize=resize)
    paths = shard_of(find_inputs(inputs, recursive=recursive, notify=_message, output_dir=output_dir), shard)
    measuring_workers = cores.measure_workers() if workers is None else workers
    if workers is None:
        workers = cores.CPU_NETWORK_WORKERS if executor == "ray" else cores.run_workers(segmenter.device.type)
    fov_dir = str(Path(fov_dir).resolve()) if fov_dir else None  # run.json's, for `measure` run from elsewhere
    batch = BatchConfig(save_prob=save_prob, overlay=overlay, overwrite=overwrite, fov_dir=fov_dir, workers=workers,
                        save_graph=save_graph, shard=shard)
    if ray_address and executor != "ray":
        raise click.UsageError("--ray-address goes with --executor ray")
    with _executor(executor, ray_address, workers) as remote:
        summary = run_batch(segmenter, paths, output_dir, batch, notify=_message, progress=not quiet,
                            process=remote.segment if remote else None)
        click.echo(f"{summary.line()}; outputs in {shown(output_dir)}")
        measured_ok = True
        if also_measure and not summary.error:  # this run's photos; a shard's into measurements-K-of-N.csv
            from retinaseg.measure_batch import measure_run, measured_line

            name = "measurements" + (f"-{shard[0]}-of-{shard[1]}" if shard else "")
            rows = measure_run(output_dir, summary.records, name, overlay, notify=_message, progress=not quiet,
                               process=remote.measure if remote else None, workers=measuring_workers,
                               overwrite=overwrite, fov_dir=fov_dir, raw_fov_diameter=raw_fov_diameter)
            measured_ok = not any(row["status"] == "failed" for row in rows)
            click.echo(f"measured {len(rows)} photo(s) into {Path(output_dir) / name}.csv: {measured_line(rows)}")
    sys.exit(0 if summary.success and measured_ok else 1)


@cli.command(name="eval")
@click.option("--dataset", "-d", required=True, help="Dataset name (see `retinaseg plugins`).")
@click.option("--data-root", type=click.Path(exists=True, file_okay=False), required=True,
              help="Folder holding the dataset (e.g. ../shared/data) or the dataset itself.")
@click.option("--split", default="test", show_default=True, help="Dataset split to score.")
@click.option("--pred", type=click.Path(exists=True, file_okay=False), default=None,
              help="A `retinaseg run` output folder to score (uses prob/ for AUCs when present).")
@click.option("--model", "-m", default=None, help="Model to run and score (instead of --pred).")
@_inference_options
@click.option("--no-fov", is_flag=True, help="Score every pixel instead of only the FOV.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write per-image rows.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write means, stds, second observer and per-image rows.")
@click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE", callback=parse_options,
              help="Dataset option (the folder dataset: images=, labels=, fov=, label_suffix=). Repeatable.")
@click.option("--summary-only", is_flag=True, help="Print only the mean ± std rows.")
def evaluate_command(dataset, data_root, split, pred, model, weights, vessel_model, vessel_weights, backend,
                     device, batch_size, av_graph, tta, max_downscale, no_fov, csv_path, json_path, dataset_options,
                     summary_only):
    """Score predictions against manual labels, the literature's way.

    Inside the FOV, threshold 0.5 (A/V: vessel first, then type), 1st manual, mean ± std over
    images: Se, Sp, Acc, Precision, F1, IoU, MCC, MSE, and exact AUC-ROC/AUC-PR when
    probabilities are available. A/V datasets add per-class and class-weighted
    scores (Learning_AVSegmentation) and A/V accuracy. Where a second human observer exists
    (DRIVE test), it is scored as a reference row.

    \b
    Examples:
      retinaseg eval -d drive --data-root ../shared/data --model vesselnet
      retinaseg eval -d hrf --data-root ../shared/data --pred out/ --json hrf.json
      retinaseg eval -d drive-av --data-root ../shared/data -m av-fusion --csv av.csv
    """
    import csv
    import json

    from retinaseg.evaluation.evaluate import evaluate, format_table, to_json
    from retinaseg.io.atomic import atomic_path

    if (pred is None) == (model is None):
        raise click.UsageError("give either --pred OUTPUT_DIR or --model NAME")
    if pred and vessel_model:
        raise click.UsageError("--vessel-model goes with --model; a --pred folder is scored as it is")
    segmenter, source = None, f"predictions in {pred}"
    if model:
        segmenter = _segmenter(model, weights, device, backend, batch_size, tta, max_downscale, av_graph,
                               notify=_message, vessel_model=vessel_model, vessel_weights=vessel_weights)
        source = " + vessels from ".join(
            f"model {s.model.spec.name}" + (f" ({s.model.weights.name})" if s.model.weights else "")
            for s in (segmenter, segmenter.vessel_segmenter) if s is not None)
    result = evaluate(dataset, data_root, split, segmenter=segmenter, pred_dir=pred, use_fov=not no_fov, source=source,
                      dataset_options=dataset_options, progress=True)
    click.echo(format_table(result, per_image=not summary_only))
    if csv_path:
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(result.rows[0]))
            writer.writeheader()
            writer.writerows(result.rows)
    if json_path:
        # The command goes into the file so that every reported number names what produced it.
        command = "retinaseg eval " + shlex.join(click.get_current_context().meta["retinaseg.argv"])
        record = {"command": command, **to_json(result)}
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")


@cli.group(cls=_Group)
def weights():
    """Pack weights files, and record how each was made in weights/manifest.json.

    The manifest keeps, for every shipped file, its sha256, training command, data, time and the `retinaseg
    eval --json` results measured with it."""


@weights.command(name="pack")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.argument("destination", type=click.Path(dir_okay=False))
@click.option("--half", is_flag=True, help="Store convolution kernels as float16: half the file size.")
@click.option("--max-downscale", type=float, default=None, callback=check_max_downscale,
              help="The file's own default cap on shrinking large photos (overrides the model's).")
@click.option("--fov-diameter", type=click.IntRange(min=32), default=None,
              help="The working scale the file runs at: FOV width in pixels. Default: its training scale.")
@click.option("--disc-min-probability", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="A disc model's file: the mean probability a blob needs to count as the disc with it (chosen "
                   "for its own maps). Default: the disc model's.")
def weights_pack(sources, destination, half, max_downscale, fov_diameter, disc_min_probability):
    """Copy a run's checkpoint (e.g. best.pt) for shipping, without optimiser state.

    Several SOURCES make one file that runs them as an ensemble (the mean of their
    probabilities). Re-packing a shipped file in place updates its manifest entry.

    \b
    Examples:
      retinaseg weights pack runs/unet/best.pt unet.pt --half
      retinaseg weights pack runs/a/best.pt runs/b/best.pt pair.pt --half
      retinaseg weights pack weights/vesselnet.pt weights/vesselnet.pt --fov-diameter 640
    """
    from retinaseg.manifest import pack_and_record

    command = "retinaseg weights pack " + shlex.join(click.get_current_context().meta["retinaseg.argv"])
    destination = Path(destination)
    advice = pack_and_record([Path(s) for s in sources], destination, command, half=half,
                             max_downscale=max_downscale, fov_diameter=fov_diameter,
                             disc_min_probability=disc_min_probability)
    click.echo(f"{destination}: {destination.stat().st_size / 1e6:.1f} MB")
    if advice:
        click.echo(advice)


def _eval_option(required: bool):
    return click.option("--eval", "evaluations", multiple=True, required=required, metavar="NAME=EVAL.json",
                        help="A `retinaseg eval --json` result, recorded under NAME (its command is kept). "
                             "Repeatable.")


@weights.command(name="add")
@click.argument("weights_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="The training run folder (metrics.csv, config.json).")
@click.option("--command", "training_command", required=True, help="The exact training command.")
@_eval_option(required=False)
@click.option("--notes", default="", help="Free text kept with the entry.")
@click.option("--fine-tuned-from", metavar="ENTRY", default=None,
              help="The weights the run started from: a manifest entry, or a file the manifest records.")
def weights_add(weights_file, run_dir, training_command, evaluations, notes, fine_tuned_from):
    """Add or replace WEIGHTS_FILE's manifest entry: sha256, model, data, epochs, time, command, metrics.

    \b
    Example:
      retinaseg weights add weights/unet.pt --run runs/unet --command "retinaseg train ..." \\
          --eval drive=drive.json
    """
    import json

    from retinaseg.manifest import add_entry, read_evaluations

    entry = add_entry(Path(weights_file), Path(run_dir), training_command, read_evaluations(evaluations), notes,
                      fine_tuned_from)
    click.echo(json.dumps(entry, indent=2))


@weights.command(name="metric")
@click.argument("weights_file", type=click.Path(exists=True, dir_okay=False))
@_eval_option(required=True)
def weights_metric(weights_file, evaluations):
    """Replace or add metric results of WEIGHTS_FILE's manifest entry.

    \b
    Example:
      retinaseg weights metric weights/vesselnet.pt --eval hrf=hrf.json
    """
    import json

    from retinaseg.manifest import read_evaluations, set_metrics

    click.echo(json.dumps(set_metrics(Path(weights_file), read_evaluations(evaluations)), indent=2))


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--maps", "maps_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Measure the label maps in this folder instead of a run's (e.g. a data set's manual A/V labels; "
                   "A/V colour maps, 0-3 codes or binary masks), paired with --photos by file stem.")
@click.option("--photos", "photos_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --maps: the photos the maps belong to (for the disc and the FOV).")
@click.option("--disc-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Optic disc masks named <stem>.<ext> or <stem>_<anything> (e.g. eye1_disc.png; for a recursive "
                   "run, in the sub-folders the photos are in) instead of finding the disc with the disc model.")
@click.option("--discs", "discs_file", type=click.Path(exists=True, dir_okay=False), default=None, metavar="CSV",
              help="Discs set by hand: a CSV with columns stem, disc_x, disc_y and disc_diameter_px in the photo's "
                   "pixels (e.g. the rows of measurements.csv whose disc you set or corrected). A photo listed with "
                   "all three is measured with that disc; the others' discs are found as without it.")
@click.option("--pixel-size", type=click.FloatRange(min=0, min_open=True), default=None, metavar="UM",
              help="Micrometres per pixel of the photos, for the _um columns.")
@click.option("--disc-diameter-um", type=click.FloatRange(min=0, min_open=True), default=None, metavar="UM",
              help="Instead of --pixel-size: take every disc to be this many micrometres across (e.g. 1800) and "
                   "derive each photo's pixel size from its disc.")
@click.option("--overlay", is_flag=True, help="Also write measure_overlay/<stem>.png: the disc, the zone B and C "
              "rings and the zone-B vessels measured, over the photo, with CRAE, CRVE, AVR and the fractal dimension "
              "written in its corner.")
@click.option("--calibres-from", type=click.Choice(["photo", "map"]), default=None,
              help="What zone B's vessel calibres (CRAE, CRVE, AVR, mean calibre) are measured on: the map "
                   "(default), or the photo: the width across each vessel in its green channel, along the map's "
                   "centre line (a vessel without a clear profile there, or a map without its photo, is measured "
                   "on the map).")
@click.option("--fov-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help=FOV_DIR_HELP + " Default: the run's --fov-dir (run.json), else the FOV estimated from each "
                   "photo.")
@click.option("--raw-fov-diameter", type=click.IntRange(min=8), default=None, metavar="PX",
              help="For photos that show no dark surround (crops inside the retina): the diameter the whole FOV "
                   "would have, in the photos' own pixels (the fractal dimension's boxes and the FOV columns follow "
                   "it). Default: the run's --raw-fov-diameter (run.json), else the frame is taken as the FOV.")
@click.option("--measuring-fov", type=click.IntRange(min=64), default=None, metavar="PX",
              help="Measure every map resampled so that its FOV is PX pixels across (e.g. 1024), with lengths and "
                   "calibres given back in each photo's pixels, so photos of different resolutions are measured on "
                   "the same grid (for studies that pool cameras; docs/measurements.md). Default: each map at its "
                   "own size.")
@click.option("--workers", callback=parse_workers, default=AUTO, show_default=True, metavar="N|auto",
              help="Processes that measure photos side by side, one core each (0 or 1: one after the other in this "
                   "process). auto: one per core, up to 8.")
@click.option("--overwrite", is_flag=True, help="Measure every map again (default: reuse the rows in "
              "OUT_DIR/measured/ of maps measured before with the same files and settings, so an interrupted "
              "measure resumes).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def measure(out_dir, maps_dir, photos_dir, disc_dir, discs_file, pixel_size, disc_diameter_um, overlay, calibres_from,
            fov_dir, raw_fov_diameter, measuring_fov, workers, overwrite, quiet):
    """Measure the vessels in OUT_DIR's maps: one row per photo in OUT_DIR/measurements.csv.

    OUT_DIR is a `retinaseg run` output folder (its run.json names the photos and maps),
    or, with --maps and --photos, where to write. The disc is found by the `disc` model
    unless --disc-dir gives masks or --discs sets it by hand. Lengths and calibres are
    in pixels always, in disc diameters (_dd) when a disc is found, and in micrometres
    (_um) with --pixel-size or --disc-diameter-um. Columns and definitions:
    docs/measurements.md. The exit status is 0 only if no photo failed.

    \b
    Examples:
      retinaseg run -m av-fusion --vessel-model vesselnet photos/ out/ && retinaseg measure out/
      retinaseg measure out/ --disc-diameter-um 1800 --overlay
      retinaseg measure labels/ --maps labels/ --photos photos/ --disc-dir discs/
      retinaseg measure out/ --discs discs.csv    # discs the model missed, set by hand
      retinaseg measure out/ --measuring-fov 1024 # photos of several cameras on one grid
    """
    from retinaseg.measure import CALIBRES_FROM
    from retinaseg.measure_batch import (MeasureJob, fov_settings_of_run, items_of_folders, items_of_run,
                                         measure_items, measured_line, read_given_discs)

    if (maps_dir is None) != (photos_dir is None) and not (maps_dir and (disc_dir or discs_file)):
        raise click.UsageError("--maps goes with --photos (or --disc-dir or --discs), and --photos with --maps")
    try:
        discs_given = read_given_discs(discs_file) if discs_file else {}
    except RetinasegError as exc:
        raise click.BadParameter(str(exc), param_hint="--discs") from None
    if pixel_size and disc_diameter_um:
        raise click.UsageError("give --pixel-size or --disc-diameter-um, not both")
    items = items_of_folders(maps_dir, photos_dir) if maps_dir else items_of_run(out_dir)
    if not items:
        raise click.UsageError(f"no maps to measure in {maps_dir or out_dir}")
    if not maps_dir:  # what is not given, as the runs took it
        fov_dir, raw_fov_diameter = fov_settings_of_run(out_dir, fov_dir, raw_fov_diameter)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    job = MeasureJob(items, out_dir, disc_dir, pixel_size, disc_diameter_um, overlay, overwrite=overwrite,
                     calibres_from=calibres_from or CALIBRES_FROM, maps_dir=maps_dir, discs_given=discs_given,
                     discs_file=discs_file, measuring_fov=measuring_fov, fov_dir=fov_dir,
                     raw_fov_diameter=raw_fov_diameter)
    rows = measure_items(job, notify=_message, progress=not quiet,
                         workers=cores.measure_workers() if workers is None else workers)
    click.echo(f"{measured_line(rows)}; {Path(out_dir) / 'measurements.csv'}")
    sys.exit(1 if any(row["status"] == "failed" for row in rows) else 0)


@cli.command()
@click.argument("destination", type=click.Path(dir_okay=False))
@click.option("--model", "-m", default=None, help="Model name (see `retinaseg plugins`). Default: vesselnet.")
@click.option("--weights", "-w", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint to export instead of the model's shipped weights.")
def export(destination, model, weights):
    """Export a model to an ONNX file (DESTINATION), for ONNX Runtime and other engines.

    The file holds the network with BatchNorm folded: a standardised image batch
    (N, 3, H, W; H and W multiples of the model's size divisor) in, logits out, with N, H
    and W free. Its metadata ("retinaseg") records the model, its config (working
    scale, normalisation, classes) and the weights' sha256. The export is checked
    against torch at a second, non-square size before it is written. Needs
    `pip install 'retinaseg[onnx]'`.

    \b
    Examples:
      retinaseg export vesselnet.onnx
      retinaseg export -m av-fusion -w weights/av-fusion-hrf-av.pt av-hrf.onnx
    """
    from retinaseg.inference.onnx import export_file
    from retinaseg.models import DEFAULT_MODEL, load_model

    loaded = load_model(model or DEFAULT_MODEL, weights)
    export_file(loaded, destination)
    click.echo(f"{destination}: {loaded.spec.name} ({Path(destination).stat().st_size / 1e6:.1f} MB)")


@cli.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
def report(out_dir):
    """Add up the run records in OUT_DIR: run.json, and each shard's run-K-of-N.json.

    Prints the photos ok, skipped and failed, each failure's line, the photos flagged
    "check the photo", and whether every record was made by the same model, weights
    and settings; then each measurements table's rows counted, and the photos done that
    measurements.csv lacks. The exit status is 0 only if no photo failed and the
    records agree (the tables do not change it).

    \b
    Examples:
      retinaseg report out/
      for k in 1 2 3 4; do retinaseg run --shard $k/4 photos/ out/ & done; wait; retinaseg report out/
    """
    import json

    from retinaseg.errors import shown
    from retinaseg.inference.runner import combined_records, run_records
    from retinaseg.measure_batch import measured_line, measurement_tables

    records = run_records(out_dir)
    if not records:
        raise click.UsageError(f"{shown(out_dir)} holds no run record (run.json or run-K-of-N.json)")
    summary = combined_records(records)
    for image in summary.records:
        if image.status == "failed":
            click.echo(f"failed: {image.message or image.input}")
    click.echo(f"{len(records)} run record(s): {', '.join(path.name for path, _ in records)}")
    makers = {json.dumps(record.get("made_with"), sort_keys=True) for _, record in records}
    if len(makers) > 1:
        click.echo("warning: the records were made by different models, weights or settings (see made_with in "
                   "each)")
    flagged = f"; {summary.flag_counts()}" if summary.flagged() else ""
    click.echo(f"{summary.ok} ok, {summary.skipped} skipped, {summary.failed} failed{flagged}")
    done = {image.stem for image in summary.records if image.status in ("ok", "skipped")}
    tables = measurement_tables(out_dir)
    for path, rows in tables:
        click.echo(f"{path.name}: {len(rows)} row(s), {measured_line(rows)}")
    whole = [rows for path, rows in tables if path.name == "measurements.csv"]
    missing = len(done - {row.get("stem") for row in whole[0]}) if whole else len(done)
    if tables and missing:
        click.echo(f"note: measurements.csv {'lacks' if whole else 'is not made yet for'} {missing} of the "
                   f"{len(done)} photos done; `retinaseg measure {shown(out_dir)}` measures them into it (reusing "
                   f"the rows measured before)")
    sys.exit(0 if summary.success and len(makers) == 1 else 1)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 lets other machines of the network in (the app has no login).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to listen on.")
@_device_option()
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=50, show_default=True,
              help="Largest file accepted by upload, in megabytes.")
def serve(host, port, device, max_upload_mb):
    """Start the web app: upload photos, see their maps, download what `run` writes.

    A local web page (open the address it prints) where photos go through the same
    runner as `retinaseg run`: choose the model, TTA and the A/V graph step, see
    each photo beside its map and probabilities, the measurements, and download a
    zip of the output folder. Requests queue and share models loaded once. Needs
    the [web] extra: pip install 'retinaseg[web]'.

    \b
    Examples:
      retinaseg serve
      retinaseg serve --port 8080 --device cuda
    """
    _runner_environment()
    try:
        from retinaseg.web.app import serve as start
    except ImportError as exc:
        if "gradio" not in str(exc):
            raise
        raise RetinasegError("retinaseg serve needs the web extra: pip install 'retinaseg[web]'") from None
    start(host=host, port=port, device=device, max_upload_mb=max_upload_mb)
