"""The batch runner shared by every model: read -> working scale -> sliding window -> raw size -> write.

Reading runs in worker threads ahead of the network, and writing in a writer thread behind it, so decoding
and encoding overlap with compute. Each photo is resized so its FOV has the model's working diameter (or to a
fixed --resize), predicted by tiles or in one pass (with --tta once per test-time view, the views' probabilities
averaged at the output's size), and its probabilities are resized back to the raw size before thresholding.
Pixels outside the FOV are background.

Here: the threads, the order of photos, skipping and resuming, run.json. The working scale and back is
rescale.py, the call of the network predictor.py, tiling sliding_window.py, what is written outputs.py.
"""
from __future__ import annotations

import json
import platform
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from retinaseg import __version__
from retinaseg.errors import ImageReadError, RetinasegError
from retinaseg.inference import FEW_VESSELS
from retinaseg.inference.outputs import OUTPUT_FOLDERS, labels_of, overlay, render
from retinaseg.inference.predictor import make_predictor
from retinaseg.inference.rescale import Prepared, gate_with_fov, prepare, to_raw_size, to_work_size
from retinaseg.inference.sliding_window import SlidingWindow, predict_stream
from retinaseg.inference.views import PLAIN, View
from retinaseg.io.atomic import write_float_tiff, write_json, write_png
from retinaseg.io.images import is_image_name, read_binary_mask, read_photo
from retinaseg.io.inputs import InputPhoto
from retinaseg.models import LoadedModel, resolve_device


@dataclass
class RunConfig:
    device: str = "auto"
    # Batching gains nothing on CPU, and on a GPU batch 8 was slower than 1 on a long folder (README, Speed).
    batch_size: int = 1
    tile_size: int = 512
    overlap: float = 0.25
    whole_image_pixels: int = 1280 * 1280
    tta: Optional[bool] = None  # None: the model's (ModelSpec.tta)
    resize: Optional[tuple] = None  # (width, height): fixed working size instead of the FOV scale
    max_downscale: Optional[float] = None  # None: the weights' or model's (LoadedModel.max_downscale); 0: no limit
    save_prob: bool = False
    overlay: bool = False
    overwrite: bool = False
    fov_dir: Optional[str] = None
    # FOV diameter (raw pixels) of photos whose FOV fills the frame: a crop inside the retina shows no edge to
    # measure, and scaling it as if the frame were the FOV shows its vessels too wide
    raw_fov_diameter: Optional[int] = None
    workers: int = 2


@dataclass
class ImageRecord:
    input: str
    stem: str  # output name: the file stem, with sub-folders under --recursive
    status: str = "pending"  # ok, skipped, failed
    message: str = ""
    # the run's wall time between this photo's prediction and the one before: these sum to about the run's time
    seconds: float = 0.0
    read_seconds: float = 0.0  # reading and preparing it, in a reader thread, overlapped with other photos
    raw_size: Optional[list] = None  # [width, height]
    working_size: Optional[list] = None
    fov_diameter: Optional[int] = None
    vessel_fraction: Optional[float] = None  # share of the FOV labelled vessel: sort by it to find failed photos

    @property
    def few_vessels(self) -> bool:
        return self.vessel_fraction is not None and self.vessel_fraction < FEW_VESSELS


MEASURED = ("raw_size", "working_size", "fov_diameter", "vessel_fraction")  # per photo, kept across resumed runs


def _earlier_records(report: Path) -> dict:
    """stem -> what an earlier run.json in the same output folder recorded of each photo done."""
    try:
        images = json.loads(report.read_text())["images"]
        return {r["stem"]: r for r in images if r.get("status") in ("ok", "skipped")}
    except (OSError, ValueError, KeyError, TypeError):  # no earlier report, or an unreadable one: nothing to keep
        return {}


@dataclass
class RunSummary:
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    records: list = field(default_factory=list)

    @property
    def few_vessels(self) -> int:
        """Photos written but flagged "check the photo" (those done by an earlier run included)."""
        return sum(r.few_vessels for r in self.records)

    @property
    def success(self) -> bool:
        return self.failed == 0

    def line(self) -> str:
        processed = self.ok / self.seconds if self.seconds > 0 else 0.0
        flagged = f"; {self.few_vessels} with few vessels found (see run.json)" if self.few_vessels else ""
        return (f"{self.ok} ok, {self.skipped} skipped, {self.failed} failed in {self.seconds:.1f} s "
                f"({processed:.2f} images/s){flagged}")


