"""What `retinaseg serve` does, as plain functions with no Gradio in them: a request's photos go through the batch
runner (`run_batch`, the code `retinaseg run` runs) into a folder of the request's own, optionally through
`measure_items`, and come back as what the page shows and a zip of the folder.
"""
from __future__ import annotations

import itertools
import shutil
import threading
import uuid
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from retinaseg.errors import RetinasegError

# The runner's options the app always sets: the page shows the overlay and the probabilities; no worker processes
# are forked from the server's threads (one request runs at a time anyway)
APP_BATCH = {"save_prob": True, "overlay": True, "workers": 0}
ARCHIVE_NAME = "retinaseg-output.zip"
MODELS_KEPT = 2  # segmenters kept loaded between requests


@dataclass(frozen=True)
class Choice:
    """What the user picked: the model and the main options of `retinaseg run`."""

    model: str
    vessel_model: Optional[str] = None  # A/V models: take the vessel pixels from this binary model
    tta: Optional[bool] = None  # None: the model's own default
    av_graph: bool = False
    measure: bool = False


@dataclass
class PhotoView:
    """One segmented photo as the page shows it: PNG files a browser displays."""

    name: str
    photo: Path
    overlay: Path
    probability: Path
    vessel_fraction: float
    flag: str
    zones: Optional[Path] = None  # measure_overlay/: the disc, zones B and C and the CRAE/CRVE vessels, when measured


@dataclass
class Result:
    folder: Path  # what `retinaseg run` would have written for these photos
    archive: Path  # the folder, zipped
    summary: str  # the runner's last line
    lines: list = field(default_factory=list)  # its messages, one per bad file, in the CLI's words
    photos: list = field(default_factory=list)  # PhotoView of each photo segmented
    statuses: list = field(default_factory=list)  # (photo, status, vessel fraction, flag or reason) of each
    measurements: list = field(default_factory=list)  # measure_items' rows, when measured


def runnable_models() -> dict[str, str]:
    """{name: task} of the models that can segment photos here: vessel and A/V models whose weights are present
    (or which need none)."""
    from retinaseg.models import default_weights
    from retinaseg.registry import all_models

    found = {}
    for name, spec in sorted(all_models().items()):
        weights = default_weights(spec)
        if spec.task in ("vessel", "av") and (weights is None or weights.is_file()):
            found[name] = spec.task
    return found


class _Relay:
    """A segmenter's notify: the lines go to the request being served."""

    def __init__(self):
        self.lines: list = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


class Models:
    """Segmenters loaded once and reused by later requests (the last MODELS_KEPT choices), one request at a time:
    the lock makes concurrent callers wait, as the app's queue does."""

    def __init__(self, device: str = "auto"):
        self.device = device
        self.lock = threading.Lock()
        self._loaded: OrderedDict = OrderedDict()

    def segmenter(self, choice: Choice, lines: list):
        from retinaseg.inference.segmenter import segmenter_of

        key = (choice.model, choice.vessel_model, choice.tta, choice.av_graph)
        if key not in self._loaded:
            relay = _Relay()
            self._loaded[key] = (segmenter_of(choice.model, vessel_model=choice.vessel_model, notify=relay,
                                              device=self.device, tta=choice.tta, av_graph=choice.av_graph), relay)
            while len(self._loaded) > MODELS_KEPT:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        segmenter, relay = self._loaded[key]
        relay.lines = lines
        return segmenter


def check_choice(choice: Choice) -> None:
    """The same refusals as the command line, as one sentence."""
    models = runnable_models()
    if choice.model not in models:
        raise RetinasegError(f"model {choice.model!r} cannot run here; choose one of: {', '.join(models)}")
    if choice.vessel_model and (models[choice.model] != "av" or models.get(choice.vessel_model) != "vessel"):
        raise RetinasegError("a vessel model goes with an artery/vein model, and must be a vessel model")
    if choice.av_graph and models[choice.model] != "av":
        raise RetinasegError("the A/V graph step is for artery/vein models")


