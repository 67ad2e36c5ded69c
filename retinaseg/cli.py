"""The retinaseg command line: run, train, eval, plugins."""
from __future__ import annotations

import shlex
import sys
import warnings
from pathlib import Path

import click

from retinaseg import __version__
from retinaseg.errors import OptionError, RetinasegError
from retinaseg.inference import FEW_VESSELS, MAX_DOWNSCALE
from retinaseg.inference.views import FLIP_VIEWS


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


def _parse_range(ctx, param, value):
    """'LOW,HIGH' as two floats with 0 < LOW <= HIGH; None stays None."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
        if not 0 < low <= high:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected LOW,HIGH with 0 < LOW <= HIGH, such as 0.6,1.6; got {value!r}")
    return low, high


def _check_device(ctx, param, value):
    """auto, cpu, mps, cuda or cuda:N, checked for its form here (whether CUDA is present, when it is used)."""
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise click.BadParameter(f"expected auto, cpu, cuda or cuda:N; got {value!r}")
    return value


def _device_option(help: str = "auto (CUDA when present), cpu, cuda or cuda:N."):
    return click.option("--device", default="auto", show_default=True, callback=_check_device, help=help)


def _check_blur(ctx, param, value):
    from retinaseg.training.data import BLUR_LEAST_SIGMA

    if value and value < BLUR_LEAST_SIGMA:
        raise click.BadParameter(f"the largest Gaussian sigma in pixels is at least {BLUR_LEAST_SIGMA} (e.g. 1.2), or "
                                 f"0 for the fixed 3x3 blur; got {value}")
    return value


def _parse_options(pairs, what: str) -> dict:
    """KEY=VALUE pairs -> dict, values parsed as int, float, bool or left as text."""
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=what)
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return options


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


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


def _check_max_downscale(ctx, param, value):
    if value is not None and value != 0 and value < 1:
        raise click.BadParameter(f"must be 0 (no limit) or at least 1, got {value}")
    return value


def _max_downscale_option(help: str):
    """--max-downscale, the same option (type, check, default None) for run, eval and train."""
    return click.option("--max-downscale", type=float, default=None, callback=_check_max_downscale, help=help)


@cli.command()
@click.option("--model", "-m", required=True, help="Model to train (see `retinaseg plugins`).")
@click.option("--loss", "-l", default=None, help="Loss plugin. Default: bce-dice for vessel models, ce for A/V.")
@click.option("--dataset", "-d", "datasets", required=True,
              help="Dataset name, or several joined by commas (e.g. drive,les,hrf). Only training splits are used.")
@click.option("--data-root", type=click.Path(exists=True, file_okay=False), required=True,
              help="Folder holding the datasets (e.g. ../shared/data) or the dataset itself.")
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
              help="Run folder: best.pt, last.pt, metrics.csv, config.json.")
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Passes of --iterations steps; validation and checkpoints after each.")
@click.option("--iterations", type=click.IntRange(min=1), default=200, show_default=True,
              help="Optimiser steps per epoch.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Patches (or whole images) per optimiser step.")
@click.option("--patch-size", type=click.IntRange(min=32), default=128, show_default=True,
              help="Patch side in working-scale pixels; a multiple of the model's size divisor (32 for most).")
@click.option("--sampling", type=click.Choice(["patch", "whole"]), default="patch", show_default=True,
              help="patch: vessel-aware random patches (fast on CPU); whole: whole images.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True,
              help="Peak learning rate (warm-up, then cosine decay).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.15, show_default=True,
              help="Share of training images held out for validation (best.pt is chosen on them).")
@click.option("--patience", type=click.IntRange(min=0), default=0, show_default=True,
              help="Stop after this many epochs without validation gain (0: never).")
@click.option("--fov-diameter", type=click.IntRange(min=32), default=None,
              help="Working scale: FOV width in pixels the photos are resized to. Default: the model's.")
@_max_downscale_option("Cap on shrinking photos to the working scale, as in `retinaseg run`: high-resolution "
                       "photos are trained at the scale they will run at, and the weights file records it. 0: no "
                       "limit. Default: the model's.")
@click.option("--no-augment", is_flag=True, help="Turn off augmentation.")
@click.option("--elastic", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="PIXELS",
              help="Add elastic deformation: a smooth random displacement of this standard deviation (working-scale "
                   "pixels, e.g. 3) that bends vessels. 0: off.")
@click.option("--jpeg", type=click.IntRange(0, 95), default=0, show_default=True, metavar="QUALITY",
              help="Re-encode half the patches as JPEG at a random quality from this (e.g. 40) to 95, so the "
                   "blocks of compressed photos are not read as vessels. 0: off.")
@click.option("--grey", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="SHARE",
              help="Turn this share of the patches (e.g. 0.3) grey, as the green channel alone (red-free photos) or "
                   "as luminance, so grey photos are segmented as well as colour ones. 0: off.")
@click.option("--scale-range", default=None, metavar="LOW,HIGH", callback=_parse_range,
              help="Cut each patch with its side spanning a random LOW to HIGH (log-uniform) times the patch size "
                   "of working-scale pixels (above 1, vessels look thinner). Wider than the default 0.8,1.25 (e.g. "
                   "0.6,1.6) shows vessels at the widths of cameras with other field angles, or of photos whose FOV "
                   "is mismeasured. Measured (docs/experiments.md): 0.6,1.6 made crops with a mismeasured FOV "
                   "nearly free but cost up to 0.003 F1 on whole photos; with --blur 1.2 --noise 0.03 it lowered "
                   "F1 on two cameras the runs never saw.")
@click.option("--blur", type=click.FloatRange(min=0), default=0.0, show_default=True, callback=_check_blur,
              metavar="SIGMA",
              help="Blur the 20% of patches that are blurred by a Gaussian of random sigma from 0.5 to this (working-"
                   "scale pixels, e.g. 1.2): softer optics than the training cameras'. 0: a fixed 3x3 blur.")
@click.option("--noise", type=click.FloatRange(0, 0.5), default=0.0, show_default=True, metavar="STD",
              help="Add Gaussian sensor noise of random std up to this (pixel values 0-1, e.g. 0.03) to half the "
                   "patches: noisier cameras than the training ones. 0: off.")
@click.option("--balance-datasets", is_flag=True,
              help="With several datasets, draw patches so each dataset gives the same share of them. Default: "
                   "each image gives the same share, so a dataset with more images gives more.")
@click.option("--seed", default=0, show_default=True, help="Seeds the weights, the patches and (unless "
              "--split-seed is given) which images are held out.")
@click.option("--split-seed", type=int, default=None,
              help="Seeds only which images are held out, so runs with different --seed can be compared on the "
                   "same held-out images. Default: --seed.")
@_device_option()
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="Architecture option, e.g. width=16. Repeatable.")
@click.option("--loss-option", "loss_options", multiple=True, metavar="KEY=VALUE",
              help="Loss option, e.g. alpha=0.25. Repeatable.")
@click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset option (the folder dataset: images=, labels=, fov=, label_suffix=). Repeatable.")
@click.option("--init-weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from these weights (fine-tuning).")
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True, metavar="DECAY",
              help="Keep a moving average of the weights (decay per step, e.g. 0.999); validation scores it and "
                   "best.pt holds it. 0: off.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars (epoch lines are still printed).")
def train(model, loss, datasets, data_root, out, epochs, iterations, batch_size, patch_size, sampling, lr,
          val_fraction, patience, fov_diameter, max_downscale, no_augment, elastic, jpeg, grey, scale_range, blur,
          noise, balance_datasets, seed, split_seed, device, model_options, loss_options, dataset_options,
          init_weights, ema, resume, quiet):
    """Train a model on one or more datasets' training splits.

    \b
    Examples:
      retinaseg train -m unet -d drive --data-root ../shared/data -o runs/unet
      retinaseg train -m vesselnet -d drive,les,hrf --data-root ../shared/data -o runs/v --epochs 80
      retinaseg train -m unet -d drive --data-root ../shared/data -o runs/unet --resume
    """
    from retinaseg.registry import get_model
    from retinaseg.training.engine import TrainConfig, train as run_training

    spec = get_model(model)
    if patch_size % spec.size_divisor:
        raise click.BadParameter(f"model {spec.name!r} needs a multiple of {spec.size_divisor}; got {patch_size}",
                                 param_hint="--patch-size")
    config = TrainConfig(
        model=spec.name, loss=loss or ("bce-dice" if spec.task == "vessel" else "ce"),
        datasets=[d.strip() for d in datasets.split(",") if d.strip()], data_root=data_root, out=out,
        model_options=_parse_options(model_options, "--model-option"),
        loss_options=_parse_options(loss_options, "--loss-option"),
        dataset_options=_parse_options(dataset_options, "--dataset-option"),
        epochs=epochs, iterations=iterations, batch_size=batch_size, patch_size=patch_size, sampling=sampling,
        lr=lr, val_fraction=val_fraction, patience=patience, seed=seed, split_seed=split_seed,
        fov_diameter=fov_diameter, max_downscale=max_downscale, augment=not no_augment, elastic=elastic, jpeg=jpeg,
        grey=grey, scale_range=scale_range, blur=blur, noise=noise, balance_datasets=balance_datasets, device=device,
        init_weights=init_weights, ema=ema)
    summary = run_training(config, resume=resume, progress=not quiet)
    chosen = (f"best validation F1 {summary['best_val_f1']:.4f}" if summary["best_val_f1"] is not None
              else "no validation images, so best.pt holds the last epoch")
    click.echo(f"done: {summary['epochs']} epochs, {chosen}; weights in {Path(out) / 'best.pt'}")


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
    f = _max_downscale_option("Photos are shrunk until their FOV matches the weights' working scale (640 px across "
                              "for the default vesselnet file, 540 px for the other shipped files), but by at most "
                              "this factor, so high-resolution photos keep their finest vessels. 0: no limit. "
                              "Default: the weights file's own if it records one, else the model's, "
                              f"{MAX_DOWNSCALE} unless `retinaseg plugins` lists another.")(f)
    f = click.option("--tta/--no-tta", default=None,
                     help="Average the prediction over test-time views of each photo: slightly better, several "
                          "times slower. The views are the model's (`retinaseg plugins`): the four flips unless it "
                          "declares others; vesselnet's are the photo and its mirror image at 1.125x the scale "
                          "(about 2.3x the time). Default: the model's own, off unless `retinaseg plugins` lists "
                          "it.")(f)
    f = click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Tiles (or whole small images) per forward pass; tiles of several photos share a batch. "
                          "Larger batches were no faster, on CPU or GPU (README, Speed).")(f)
    f = _device_option()(f)
    f = click.option("--weights", "-w", type=click.Path(dir_okay=False), default=None,
                     help="Checkpoint to use instead of the model's shipped weights.")(f)
    f = click.option("--vessel-weights", type=click.Path(dir_okay=False), default=None,
                     help="Checkpoint for --vessel-model instead of its shipped weights.")(f)
    f = click.option("--vessel-model", default=None, metavar="NAME",
                     help="A/V models only: a binary model (e.g. vesselnet) that decides vessel or background, "
                          "run beside the A/V model at its own scale and defaults; the A/V model names each vessel "
                          "pixel artery, vein or uncertain. Adds the binary model's time; see README.")(f)
    return f


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


def _segmenter(model, weights, device, batch_size, tta, max_downscale, notify, vessel_model=None,
               vessel_weights=None, **settings):
    from retinaseg.inference.segmenter import SegmentConfig, Segmenter
    from retinaseg.models import DEFAULT_MODEL, load_model

    if vessel_weights and not vessel_model:
        raise click.UsageError("--vessel-weights needs --vessel-model")
    loaded = load_model(model or DEFAULT_MODEL, weights)
    gate = load_model(vessel_model, vessel_weights) if vessel_model else None
    return Segmenter(loaded, SegmentConfig(device=device, batch_size=batch_size, tta=tta, max_downscale=max_downscale,
                                           **settings), notify=notify, vessel_model=gate)


@cli.command()
@_help_with(few_vessels=f"{FEW_VESSELS:.0%}")
@click.argument("inputs", nargs=-1, required=True)
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--model", "-m", default=None, help="Model name (see `retinaseg plugins`). Default: vesselnet.")
@_inference_options
@click.option("--recursive", "-r", is_flag=True, help="Search folders (and ** globs) recursively.")
@click.option("--save-prob", is_flag=True, help="Also write prob/<stem>.tif: float32 probabilities at raw size "
              "(HxW vessel, or CxHxW background/artery/vein/uncertain).")
@click.option("--overlay", is_flag=True, help="Also write overlay/<stem>.png: the prediction drawn over the photo.")
@click.option("--overwrite", is_flag=True, help="Redo inputs whose outputs already exist (default: skip them, "
              "so an interrupted run resumes).")
@click.option("--fov-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of FOV masks named <stem>, <stem>_mask or <stem>_fov (default: estimated).")
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
              help="Force a fixed working size (the seeds' behaviour) instead of scaling by the FOV.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Threads decoding photos ahead of the network.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def run(inputs, output_dir, model, weights, vessel_model, vessel_weights, device, batch_size, tta, max_downscale,
        recursive, save_prob, overlay, overwrite, fov_dir, raw_fov_diameter, tile_size, overlap, resize, workers,
        quiet):
    """Segment every photo in INPUTS (files, folders or globs) into OUTPUT_DIR.

    \b
    Writes, for each input <stem>:
      raw_pre/<stem>.png     prediction at the photo's own size (0/255 vessels, or
                             A/V colours: artery red, vein blue, uncertain green)
      small_pre/<stem>.png   the same at the model's working size
      prob/<stem>.tif        probabilities (--save-prob)
      overlay/<stem>.png     prediction over the photo (--overlay)
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
    from retinaseg.errors import shown
    from retinaseg.inference.runner import BatchConfig, run_batch
    from retinaseg.io.images import max_pixels
    from retinaseg.io.inputs import find_inputs

    max_pixels()  # a malformed RETINASEG_MAX_PIXELS is said once, not once per photo
    segmenter = _segmenter(model, weights, device, batch_size, tta, max_downscale, notify=_message,
                           vessel_model=vessel_model, vessel_weights=vessel_weights, raw_fov_diameter=raw_fov_diameter,
                           tile_size=tile_size, overlap=overlap, resize=resize)
    paths = find_inputs(inputs, recursive=recursive, notify=_message, output_dir=output_dir)
    batch = BatchConfig(save_prob=save_prob, overlay=overlay, overwrite=overwrite, fov_dir=fov_dir, workers=workers)
    summary = run_batch(segmenter, paths, output_dir, batch, notify=_message, progress=not quiet)
    click.echo(f"{summary.line()}; outputs in {shown(output_dir)}")
    sys.exit(0 if summary.success else 1)


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
@click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset option (the folder dataset: images=, labels=, fov=, label_suffix=). Repeatable.")
@click.option("--summary-only", is_flag=True, help="Print only the mean ± std rows.")
def evaluate_command(dataset, data_root, split, pred, model, weights, vessel_model, vessel_weights, device,
                     batch_size, tta, max_downscale, no_fov, csv_path, json_path, dataset_options, summary_only):
    """Score predictions against manual labels, the literature's way.

    Inside the FOV, threshold 0.5 (arg-max for A/V), 1st manual, mean ± std over
    images: Se, Sp, Acc, Precision, F1, IoU, MCC, MSE, and exact AUC-ROC/AUC-PR when
    probabilities are available. A/V datasets add per-class and class-weighted
    scores (seed 002) and A/V accuracy. Where a second human observer exists
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
        segmenter = _segmenter(model, weights, device, batch_size, tta, max_downscale, notify=_message,
                               vessel_model=vessel_model, vessel_weights=vessel_weights)
        source = " + vessels from ".join(
            f"model {s.model.spec.name}" + (f" ({s.model.weights.name})" if s.model.weights else "")
            for s in (segmenter, segmenter.vessel_segmenter) if s is not None)
    result = evaluate(dataset, data_root, split, segmenter=segmenter, pred_dir=pred, use_fov=not no_fov, source=source,
                      dataset_options=_parse_options(dataset_options, "--dataset-option"), progress=True)
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
    """Pack weights for shipping, and keep weights/manifest.json (how each file was made, what it scored)."""


@weights.command(name="pack")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.argument("destination", type=click.Path(dir_okay=False))
@click.option("--half", is_flag=True, help="Store convolution kernels as float16: half the file size.")
@click.option("--max-downscale", type=float, default=None, callback=_check_max_downscale,
              help="The file's own default cap on shrinking large photos (overrides the model's).")
@click.option("--fov-diameter", type=click.IntRange(min=32), default=None,
              help="The working scale the file runs at: FOV width in pixels. Default: its training scale.")
def weights_pack(sources, destination, half, max_downscale, fov_diameter):
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
                             max_downscale=max_downscale, fov_diameter=fov_diameter)
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
