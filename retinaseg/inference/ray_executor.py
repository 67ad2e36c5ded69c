"""`retinaseg run --executor ray`: the photos of a run spread over Ray actors (`pip install retinaseg[ray]`).

The run itself (inputs, resuming, the check of what made a folder's outputs, run.json, the summary) stays the local
runner's (runner.py); only the photos to do go to Ray Data, as one row each, to actors that each load the model once
and segment a photo exactly as the local runner does (`_BatchJob.segment_one`), so the files are byte-identical.
With --measure, the maps are then measured by actors too (MeasureWorker), and the tables written by the driver.
By default a local Ray instance is started on this machine (`ray.init()`); `--ray-address` joins a cluster.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from retinaseg.errors import RetinasegError


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 (Ray Data is part of the extra)
    except ImportError:
        raise RetinasegError("--executor ray needs Ray: pip install 'retinaseg[ray]'") from None
    return ray


class PhotoWorker:
    """A Ray actor: loads the model(s) once, then segments one photo per row, writing its files itself."""

    def __init__(self, models: dict, segment_config, batch_config, out_dir: str, threads: int):
        import torch

        from retinaseg.inference.runner import _BatchJob
        from retinaseg.inference.segmenter import Segmenter
        from retinaseg.models import load_model

        # the driver's thread count, not Ray's one per actor: the order of float sums follows the threads, and
        # probabilities summed in another order differ in their last bits from the local runner's
        torch.set_num_threads(threads)
        self.notes: list = []
        vessel = load_model(*models["vessel"]) if models.get("vessel") else None
        segmenter = Segmenter(load_model(*models["model"]), segment_config, notify=self.notes.append,
                              vessel_model=vessel)
        self.job = _BatchJob(segmenter, batch_config, self.notes.append, Path(out_dir), [])

    def __call__(self, rows: dict) -> dict:
        from retinaseg.inference.runner import ImageRecord

        out = {"index": [], "record": [], "notes": []}
        for index, photo, stem in zip(rows["index"], rows["input"], rows["stem"]):
            self.notes.clear()
            record = ImageRecord(str(photo), str(stem))
            self.job.segment_one(record)
            out["index"].append(int(index))
            out["record"].append(asdict(record))
            out["notes"].append(list(self.notes))
        return out


class MeasureWorker:
    """A Ray actor: measures one map per row as `retinaseg measure` does (measure.measure_item), loading the disc
    model once, at the first photo that needs it."""

    def __init__(self, job, threads: int):
        import torch

        from retinaseg.measure_batch import DiscFinder

        torch.set_num_threads(threads)  # as PhotoWorker: the driver's, so the disc maps are the local ones
        self.job, self.notes = job, []
        self.disc = DiscFinder(job, self.notes.append)

    def __call__(self, rows: dict) -> dict:
        from retinaseg.measure_batch import measure_item

        out = {"index": [], "result": [], "notes": []}
        for index in rows["index"]:
            self.notes.clear()
            out["index"].append(int(index))
            out["result"].append(json.dumps(measure_item(self.job, self.job.items[int(index)], self.disc,
                                                         self.notes.append)))
            out["notes"].append(list(self.notes))
        return out


class RayExecutor:
    """Runs a `retinaseg run`'s photos (segment) and then its measurements (measure) on Ray actors; Ray starts at
    the first use (a local instance, or joining `address`) and stops when the executor closes."""

    def __init__(self, address: Optional[str] = None, actors: int = 2):
        self.address, self.actors, self._started = address, max(1, actors), False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._started:
            _ray().shutdown()

    def _connect(self):
        ray = _ray()
        if not ray.is_initialized():
            for name in ("ray", "ray.data"):  # Ray's own progress and info lines: the run's bar and lines say it all
                logging.getLogger(name).setLevel(logging.ERROR)
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     configure_logging=False)
            self._started = True
            ray.data.DataContext.get_current().enable_progress_bars = False
        return ray

    def _map(self, rows: list, worker, num_gpus: int, **arguments):
        """Each row through one of the actors, `worker(**arguments)` each; yields the results as they come."""
        import ray.data
        import torch

        self._connect()
        with warnings.catch_warnings():  # max_restarts is passed the way this Ray takes it, and it says so
            warnings.simplefilter("ignore")
            # no restarts: a photo that kills its actor fails the run loudly rather than being redone in silence
            dataset = ray.data.from_items(rows).map_batches(
                worker, batch_size=1, concurrency=self.actors, max_restarts=0, num_gpus=num_gpus,
                fn_constructor_kwargs={**arguments, "threads": torch.get_num_threads()})
        yield from dataset.iter_rows()

    def segment(self, job, todo: list[int]) -> None:
        """run_batch's `process`: the photos `todo` segmented and written by the actors (a GPU each on CUDA)."""
        if not todo:
            return
        segmenter = job.segmenter
        models = {"model": (segmenter.model.spec.name, _path(segmenter.model.weights))}
        if segmenter.vessel_segmenter is not None:
            vessel = segmenter.vessel_segmenter.model
            models["vessel"] = (vessel.spec.name, _path(vessel.weights))
        rows = [{"index": i, "input": job.records[i].input, "stem": job.records[i].stem} for i in todo]
        for row in self._map(rows, PhotoWorker, 1 if segmenter.device.type == "cuda" else 0, models=models,
                             segment_config=segmenter.config, batch_config=job.config, out_dir=str(job.out_dir)):
            record = job.records[int(row["index"])]
            for key, value in dict(row["record"]).items():
                setattr(record, key, list(value) if key in ("raw_size", "working_size") and value is not None
                        else value)
            for note in row["notes"]:
                job.notify(str(note))
            job.bar.update(1)

    def measure(self, job, notify, progress: bool) -> list:
        """measure_items' `process`: each map measured by an actor; the results in the items' order."""
        from tqdm import tqdm

        results = [None] * len(job.items)
        with tqdm(total=len(job.items), desc="measuring", unit="img", disable=not progress) as bar:
            if job.items:
                for row in self._map([{"index": i} for i in range(len(job.items))], MeasureWorker, 0, job=job):
                    results[int(row["index"])] = tuple(json.loads(row["result"]))
                    for note in row["notes"]:
                        notify(str(note))
                    bar.update(1)
        return results


def _path(weights) -> Optional[str]:
    return str(Path(weights).resolve()) if weights else None
