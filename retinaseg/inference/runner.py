"""The batch runner shared by every model: photos on disk -> the segmenter -> outputs on disk.

Reading runs in worker processes ahead of the network, and writing in the same processes behind it, so decoding
and encoding overlap with compute on every core (workers.py). Here: the order of photos, skipping and resuming,
run.json. How a photo is segmented is segmenter.py; what is written of it outputs.py.

An output folder holds one model's outputs: run.json records what made them (model, weights, the settings that
change them), and a later run with another model or such settings refuses to skip them as done, unless told
to redo them (--overwrite).
"""
from __future__ import annotations

import json
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from retinaseg.cores import available_cores
from retinaseg.errors import ImageReadError, RetinasegError, shown
from retinaseg.inference import FEW_VESSELS
from retinaseg.inference.outputs import OUTPUT_FOLDERS, labels_of, overlay, render
from retinaseg.inference.rescale import Prepared, to_raw_size, to_work_size
from retinaseg.inference.segmenter import Segmenter
from retinaseg.inference.workers import Workers, perform, single_threaded
from retinaseg.io.atomic import TEMP_SUFFIX, remove_stale_temp_files, write_json, write_png, write_probabilities
from retinaseg.io.images import read_binary_mask, read_photo
from retinaseg.io.inputs import InputPhoto, mask_of
from retinaseg.provenance import versions
from retinaseg.vessel_graph import graph_of

REPORT = "run.json"  # a shard's is run-K-of-N.json (--shard K/N), so shards share a folder without clashing
REPORT_EVERY_SECONDS = 30  # run.json is rewritten this often, so a killed run keeps what it measured
SUGGEST_AFTER_PHOTOS = 20  # fewer photos are mostly start-up: no advice on --workers from them


@dataclass(frozen=True)
class BatchConfig:
    save_prob: bool = False
    overlay: bool = False
    overwrite: bool = False
    fov_dir: Optional[str] = None
    workers: int = 2
    save_graph: bool = False  # graph/<stem>.json: the vessel graph of the raw-size map
    shard: Optional[tuple] = None  # (K, N): this run is shard K of N, and records itself in run-K-of-N.json

    @property
    def report_name(self) -> str:
        return f"run-{self.shard[0]}-of-{self.shard[1]}.json" if self.shard else REPORT


@dataclass
class ImageRecord:
    input: str
    stem: str  # output name: the file stem, with sub-folders under --recursive
    status: str = "pending"  # ok, skipped, failed
    message: str = ""
    # the run's wall time between this photo's prediction and the one before: these sum to about the run's time
    seconds: float = 0.0
    read_seconds: float = 0.0  # reading and preparing it, in a worker process, overlapped with other photos
    raw_size: Optional[list] = None  # [width, height]
    working_size: Optional[list] = None
    fov_diameter: Optional[int] = None
    vessel_fraction: Optional[float] = None  # share of the FOV labelled (vessel, or disc): sort by it to find odd ones
    flag: Optional[str] = None  # written, but to be checked: "few vessels found", "no optic disc found", ...


MEASURED = ("raw_size", "working_size", "fov_diameter", "vessel_fraction", "flag")  # kept across resumed runs
FEW_VESSELS_FOUND, NO_DISC_FOUND = "few vessels found", "no optic disc found"
DISC_RIVALS = "another region that would pass as a disc"  # disc.rival_discs: the disc kept may be a lesion


def flag_for(task: str, fraction: float, rivals: int = 0) -> Optional[str]:
    """Why a photo's map should be checked, if it should: few vessels for a vessel or A/V map; no disc, or rivals
    to the disc kept, for a disc map."""
    if task == "disc":
        return NO_DISC_FOUND if fraction == 0 else DISC_RIVALS if rivals else None
    return FEW_VESSELS_FOUND if fraction < FEW_VESSELS else None


@dataclass
class RunSummary:
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    records: list = field(default_factory=list)
    error: str = ""  # what stopped the run as a whole (an output folder that cannot be written)

    def flagged(self) -> dict:
        """flag -> how many photos were written but flagged "check the photo" (earlier runs' included)."""
        counts: dict = {}
        for record in self.records:
            if record.flag:
                counts[record.flag] = counts.get(record.flag, 0) + 1
        return counts

    def flag_counts(self) -> str:
        """e.g. "2 with few vessels found"; empty when no photo is flagged."""
        return ", ".join(f"{n} with {flag}" for flag, n in self.flagged().items())

    @property
    def success(self) -> bool:
        return self.failed == 0 and not self.error

    def line(self) -> str:
        processed = self.ok / self.seconds if self.seconds > 0 else 0.0
        flagged = f"; {self.flag_counts()} (see run.json)" if self.flagged() else ""
        return (f"{self.ok} ok, {self.skipped} skipped, {self.failed} failed in {self.seconds:.1f} s "
                f"({processed:.2f} images/s){flagged}")