class Runner:
    """Runs one loaded model over many photos. An A/V model may take its vessel/background split from a binary
    vessel model (vessel_model), which then runs beside it on each photo at its own working scale."""

    def __init__(self, model: LoadedModel, config: RunConfig = RunConfig(), notify: Callable[[str], None] = print,
                 vessel_model: Optional[LoadedModel] = None):
        self.model, self.config, self.notify = model, config, notify
        self.vessel_runner = None
        if vessel_model is not None:
            if model.classes == 1:
                raise RetinasegError(f"a vessel model gates an A/V model's vessels; {model.spec.name!r} is itself "
                                     f"a binary vessel model")
            if vessel_model.classes != 1:
                raise RetinasegError(f"the vessel model must be a binary vessel model; {vessel_model.spec.name!r} "
                                     f"has {vessel_model.classes} classes")
            # at its own working scale and test-time views; otherwise as this runner (device, tiles, FOV diameter)
            self.vessel_runner = Runner(vessel_model, replace(config, tta=None, max_downscale=None), notify)
        self.device = resolve_device(config.device)
        if config.max_downscale is None:
            config = replace(config, max_downscale=model.max_downscale)
        if config.tta is None:
            config = replace(config, tta=model.spec.tta)
        self.config = config
        divisor = model.config["size_divisor"]
        tile = max(divisor, config.tile_size // divisor * divisor)
        self.window = SlidingWindow(tile_size=tile, overlap=config.overlap, size_divisor=divisor,
                                    whole_image_pixels=config.whole_image_pixels)
        self.predictor = make_predictor(model, self.device, notify)
        self.views = tuple(model.spec.tta_views) if config.tta else (PLAIN,)
        self._told_frame_is_fov = False  # the warning for photos whose FOV fills the frame: once per run

    # -- in memory (used by `retinaseg eval` and tests) -----------------------------------------------------
    def prepare(self, photo: np.ndarray, fov: Optional[np.ndarray] = None, index: int = 0,
                keep_photo: bool = False) -> Prepared:
        prepared = prepare(photo, fov, self.model.fov_diameter, self.config.resize, index,
                           keep_photo or self.vessel_runner is not None, self.config.max_downscale,
                           self.config.raw_fov_diameter)
        prepared.view_inputs = [self._view_input(photo, prepared, view) for view in self.views]
        return prepared

    def _view_input(self, photo: np.ndarray, prepared: Prepared, view: View) -> tuple:
        """(image, FOV) of the FOV crop at the view's scale: the same raw region, so its prediction resizes back
        onto it."""
        image, fov = prepared.image, prepared.fov_work
        if view.scale != 1:
            fixed = self.config.resize and tuple(round(side * view.scale) for side in self.config.resize)
            cap = self.config.max_downscale
            scaled = prepare(photo, prepared.fov_raw, round(self.model.fov_diameter * view.scale), fixed,
                             max_downscale=cap / view.scale if cap else cap,
                             raw_fov_diameter=self.config.raw_fov_diameter)
            image, fov = scaled.image, scaled.fov_work
        return (torch.flip(image, view.dims) if view.dims else image), fov

    def predict_prepared(self, items: Iterable[Prepared]) -> Iterator[tuple[Prepared, list]]:
        """Yield (prepared, crop probabilities) in input order: one KxHxW tensor at the working scale, or with
        test-time views one per view at its own scale, flips undone (to_raw_size and to_work_size merge them)."""
        pending: dict = {}

        def stream():
            for item in items:
                pending[item.index] = item
                for view, (image, _) in enumerate(item.view_inputs):
                    yield (item.index, view), image

        view_probs = []  # the current photo's, one per view, in the order of self.views
        for (index, _), prob in predict_stream(stream(), self.predictor, self.window, self.config.batch_size):
            view_probs.append(prob)
            if len(view_probs) < len(self.views):
                continue
            item = pending.pop(index)
            probs = [gate_with_fov(torch.flip(prob, view.dims) if view.dims else prob, fov)
                     for prob, view, (_, fov) in zip(view_probs, self.views, item.view_inputs, strict=True)]
            view_probs, item.view_inputs = [], None
            if self.vessel_runner is not None:
                item.vessel = self.vessel_runner.predict(item.photo, item.fov_raw)
                if not self.config.overlay:
                    item.photo = None
            yield item, probs

    def predict(self, photo: np.ndarray, fov: Optional[np.ndarray] = None) -> np.ndarray:
        """Raw-size probabilities (KxHxW) for one photo."""
        prepared = self.prepare(photo, fov)
        _, probs = next(self.predict_prepared([prepared]))
        return to_raw_size(probs, prepared)

    # -- on files -------------------------------------------------------------------------------------------
    def outputs(self, out_dir: Path, stem: str) -> dict:
        paths = {"small": out_dir / OUTPUT_FOLDERS["small"] / f"{stem}.png",
                 "raw": out_dir / OUTPUT_FOLDERS["raw"] / f"{stem}.png"}
        if self.config.save_prob:
            paths["prob"] = out_dir / OUTPUT_FOLDERS["prob"] / f"{stem}.tif"
        if self.config.overlay:
            paths["overlay"] = out_dir / OUTPUT_FOLDERS["overlay"] / f"{stem}.png"
        return paths

    def _read(self, path: Path, index: int) -> Prepared:
        started = time.perf_counter()
        photo = read_photo(path)
        fov = None
        if self.config.fov_dir:
            fov_path = _find_fov(Path(self.config.fov_dir), path.stem)
            fov = read_binary_mask(fov_path)
            if fov.shape != photo.shape[:2]:
                raise ImageReadError(f"{fov_path}: FOV mask is {fov.shape[1]}x{fov.shape[0]} but {path.name} is "
                                     f"{photo.shape[1]}x{photo.shape[0]}")
        prepared = self.prepare(photo, fov, index, keep_photo=self.config.overlay)
        unmeasured = prepared.fov_raw.all() and not (self.config.raw_fov_diameter or self.config.resize)
        if unmeasured and not self._told_frame_is_fov:  # a photo with no FOV edge: nothing to measure its size by
            self._told_frame_is_fov = True
            self.notify(f"warning: {path.name}: no dark surround, so the frame is taken as the FOV; for crops of a "
                        f"larger retina give --raw-fov-diameter (said once per run)")
        prepared.seconds = time.perf_counter() - started
        return prepared

    def _write(self, paths: dict, prepared: Prepared, probs: list) -> float:
        """Writes a photo's outputs; returns the share of its FOV labelled vessel."""
        small = labels_of(to_work_size(probs, prepared).numpy())
        write_png(paths["small"], render(small))
        prob = to_raw_size(probs, prepared)
        labels = labels_of(prob)
        if "prob" in paths:
            write_float_tiff(paths["prob"], prob[0] if prob.shape[0] == 1 else prob)
        if "overlay" in paths:
            write_png(paths["overlay"], overlay(prepared.photo, labels))
        write_png(paths["raw"], render(labels))  # last: its presence marks the image as done
        return float((labels > 0)[prepared.fov_raw].mean()) if prepared.fov_raw.any() else 0.0

    def run(self, inputs: list, out_dir, progress: bool = True) -> RunSummary:
        """Process InputPhoto items (or plain paths, named by their stems) into out_dir."""
        from tqdm import tqdm

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        records = [ImageRecord(str(p.path), p.name) if isinstance(p, InputPhoto) else ImageRecord(str(p), Path(p).stem)
                   for p in inputs]
        todo = self._select(records, out_dir)
        self._told_frame_is_fov = False
        bar = tqdm(total=len(records), unit="img", desc="segmenting", disable=not progress, dynamic_ncols=True)
        bar.update(len(records) - len(todo))

        def fail(record: ImageRecord, message: str):
            record.status, record.message = "failed", message
            self.notify(f"failed: {message}")

        readers = ThreadPoolExecutor(max(1, self.config.workers), thread_name_prefix="retinaseg-read")
        writer = ThreadPoolExecutor(1, thread_name_prefix="retinaseg-write")
        writes: deque = deque()
        lookahead = self.config.batch_size + 2

        def prepared_items() -> Iterator[Prepared]:
            queue: deque = deque()
            paths = iter(todo)
            while True:
                while len(queue) < lookahead:
                    index = next(paths, None)
                    if index is None:
                        break
                    queue.append((index, readers.submit(self._read, Path(records[index].input), index)))
                if not queue:
                    return
                index, future = queue.popleft()
                try:
                    yield future.result()
                except ImageReadError as exc:
                    fail(records[index], str(exc))
                    bar.update(1)
                except Exception as exc:  # a bad file must not stop the batch
                    fail(records[index], f"{records[index].input}: {type(exc).__name__}: {exc}")
                    bar.update(1)

        def finish(future: Future, record: ImageRecord):
            try:
                record.vessel_fraction = round(future.result(), 4)
                record.status = "ok"
                if record.few_vessels:
                    record.message = f"few vessels found ({record.vessel_fraction:.1%} of the FOV): check the photo"
                    self.notify(f"warning: {record.input}: {record.message}")
            except Exception as exc:
                fail(record, f"{record.input}: could not write outputs ({type(exc).__name__}: {exc})")
            bar.update(1)

        try:
            last = time.perf_counter()
            for prepared, probs in self.predict_prepared(prepared_items()):
                record = records[prepared.index]
                now = time.perf_counter()
                record.seconds, record.read_seconds = round(now - last, 3), round(prepared.seconds, 3)
                last = now
                record.raw_size = [int(prepared.raw_size[1]), int(prepared.raw_size[0])]
                record.working_size = [int(prepared.work_size[1]), int(prepared.work_size[0])]
                record.fov_diameter = prepared.diameter
                paths = self.outputs(out_dir, record.stem)
                writes.append((writer.submit(self._write, paths, prepared, probs), record))
                while len(writes) > lookahead or (writes and writes[0][0].done()):
                    finish(*writes.popleft())
            while writes:
                finish(*writes.popleft())
        finally:
            readers.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True)
            bar.close()
            summary = RunSummary(
                ok=sum(r.status == "ok" for r in records), skipped=sum(r.status == "skipped" for r in records),
                failed=sum(r.status in ("failed", "pending") for r in records),
                seconds=time.perf_counter() - started, records=records)
            for r in records:
                if r.status == "pending":
                    r.status, r.message = "failed", "interrupted before it was processed"
            write_json(out_dir / "run.json", self._report(records, summary, started_at))
        return summary

    def _select(self, records: list[ImageRecord], out_dir: Path) -> list[int]:
        """Indices to process: not already done (unless overwrite), and not clashing with another input's
        output name. A photo done by an earlier run keeps what that run's run.json measured of it."""
        todo, owners = [], {}
        earlier = _earlier_records(out_dir / "run.json")
        for i, record in enumerate(records):
            if record.stem in owners:
                record.status = "failed"
                record.message = (f"{record.input}: output name {record.stem!r} is already used by "
                                  f"{records[owners[record.stem]].input}; rename one of them")
                self.notify(f"failed: {record.message}")
                continue
            owners[record.stem] = i
            if not self.config.overwrite and all(p.exists() for p in self.outputs(out_dir, record.stem).values()):
                record.status, record.message = "skipped", "outputs exist (use --overwrite to redo)"
                for key in MEASURED:
                    setattr(record, key, earlier.get(record.stem, {}).get(key))
                continue
            todo.append(i)
        return todo

    def _report(self, records, summary: RunSummary, started_at: str) -> dict:
        from importlib.metadata import PackageNotFoundError, version

        def installed(package):
            try:
                return version(package)
            except PackageNotFoundError:
                return None

        device = str(self.device)
        if self.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(self.device)})"
        settings = asdict(self.config)
        settings.update(tile_size=self.window.tile_size, size_divisor=self.window.size_divisor,
                        views=[str(view) for view in self.views])
        return {
            "model": self.model.spec.name,
            "model_config": self.model.config,
            "weights": str(self.model.weights) if self.model.weights else None,
            "weights_sha256": self.model.weights_sha256,
            "vessel_model": None if self.vessel_runner is None else {
                "model": self.vessel_runner.model.spec.name,
                "weights": str(self.vessel_runner.model.weights) if self.vessel_runner.model.weights else None,
                "weights_sha256": self.vessel_runner.model.weights_sha256,
                "settings": {k: v for k, v in asdict(self.vessel_runner.config).items()
                             if k in ("tta", "max_downscale", "batch_size")}},
            "settings": settings,
            "device": device,
            "versions": {"retinaseg": __version__, "python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": installed("torchvision"), "numpy": np.__version__,
                         "segmentation_models_pytorch": installed("segmentation-models-pytorch")},
            "started": started_at,
            "seconds": round(summary.seconds, 3),
            "summary": {"ok": summary.ok, "skipped": summary.skipped, "failed": summary.failed,
                        "few_vessels": summary.few_vessels},
            "images": [asdict(r) for r in records],
        }


def _find_fov(folder: Path, stem: str) -> Path:
    candidates = sorted(p for p in folder.glob(f"{stem}*") if is_image_name(p.name))
    exact = [p for p in candidates if p.stem in (stem, f"{stem}_mask", f"{stem}_fov")]
    if not exact:
        raise ImageReadError(f"{folder}: no FOV mask for {stem} (looked for {stem}, {stem}_mask, {stem}_fov "
                             f"with an image extension)")
    return exact[0]