def segment_photos(files: list, choice: Choice, models: Models, work_dir) -> Result:
    """The photos (paths; their names are kept) segmented as `retinaseg run --overlay --save-prob` would, into a
    new folder under work_dir, measured when chosen, zipped. Bad files give the runner's line and the rest go on."""
    from retinaseg.inference.runner import BatchConfig, run_batch

    check_choice(choice)
    if not files:
        raise RetinasegError("no photos: upload one or more, or take the sample photos")
    request = Path(work_dir) / uuid.uuid4().hex
    inputs, out = request / "photos", request / "retinaseg-output"
    inputs.mkdir(parents=True)
    for path in map(Path, files):
        shutil.copyfile(path, _free_name(inputs, path.name))
    lines: list = []
    with models.lock:
        segmenter = models.segmenter(choice, lines)
        summary = run_batch(segmenter, sorted(inputs.iterdir()), out, BatchConfig(**APP_BATCH),
                            notify=lines.append, progress=False)
        if summary.error:
            raise RetinasegError(summary.error)
        result = Result(out, request / ARCHIVE_NAME, summary.line())
        if choice.measure and summary.ok:
            from retinaseg.measure_batch import measure_run

            result.measurements = measure_run(out, summary.records, overlay=APP_BATCH["overlay"],
                                              notify=lines.append, progress=False)
    result.lines = [_named(line, inputs, out) for line in lines]
    views = request / "views"
    for record in summary.records:
        name = Path(record.input).name
        reason = _named(record.message or "", inputs, out) if record.status == "failed" else (record.flag or "")
        result.statuses.append((name, record.status, record.vessel_fraction, reason))
        if record.status == "ok":
            result.photos.append(_view(record, name, out, views))
    _zip(out, result.archive)
    return result


def _free_name(folder: Path, name: str) -> Path:
    """Two uploads of the same stem keep both (eye.png and eye.jpg too: the outputs are named by stem)."""
    stem, taken = Path(name).stem, {path.stem for path in folder.iterdir()}
    free = next(s for s in itertools.chain([stem], (f"{stem}-{n}" for n in itertools.count(2))) if s not in taken)
    return folder / f"{free}{Path(name).suffix}"


def _named(line: str, inputs: Path, out: Path) -> str:
    """The runner's line, naming the photo as uploaded rather than by the request's folder."""
    return line.replace(f"{inputs}/", "").replace(f"{out}/", "")


def _view(record, name: str, out: Path, views: Path) -> PhotoView:
    """PNGs of the photo (it may be a TIFF no browser shows) and of its probabilities, beside the runner's overlay."""
    from retinaseg.inference.outputs import OUTPUT_FOLDERS
    from retinaseg.io.atomic import write_png
    from retinaseg.io.images import read_photo, read_probabilities

    views.mkdir(parents=True, exist_ok=True)
    photo, probability = views / f"{record.stem}-photo.png", views / f"{record.stem}-probability.png"
    write_png(photo, np.clip(read_photo(record.input) * 255 + 0.5, 0, 255).astype(np.uint8))
    prob = read_probabilities(out / OUTPUT_FOLDERS["prob"] / f"{record.stem}.tif")
    write_png(probability, probability_picture(prob[0] if len(prob) == 1 else prob))
    from retinaseg.measure_batch import OVERLAY_FOLDER

    zones = out / OVERLAY_FOLDER / f"{record.stem}.png"
    return PhotoView(name, photo, out / OUTPUT_FOLDERS["overlay"] / f"{record.stem}.png", probability,
                     record.vessel_fraction, record.flag or "", zones if zones.is_file() else None)


def probability_picture(prob: np.ndarray) -> np.ndarray:
    """8-bit picture of a probability map: grey for vessels (HxW), or the A/V map's colours (CxHxW: artery red,
    vein blue, uncertain green) at each class's probability."""
    from retinaseg import av

    if prob.ndim == 2:
        return np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)
    colours = np.zeros(prob.shape[1:] + (3,), np.float32)
    for code in (av.ARTERY, av.VEIN, av.UNCERTAIN):
        colours += prob[code][..., None] * np.asarray(av.COLOURS[code], np.float32)
    return np.round(np.clip(colours, 0, 255)).astype(np.uint8)


def _zip(folder: Path, archive: Path) -> None:
    """The output folder as `retinaseg run` left it, its paths relative to it."""
    from retinaseg.io.atomic import atomic_path

    with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(folder).as_posix())