def output_paths(out_dir: Path, stem: str, config: BatchConfig) -> dict:
    paths = {"small": out_dir / OUTPUT_FOLDERS["small"] / f"{stem}.png",
             "raw": out_dir / OUTPUT_FOLDERS["raw"] / f"{stem}.png"}
    if config.save_prob:
        paths["prob"] = out_dir / OUTPUT_FOLDERS["prob"] / f"{stem}.tif"
    if config.overlay:
        paths["overlay"] = out_dir / OUTPUT_FOLDERS["overlay"] / f"{stem}.png"
    if config.save_graph:
        paths["graph"] = out_dir / OUTPUT_FOLDERS["graph"] / f"{stem}.json"
    return paths


def shard_of(items: list, shard: Optional[tuple]) -> list:
    """Shard K of N (1 <= K <= N) of a sorted input list: every N-th item from the K-th, so the N shards are
    disjoint, cover every input, and differ in size by at most one (as nnU-Net's -part_id/-num_parts)."""
    if shard is None:
        return list(items)
    k, n = shard
    return list(items)[k - 1::n]


def run_records(out_dir) -> list[tuple[Path, dict]]:
    """Every run record in out_dir (run.json and the shards' run-K-of-N.json) that can be read, by name."""
    records = []
    for path in sorted(Path(out_dir).glob("run*.json")):
        if path.name != REPORT and not re.fullmatch(r"run-\d+-of-\d+\.json", path.name):
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and isinstance(report.get("images"), list):
            records.append((path, report))
    return records


def task_of(report: dict) -> Optional[str]:
    """What a run record's maps mark (vessel, av or disc): as recorded, or for a record from before that was, its
    model's task (None for a model no installed plugin registers)."""
    from retinaseg.errors import UnknownNameError
    from retinaseg.registry import get_model

    try:
        return report.get("task") or get_model(str(report.get("model"))).task
    except UnknownNameError:
        return None


def combined_records(records: list[tuple[Path, dict]]) -> RunSummary:
    """One summary of several run records (a sharded run's): each photo once, a photo in several records (a
    shard run again) counting as done if any record did it."""
    latest: dict = {}
    for _, report in records:
        for image in report["images"]:
            previous = latest.get(image["stem"])
            if previous is None or image.get("status") in ("ok", "skipped") or previous.get("status") == "failed":
                latest[image["stem"]] = image
    names = {f.name for f in fields(ImageRecord)}
    images = [ImageRecord(**{k: v for k, v in image.items() if k in names}) for image in latest.values()]
    for image in images:
        if image.status not in ("ok", "skipped"):
            image.status = "failed"
    statuses = [image.status for image in images]
    return RunSummary(ok=statuses.count("ok"), skipped=statuses.count("skipped"), failed=statuses.count("failed"),
                      records=images)


def run_batch(segmenter: Segmenter, inputs: list, out_dir, config: BatchConfig = BatchConfig(),
              notify: Callable[[str], None] = print, progress: bool = True,
              process: Optional[Callable] = None) -> RunSummary:
    """Segment InputPhoto items (or plain paths, named by their stems) into out_dir. One bad photo fails alone;
    a folder that cannot be written ends the run with summary.error set. process(job, todo), when given, does the
    photos instead of the local threads (inference/ray_executor.py)."""
    return _BatchJob(segmenter, config, notify, Path(out_dir), inputs).run(progress, process)


def made_with(description: dict) -> dict:
    """What decides a folder's outputs, from Segmenter.describe(): the weights by content, not by path."""
    return {"model": description["model"], "weights_sha256": description["weights_sha256"],
            "settings": description.get("settings"),
            "vessel_model": made_with(description["vessel_model"]) if description.get("vessel_model") else None}


