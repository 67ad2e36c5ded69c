"""The CPU work around the network in worker processes, as nnU-Net's predictor does it: each photo is read,
FOV-estimated and scaled in one worker, which keeps the raw-size arrays; the main process gets only the network's
inputs at working scale, and sends the probabilities back to that same worker, which resizes them to the photo's
size, encodes and writes. So the GIL is shared by nobody, and only working-scale arrays cross between processes.

`--workers 0` does the same work in the main process, one photo after the other (no processes: for debugging, and
for platforms without fork). Workers are forked from the runner's process, so they start at once with the model's
settings and import nothing again. The work around the network runs on one thread wherever it runs (see
single_threaded), so the files do not depend on --workers or the executor.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import queue
from contextlib import contextmanager
from collections import deque
from dataclasses import replace
from typing import Optional

import numpy as np
import torch

from retinaseg.errors import shown
from retinaseg.inference.rescale import Prepared

POLL_SECONDS = 1.0  # how often a wait on the workers checks that they are alive


def _numpy(item):
    """Tensors as numpy arrays (pickled by value: no shared-memory file descriptors to run out of)."""
    if isinstance(item, torch.Tensor):
        return item.numpy()
    if isinstance(item, (list, tuple)):
        return type(item)(_numpy(i) for i in item)
    return item


def _tensors(item):
    if isinstance(item, np.ndarray):
        return torch.from_numpy(item)
    if isinstance(item, (list, tuple)):
        return type(item)(_tensors(i) for i in item)
    return item


@contextmanager
def single_threaded():
    """torch on one thread for the work around the network: a float32 sum's or a resampling's last bits follow the
    number of threads, and forked workers can use only one, so every path prepares and writes on one."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def network_part(prepared: Prepared, keep_raw: bool) -> Prepared:
    """What the main process needs of a prepared photo: its view inputs and sizes (and, for a vessel model, the
    photo and its FOV), without the raw-size arrays that stay with the worker."""
    return replace(prepared, image=None, fov_work=None, view_inputs=_numpy(prepared.view_inputs),
                   photo=prepared.photo if keep_raw else None, fov_raw=prepared.fov_raw if keep_raw else None)


def perform(job, task: tuple, held: dict, to_main=lambda prepared: prepared) -> tuple:
    """One task of a photo, wherever it runs: ("read", index, path) -> ("read", index, to_main(prepared), error);
    ("write", index, paths, probs, vessel) -> ("written", index, (fraction, flag), error); ("redo", index, path,
    paths, probs, vessel), a photo whose worker died holding it, read again and written -> ("written", ...). held
    keeps each read photo's full Prepared until written. An error is the photo's one-line message."""
    kind, index = task[0], task[1]
    try:
        if kind == "read":
            prepared = job.read(task[2], index)
            held[index] = prepared
            return "read", index, to_main(prepared), None
        paths, probs, vessel = task[-3:]
        prepared = held.pop(index) if kind == "write" else job.read(task[2], index)
        prepared.vessel = vessel
        return "written", index, job.write(paths, prepared, _tensors(probs)), None
    except Exception as exc:  # the photo fails; the rest go on
        held.pop(index, None)
        return ("read" if kind == "read" else "written"), index, None, \
            job.error_text(exc, task[2] if kind == "read" else None)


def _serve(job, inbox, outbox, parent: int) -> None:
    """A worker's loop: perform() on each task from its inbox, the results to the outbox; None ends it."""
    torch.set_num_threads(1)  # OpenMP's thread team does not survive fork: a second thread would hang
    outbox.cancel_join_thread()  # a dead runner reads no more: exiting must not wait to flush to it
    held: dict = {}
    keep_raw = job.segmenter.vessel_segmenter is not None
    while (task := _next_task(inbox, parent)) is not None:
        outbox.put(perform(job, task, held, lambda prepared: network_part(prepared, keep_raw)))


def _next_task(inbox, parent: int):
    """The next task, or None when told to stop or when the runner has died (a killed run leaves no workers)."""
    while True:
        try:
            return inbox.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if os.getppid() != parent:
                return None


