"""`retinaseg run --executor ray`: the photos of a run spread over Ray actors (`pip install retinaseg[ray]`).

The run itself (inputs, resuming, the check of what made a folder's outputs, run.json, the summary) stays the local
runner's (runner.py); only the photos to do go to Ray Data, as one row each, to actors that each load the model once
and segment a photo exactly as the local runner does (`_BatchJob.segment_one`), so the files are byte-identical.
By default a local Ray instance is started on this machine (`ray.init()`); `--ray-address` joins a cluster.
"""
from __future__ import annotations

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


def ray_process(address: Optional[str] = None, actors: int = 2):
    """A `process(job, todo)` for run_batch that sends the photos to `actors` Ray actors (a GPU each when the run
    is on CUDA)."""
    def process(job, todo: list[int]) -> None:
        ray = _ray()
        if not todo:
            return
        for name in ("ray", "ray.data"):  # Ray's own progress and info lines: the run's bar and lines say it all
            logging.getLogger(name).setLevel(logging.ERROR)
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     configure_logging=False)
        try:
            _run(ray, job, todo, actors)
        finally:
            if started_here:
                ray.shutdown()
    return process


def _run(ray, job, todo: list[int], actors: int) -> None:
    import ray.data
    import torch

    segmenter = job.segmenter
    models = {"model": (segmenter.model.spec.name, _path(segmenter.model.weights))}
    if segmenter.vessel_segmenter is not None:
        vessel = segmenter.vessel_segmenter.model
        models["vessel"] = (vessel.spec.name, _path(vessel.weights))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    rows = [{"index": i, "input": job.records[i].input, "stem": job.records[i].stem} for i in todo]
    with warnings.catch_warnings():  # max_restarts is passed the way this Ray takes it, and it says so
        warnings.simplefilter("ignore")
        # no restarts: a photo that kills its actor fails the run loudly rather than being redone in silence
        dataset = ray.data.from_items(rows).map_batches(
            PhotoWorker, batch_size=1, concurrency=max(1, actors), max_restarts=0,
            num_gpus=1 if segmenter.device.type == "cuda" else 0,
            fn_constructor_kwargs={"models": models, "segment_config": segmenter.config,
                                   "batch_config": job.config, "out_dir": str(job.out_dir),
                                   "threads": torch.get_num_threads()})
    for row in dataset.iter_rows():
        record = job.records[int(row["index"])]
        for key, value in dict(row["record"]).items():
            setattr(record, key, list(value) if key in ("raw_size", "working_size") and value is not None
                    else value)
        for note in row["notes"]:
            job.notify(str(note))
        job.bar.update(1)


def _path(weights) -> Optional[str]:
    return str(Path(weights).resolve()) if weights else None