class _BatchJob:
    """One run over files: its records, progress bar, worker processes, and run.json."""

    def __init__(self, segmenter: Segmenter, config: BatchConfig, notify: Callable[[str], None], out_dir: Path,
                 inputs: list):
        self.segmenter, self.config, self.notify, self.out_dir = segmenter, config, notify, out_dir
        self.records = [ImageRecord(str(p.path), p.name) if isinstance(p, InputPhoto)
                        else ImageRecord(str(p), Path(p).stem) for p in inputs]
        self.started = time.perf_counter()
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.told_frame_is_fov = False  # the warning for photos whose FOV fills the frame: once per run
        self.bar = None
        self.lookahead = segmenter.config.batch_size + 2
        # seconds the network's process spent waiting for its workers (photos to read, written ones to make room),
        # and the seconds from the first photo sent to the last through the network: the first's share of the second
        # says whether more workers would feed the network faster
        self.waited_for_workers = self.network_seconds = 0.0

    def run(self, progress: bool, process: Optional[Callable] = None) -> RunSummary:
        """Opens the folder, processes the photos to do (by default here, in threads; `process(job, todo)` is
        another executor's, e.g. Ray's), and writes the run record, whatever happened."""
        from tqdm import tqdm

        try:
            todo = self._open_folder()
        except OSError as exc:
            return self._stopped(f"{shown(self.out_dir)}: cannot write the output folder ({_reason(exc)})")
        self.bar = tqdm(total=len(self.records), unit="img", desc="segmenting", disable=not progress,
                        dynamic_ncols=True)
        self.bar.update(len(self.records) - len(todo))
        try:
            (process or _BatchJob._process_here)(self, todo)
        finally:
            self.bar.close()
            for record in self.records:
                if record.status == "pending":
                    record.status, record.message = "failed", "interrupted before it was processed"
            summary = self._summary()
            self._save_report(summary, final=True)
        return summary

    def _process_here(self, todo: list[int]) -> None:
        """Photos read in worker processes ahead of the network and written by them behind it (workers.py), the
        network here, in input order."""
        # in flight at once: up to lookahead photos read ahead, a batch in the network, lookahead being written
        with Workers(self, self.config.workers, in_flight=2 * self.lookahead + self.segmenter.config.batch_size) \
                as workers:
            ready, failed, writing = {}, set(), set()

            def handle(event: tuple) -> None:
                kind, index, value, error = event
                record = self.records[index]
                if kind == "read":
                    if error is None:
                        ready[index] = value
                    else:
                        failed.add(index)
                        self._fail(record, error)
                        self.bar.update(1)
                    return
                writing.discard(index)
                self._finish(record, value, error)

            def wait_for_workers() -> None:
                waiting = time.perf_counter()
                handle(workers.event())
                self.waited_for_workers += time.perf_counter() - waiting

            submitted: deque = deque()
            indices = iter(todo)

            def submit() -> None:
                while len(submitted) < self.lookahead and (index := next(indices, None)) is not None:
                    workers.read(index, Path(self.records[index].input))
                    submitted.append(index)

            def prepared_in_order() -> Iterator[Prepared]:
                while True:
                    submit()
                    if not submitted:
                        return
                    index = submitted.popleft()
                    while index not in ready and index not in failed:
                        wait_for_workers()
                    if index in ready:
                        yield self._arrived(ready.pop(index), self.records[index].input)

            submit()
            self.segmenter.make_ready()  # while the workers read the first photos
            first = last = saved = time.perf_counter()
            for prepared, probs in self.segmenter.predict_prepared(prepared_in_order(), as_seen=True):
                record = self.records[prepared.index]
                now = time.perf_counter()
                record.seconds, record.read_seconds = round(now - last, 3), round(prepared.seconds, 3)
                last = now
                _note_sizes(record, prepared)
                workers.write(prepared.index, output_paths(self.out_dir, record.stem, self.config), probs,
                              prepared.vessel)
                writing.add(prepared.index)
                while len(writing) > self.lookahead:
                    wait_for_workers()
                if now - saved > REPORT_EVERY_SECONDS:
                    self._save_report(self._summary(), final=False)
                    saved = now
            self.network_seconds = time.perf_counter() - first
            self._suggest_workers(len(todo), workers.count)
            while writing:
                handle(workers.event())

    def _suggest_workers(self, photos: int, workers: int) -> None:
        """Says so when the network waited for its worker processes (none where they cannot be forked) most of a
        long run and the machine has cores to spare for more of them (a GPU fed by the default two, typically)."""
        if workers < 1 or photos < SUGGEST_AFTER_PHOTOS or self.network_seconds <= 0:
            return
        cores = available_cores()
        share = self.waited_for_workers / self.network_seconds
        if share > 0.5 and cores > workers + 1:
            self.notify(f"note: the network waited for its {workers} worker process(es) {share:.0%} of the run; "
                        f"with {cores} cores here, more --workers (up to {cores - 1}) may be faster")

    def segment_one(self, record: ImageRecord) -> None:
        """One photo read, segmented and written, as _process_here does it (an executor's unit of work); the
        record says how it went."""
        held: dict = {}
        self.records = [record]  # index 0 of the tasks below: where _read finds the photo's name (for its masks)
        _, _, prepared, error = perform(self, ("read", 0, Path(record.input)), held)
        if error is not None:
            self._fail(record, error)
            return
        started = time.perf_counter()
        arrived = [self._arrived(prepared, record.input)]
        for prepared, probs in self.segmenter.predict_prepared(arrived, as_seen=True):
            _note_sizes(record, prepared)
            record.read_seconds = round(prepared.seconds, 3)
            paths = output_paths(self.out_dir, record.stem, self.config)
            _, _, written, error = perform(self, ("write", 0, paths, probs, prepared.vessel), held)
            self._finish(record, written, error)
        record.seconds = round(time.perf_counter() - started + record.read_seconds, 3)

    # -- the folder -------------------------------------------------------------------------------------------
    def _open_folder(self) -> list[int]:
        """Creates the folder, removes what killed runs left, checks that its outputs were made the way this
        run makes them, and records this run in run.json before any photo. Returns the indices to process."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        candidates = [*self.out_dir.glob(f".*{TEMP_SUFFIX}"),
                      *(p for folder in OUTPUT_FOLDERS.values() if (self.out_dir / folder).is_dir()
                        for p in (self.out_dir / folder).rglob(f".*{TEMP_SUFFIX}"))]
        removed = remove_stale_temp_files(candidates)
        if removed:
            self.notify(f"note: removed {removed} temporary file(s) left by an interrupted run")
        earlier = self._earlier_report()
        todo = self._select(earlier.get("images", {}))
        skipped = sum(r.status == "skipped" for r in self.records)
        if skipped and earlier.get("made_with") is None:
            self.notify(f"note: {skipped} photo(s) already have outputs in {shown(self.out_dir)}, and no run.json "
                        f"says what made them; they are taken as done (--overwrite redoes them)")
        elif skipped:
            self._check_made_alike(earlier["made_with"])
        self._save_report(self._summary(), final=False)  # raises OSError when the folder cannot be written
        return todo

    def _earlier_report(self) -> dict:
        """What the earlier run records in this folder (run.json, the shards' too) say: what made their outputs,
        and stem -> record of each photo done."""
        images, made = {}, []
        for _, report in run_records(self.out_dir):
            try:
                images.update({r["stem"]: r for r in report["images"] if r.get("status") in ("ok", "skipped")})
                # a run.json written before made_with existed says at least the model and weights
                made.append(report.get("made_with") or {"model": report["model"],
                                                        "weights_sha256": report.get("weights_sha256")})
            except (KeyError, TypeError, AttributeError):  # not one of ours
                continue
        return {"made_with": made or None, "images": images}

    def _made_with(self, description: dict) -> dict:
        """made_with(), and the FOV masks the photos were read with (they set each photo's scale and gate its map)."""
        return {**made_with(description), "fov_masks": self.config.fov_dir}

    def _check_made_alike(self, earlier: list) -> None:
        """Outputs about to be skipped as done must have been made as this run makes them."""
        ours = self._made_with(self.segmenter.describe())
        differs = sorted({key.replace("_", " ") for record in earlier for key in record
                          if record[key] != ours.get(key)})
        if differs:
            raise RetinasegError(
                f"{shown(self.out_dir)} holds outputs that its run.json says were made otherwise (other "
                f"{', '.join(differs)}; model {earlier[0].get('model')!r}, this run {ours['model']!r}): they would be "
                f"skipped as done and mixed with this run's. Use --overwrite to redo them, or another output folder")

    def _select(self, earlier: dict) -> list[int]:
        """Indices to process: not already done (unless overwrite), and not clashing with another input's
        output name. A photo done by an earlier run keeps what that run's run.json measured of it."""
        todo, owners = [], {}
        for i, record in enumerate(self.records):
            if record.stem in owners:
                self._fail(record, f"{shown(record.input)}: output name {record.stem!r} is already used by "
                                   f"{shown(self.records[owners[record.stem]].input)}; rename one of them")
                continue
            owners[record.stem] = i
            paths = output_paths(self.out_dir, record.stem, self.config).values()
            if not self.config.overwrite and all(p.exists() for p in paths):
                record.status, record.message = "skipped", "outputs exist (use --overwrite to redo)"
                for key in MEASURED:
                    setattr(record, key, earlier.get(record.stem, {}).get(key))
                continue
            todo.append(i)
        return todo

    def _stopped(self, problem: str) -> RunSummary:
        self.notify(f"error: {problem}")
        for record in self.records:
            record.status, record.message = "failed", f"not processed: {problem}"
        summary = self._summary()
        summary.error = problem
        return summary

    # -- photos in ---------------------------------------------------------------------------------------------
    def read(self, path: Path, index: int) -> Prepared:
        """A photo read and prepared for the network (in a worker process)."""
        with single_threaded():
            return self._read(path, index)

    def _read(self, path: Path, index: int) -> Prepared:
        started = time.perf_counter()
        fov = fov_path = None
        if self.config.fov_dir:
            name = self.records[index].stem
            fov_path = mask_of(self.config.fov_dir, name)
            if fov_path is None:
                raise ImageReadError(f"{shown(path)}: no FOV mask in {shown(self.config.fov_dir)} (looked for "
                                     f"{shown(name)} or {shown(name)}_<anything> with an image extension)")
            fov = read_binary_mask(fov_path)
        photo, fov, raw_size = self.segmenter.read(path, fov, fov_path)
        prepared = self.segmenter.prepare(photo, fov, index, raw_size=raw_size)
        prepared.source = str(path)
        if self.config.overlay and photo.shape[:2] == raw_size:  # decoded whole: the overlay's, kept in this worker
            prepared.photo = photo
        settings = self.segmenter.config
        prepared.frame_is_fov = bool(prepared.fov_raw.all()) and not (settings.raw_fov_diameter or settings.resize)
        prepared.seconds = time.perf_counter() - started
        return prepared

    def _arrived(self, prepared: Prepared, path) -> Prepared:
        """A prepared photo (of the file at path) reaching the network: what its preparation found is said here,
        once per run."""
        if prepared.frame_is_fov and not self.told_frame_is_fov:  # no FOV edge: nothing to measure its size by
            self.told_frame_is_fov = True
            self.notify(f"warning: {shown(path)}: no dark surround, so the frame is taken as the FOV; for "
                        f"crops of a larger retina give --raw-fov-diameter (said once per run)")
        return prepared

    def error_text(self, exc: Exception, path: Optional[Path] = None) -> str:
        """The one-line message of a photo that failed: reading it (path given), or writing its outputs."""
        if path is None:
            return f"{type(exc).__name__}: {_reason(exc)}"
        return str(exc) if isinstance(exc, ImageReadError) else f"{shown(path)}: {type(exc).__name__}: {_reason(exc)}"

    # -- outputs out -------------------------------------------------------------------------------------------
    def write(self, paths: dict, prepared: Prepared, probs: list) -> tuple:
        """Writes a photo's outputs (in a worker process); returns the share of its FOV labelled (vessel, or disc)
        and the flag to check it by, if any (flag_for)."""
        with single_threaded():
            return self._write(paths, prepared, probs)

    def _write(self, paths: dict, prepared: Prepared, probs: list) -> tuple:
        probs = self.segmenter.views_undone(probs, prepared.view_inputs)  # the network's process left it to here
        small = labels_of(self.segmenter.finish(to_work_size(probs, prepared).numpy(), prepared)[0])
        write_png(paths["small"], render(small))
        task = self.segmenter.model.spec.task
        prob, found = self.segmenter.finish(to_raw_size(probs, prepared), prepared)
        rivals, graph = (found.rivals, None) if task == "disc" else (0, found)  # the disc kept, or the vessel graph
        labels = labels_of(prob)
        if "graph" in paths:
            if graph is None:
                graph = graph_of(prob)[0]
            write_json(paths["graph"], graph.to_json(), indent=None)
        if "prob" in paths:
            write_probabilities(paths["prob"], prob[0] if prob.shape[0] == 1 else prob)
        if "overlay" in paths:
            photo = prepared.photo  # on the photo decoded whole: decoded again if it was read reduced
            whole = photo is not None and photo.shape[:2] == prepared.raw_size
            write_png(paths["overlay"], overlay(photo if whole else read_photo(prepared.source), labels))
        write_png(paths["raw"], render(labels))  # last: its presence marks the image as done
        fov_pixels = np.count_nonzero(prepared.fov_raw)  # counts, not a boolean index: a fifth of the time
        fraction = round(np.count_nonzero((labels > 0) & prepared.fov_raw) / fov_pixels if fov_pixels else 0.0, 4)
        return fraction, flag_for(task, fraction, rivals)

    def _finish(self, record: ImageRecord, written: Optional[tuple], error: Optional[str]) -> None:
        """Records how writing went: the share of the FOV labelled and its flag (write), or the error that stopped
        it."""
        if error is None:
            record.vessel_fraction, record.flag = written
            record.status = "ok"
            if record.flag:
                record.message = f"{record.flag} ({record.vessel_fraction:.1%} of the FOV): check the photo"
                self.notify(f"warning: {shown(record.input)}: {record.message}")
        else:
            self._fail(record, f"{shown(record.input)}: could not write outputs ({error})")
        if self.bar is not None:
            self.bar.update(1)

    def _fail(self, record: ImageRecord, message: str) -> None:
        record.status, record.message = "failed", message
        self.notify(f"failed: {message}")

    # -- run.json ----------------------------------------------------------------------------------------------
    def _summary(self) -> RunSummary:
        statuses = [r.status for r in self.records]
        return RunSummary(ok=statuses.count("ok"), skipped=statuses.count("skipped"),
                          failed=len(statuses) - statuses.count("ok") - statuses.count("skipped"),
                          seconds=time.perf_counter() - self.started, records=self.records)

    def _save_report(self, summary: RunSummary, final: bool) -> None:
        """Writes run.json. During the run an OSError propagates; at the end it becomes summary.error, so the
        run still ends with its summary line."""
        try:
            write_json(self.out_dir / self.config.report_name, self._report(summary, final))
        except OSError as exc:
            if not final:
                raise
            summary.error = (f"{shown(self.out_dir / self.config.report_name)}: could not write the run record "
                             f"({_reason(exc)})")
            self.notify(f"error: {summary.error}")

    def _report(self, summary: RunSummary, final: bool) -> dict:
        segmenter = self.segmenter
        device = str(segmenter.device)
        if segmenter.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(segmenter.device)})"
        description = segmenter.describe()
        vessel = segmenter.vessel_segmenter
        return {
            "model": description["model"],
            "task": segmenter.model.spec.task,  # what the maps mark: vessels, arteries and veins, or the disc
            "model_config": description["model_config"],
            "weights": description["weights"],
            "weights_sha256": description["weights_sha256"],
            "vessel_model": None if vessel is None else {
                **{key: description["vessel_model"][key] for key in ("model", "weights", "weights_sha256")},
                "settings": {k: v for k, v in asdict(vessel.config).items()
                             if k in ("tta", "max_downscale", "batch_size")}},
            "made_with": self._made_with(description),
            "settings": {**segmenter.settings(), **asdict(self.config)},
            "device": device,
            "versions": versions("torch", "torchvision", "numpy", "segmentation-models-pytorch"),
            "started": self.started_at,
            "finished": final,
            "seconds": round(summary.seconds, 3),
            "network_waited_for_workers": {"seconds": round(self.waited_for_workers, 3),
                                           "of_seconds": round(self.network_seconds, 3)},
            "summary": {"ok": summary.ok, "skipped": summary.skipped, "failed": summary.failed,
                        "flagged": summary.flagged(),
                        "few_vessels": summary.flagged().get(FEW_VESSELS_FOUND, 0)},
            "images": [asdict(r) for r in self.records],
        }


def _note_sizes(record: ImageRecord, prepared: Prepared) -> None:
    record.raw_size = [int(prepared.raw_size[1]), int(prepared.raw_size[0])]
    record.working_size = [int(prepared.work_size[1]), int(prepared.work_size[0])]
    record.fov_diameter = prepared.diameter


def _reason(exc: BaseException) -> str:
    """An exception's message on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]