class Workers:
    """N forked worker processes (see the module's docstring), or the main process itself for N = 0. read() and
    write() hand a photo over; event() waits for what comes back: ("read", index, prepared, error) or ("written",
    index, (share of the FOV labelled, flag), error), an error being the photo's one-line message.

    A worker that dies (a decoder's crash, the kernel's out-of-memory killer) is replaced. The task it was on fails
    with that reason; the rest of its photos go to its successor: those to read, and those it held for writing
    (read again there: their probabilities are kept here until written)."""

    def __init__(self, job, count: int):
        # where processes cannot be forked (Windows), the work stays in this process
        self.job, self.count = job, count if "fork" in multiprocessing.get_all_start_methods() else 0
        self._events: deque = deque()  # results already known: the inline ones, and a dead worker's photos
        self._held: dict = {}  # count 0: index -> the photo's full Prepared, until written
        self._owner: dict = {}  # index -> the worker holding the photo
        self._unwritten: dict = {}  # index -> (paths, probabilities, vessel) sent to be written, until they are
        self._tasks: list = []  # per worker, its tasks not yet answered, oldest first: (kind, index, path)
        self._processes: list = []
        self._inboxes: list = []
        self._next = 0
        if count:
            self._context = multiprocessing.get_context("fork")
            self._outbox = self._context.Queue()
            for number in range(count):
                self._start(number)

    def _start(self, number: int) -> None:
        inbox = self._context.Queue()
        process = self._context.Process(target=_serve, args=(self.job, inbox, self._outbox, os.getpid()),
                                        daemon=True, name=f"retinaseg-worker-{number}")
        # Objects this process holds are never collected in the child: a finaliser there (an ONNX Runtime session
        # joining its thread pool, threads a forked child does not have) would hang the worker for good.
        gc.freeze()
        try:
            process.start()
        finally:
            gc.unfreeze()
        if number < len(self._processes):
            # the dead worker's queue: its feeder thread may be stuck writing to a pipe no one reads, and must not
            # hold up this process's exit
            self._inboxes[number].cancel_join_thread()
            self._inboxes[number].close()
            self._processes[number], self._inboxes[number], self._tasks[number] = process, inbox, deque()
        else:
            self._processes.append(process)
            self._inboxes.append(inbox)
            self._tasks.append(deque())

    def read(self, index: int, path) -> None:
        if not self.count:
            self._events.append(perform(self.job, ("read", index, path), self._held))
            return
        worker = self._next % self.count
        self._next += 1
        self._owner[index] = worker
        self._tasks[worker].append(("read", index, path))
        self._inboxes[worker].put(("read", index, path))

    def write(self, index: int, paths: dict, probs: list, vessel: Optional[np.ndarray]) -> None:
        if not self.count:
            self._events.append(perform(self.job, ("write", index, paths, probs, vessel), self._held))
            return
        worker = self._owner[index]
        self._unwritten[index] = (paths, _numpy(probs), vessel)
        self._tasks[worker].append(("write", index, None))
        self._inboxes[worker].put(("write", index, *self._unwritten[index]))

    def event(self) -> tuple:
        """The next result, waiting for one."""
        while not self._events:
            try:
                event = self._outbox.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self._replace_dead()
                continue
            kind, index, value, _ = event
            worker = self._owner[index]
            self._tasks[worker].popleft()  # a worker answers its tasks in order
            if kind == "written":
                del self._owner[index]
                self._unwritten.pop(index, None)
            elif value is not None:
                value.view_inputs = _tensors(value.view_inputs)
            return event
        return self._events.popleft()

    def _replace_dead(self) -> None:
        for number, process in enumerate(self._processes):
            if process.is_alive():
                continue
            tasks = list(self._tasks[number])
            self._start(number)
            for position, (kind, index, path) in enumerate(tasks):
                if position == 0:  # the task it died on
                    ended = f"the worker process handling it ended (exit code {process.exitcode})"
                    photo = shown(self.job.records[index].input)
                    self._fail(kind, index, f"{photo}: {ended}" if kind == "read" else ended)
                elif kind == "read":
                    self._tasks[number].append(("read", index, path))
                    self._inboxes[number].put(("read", index, path))
                else:
                    self._tasks[number].append(("write", index, None))
                    self._inboxes[number].put(("redo", index, self.job.records[index].input,
                                               *self._unwritten[index]))

    def _fail(self, kind: str, index: int, message: str) -> None:
        self._owner.pop(index, None)
        self._unwritten.pop(index, None)
        self._events.append(("read" if kind == "read" else "written", index, None, message))

    def close(self) -> None:
        for inbox, process in zip(self._inboxes, self._processes):
            if process.is_alive():
                inbox.put(None)
        for inbox, process in zip(self._inboxes, self._processes):
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
            inbox.cancel_join_thread()  # what is left in it is for no one
        self._processes = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
