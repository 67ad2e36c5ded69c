"""The CPU work around the network in worker processes, as nnU-Net's predictor does it: each photo is read,
FOV-estimated, scaled and padded into the frame the network takes in one worker, which keeps the raw-size arrays;
the main process gets only those frames, and sends the probabilities back as the network gave them to that same
worker, which undoes the test-time views, resizes them to the photo's size, encodes and writes. So the GIL is
shared by nobody, and only working-scale arrays cross between processes.
They cross through blocks of memory shared with the workers (SharedSlots), not a pipe: the main process, which also
runs the network and on a GPU machine decides how many photos a second go through, neither copies nor unpickles
them.

`--workers 0` does the same work in the main process, one photo after the other (no processes: for debugging, and
for platforms without fork). Workers are forked from the runner's process, so they start at once with the model's
settings and import nothing again. The work around the network runs on one thread wherever it runs (see
single_threaded), so the files do not depend on --workers or the executor.
"""
from __future__ import annotations

import gc
import mmap
import multiprocessing
import multiprocessing.connection
import os
import queue
from contextlib import contextmanager
from collections import deque
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch

from retinaseg.errors import shown
from retinaseg.inference.rescale import Prepared

POLL_SECONDS = 1.0  # how often a wait on the workers checks that they are alive
# A photo's arrays at working scale, each way: 4 test-time views of an HRF-size photo's FOV crop fit. Pages are
# allocated as they are first written, so a slot holds no more memory than the largest photo that crossed in it.
SLOT_BYTES = 48 << 20


def _each(item, kind, change):
    """item (parts in nested lists and tuples) with each part of `kind` replaced by change(part)."""
    if isinstance(item, kind):
        return change(item)
    if isinstance(item, (list, tuple)):
        parts = [_each(part, kind, change) for part in item]
        return type(item)(*parts) if hasattr(item, "_fields") else type(item)(parts)  # a named tuple's fields
    return item


def _numpy(item):
    """Tensors as numpy arrays (pickled by value: no shared-memory file descriptors to run out of)."""
    return _each(item, torch.Tensor, torch.Tensor.numpy)


def _tensors(item):
    return _each(item, np.ndarray, torch.from_numpy)


@dataclass(frozen=True)
class _InSlot:
    """Where an array lies in a shared slot, in its place in what crosses between processes."""
    slot: int
    offset: int
    shape: tuple  # as it lies in the slot, its axes in memory order
    dtype: str
    axes: tuple  # the array's axes, from those in the slot (a channels-last frame keeps its layout)


class SharedSlots:
    """Blocks of memory shared by the runner and the workers it forks: a photo's working-scale inputs cross to the
    network in one, and its probabilities back in the same one, each array written once and read in place. Anonymous
    mappings made before forking, so nothing is named and nothing outlives the processes, however they end. The
    main process lends a slot with each photo it sends to be read and takes it back when the photo is written or
    has failed; arrays that do not fit, or a photo sent when every slot is lent, cross by value through the pipe."""

    def __init__(self, count: int, size: Optional[int] = None):
        self.blocks = []
        for _ in range(count):
            try:
                self.blocks.append(mmap.mmap(-1, size or SLOT_BYTES))
            except OSError:  # no memory to commit to it (strict overcommit): fewer slots, the rest by value
                break
        self.free = list(range(len(self.blocks)))  # the main process's bookkeeping; a worker's copy is never used

    def lend(self) -> Optional[int]:
        return self.free.pop() if self.free else None

    def take_back(self, slot: Optional[int]) -> None:
        if slot is not None:
            self.free.append(slot)

    def put(self, slot: Optional[int], item):
        """item (arrays in lists and tuples) with each array written into the slot and replaced by where it lies
        there; item itself when there is no slot or its arrays do not fit."""
        if slot is None:
            return item
        block, offset = self.blocks[slot], 0

        def place(part: np.ndarray) -> _InSlot:
            nonlocal offset
            start = -(-offset // 64) * 64  # each array aligned for vector loads
            end = start + part.nbytes
            if end > len(block):
                raise OverflowError
            order = tuple(int(axis) for axis in np.argsort([-step for step in part.strides], kind="stable"))
            laid = part.transpose(order)
            if not laid.flags.c_contiguous:  # no permutation of a view's axes is its memory: C order then
                order, laid = tuple(range(part.ndim)), part
            np.frombuffer(block, part.dtype, part.size, start).reshape(laid.shape)[...] = laid
            offset = end
            return _InSlot(slot, start, laid.shape, part.dtype.str, tuple(int(a) for a in np.argsort(order)))

        try:
            return _each(item, np.ndarray, place)
        except OverflowError:
            return item

    def get(self, item):
        """item with each array put() wrote replaced by a view of it in its slot (no copy)."""
        def view(where: _InSlot) -> np.ndarray:
            count = int(np.prod(where.shape))
            laid = np.frombuffer(self.blocks[where.slot], where.dtype, count, where.offset).reshape(where.shape)
            return laid.transpose(where.axes)

        return _each(item, _InSlot, view)


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


def network_part(prepared: Prepared, keep_raw: bool, slots: Optional[SharedSlots] = None,
                 slot: Optional[int] = None) -> Prepared:
    """What the main process needs of a prepared photo: each view's framed input (in the slot lent with it, if they
    fit; not the view's FOV, which the worker applies when it writes the photo) and its sizes (and, for a vessel
    model, the photo and its FOV), without the raw-size arrays that stay with the worker."""
    inputs = _numpy([(framed, None) for framed, _ in prepared.view_inputs])
    return replace(prepared, image=None, fov_work=None, view_inputs=slots.put(slot, inputs) if slots else inputs,
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


def _serve(job, inbox, outbox, parent: int, slots: SharedSlots) -> None:
    """A worker's loop: perform() on each task from its inbox (a photo to read comes with the slot lent for its
    arrays, a photo to write with its probabilities, in that slot or by value), the results to the outbox; None
    ends it."""
    torch.set_num_threads(1)  # OpenMP's thread team does not survive fork: a second thread would hang
    outbox.cancel_join_thread()  # a dead runner reads no more: exiting must not wait to flush to it
    held: dict = {}
    keep_raw = job.segmenter.vessel_segmenter is not None
    while (task := _next_task(inbox, parent)) is not None:
        if task[0] == "read":
            slot = task[3]
            outbox.put(perform(job, task, held, lambda prepared: network_part(prepared, keep_raw, slots, slot)))
            if (prepared := held.get(task[1])) is not None:  # the network's process has the inputs now
                prepared.spend_inputs()
        else:
            outbox.put(perform(job, slots.get(task), held))


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

    def __init__(self, job, count: int, in_flight: int = 0):
        # where processes cannot be forked (Windows), the work stays in this process
        self.job, self.count = job, count if "fork" in multiprocessing.get_all_start_methods() else 0
        # a shared slot for each photo that can be between read and written at once (in_flight); none inline
        self._slots = SharedSlots(in_flight if self.count else 0)
        self._slot: dict = {}  # index -> the slot lent with the photo, or None
        self._events: deque = deque()  # results already known: the inline ones, and a dead worker's photos
        self._held: dict = {}  # count 0: index -> the photo's full Prepared, until written
        self._owner: dict = {}  # index -> the worker holding the photo
        self._unwritten: dict = {}  # index -> (paths, probabilities, vessel) sent to be written, until they are
        self._tasks: list = []  # per worker, its tasks not yet answered, oldest first: (kind, index, path)
        self._processes: list = []
        self._inboxes: list = []
        # Each worker answers in its own queue: a worker killed while sending (the out-of-memory killer) can leave
        # its queue's write lock held or half a message in its pipe, which must not stop the others' answers.
        self._outboxes: list = []
        self._next = 0
        if count:
            self._context = multiprocessing.get_context("fork")
            for number in range(count):
                self._start(number)

    def _start(self, number: int) -> None:
        inbox, outbox = self._context.Queue(), self._context.Queue()
        process = self._context.Process(target=_serve, daemon=True, name=f"retinaseg-worker-{number}",
                                        args=(self.job, inbox, outbox, os.getpid(), self._slots))
        # Objects this process holds are never collected in the child: a finaliser there (an ONNX Runtime session
        # joining its thread pool, threads a forked child does not have) would hang the worker for good.
        gc.freeze()
        try:
            process.start()
        finally:
            gc.unfreeze()
        outbox._writer.close()  # the worker holds the only write end: its death ends the pipe (EOF), even mid-message
        if number < len(self._processes):
            # the dead worker's queues: the inbox's feeder thread may be stuck writing to a pipe no one reads, and
            # must not hold up this process's exit
            self._inboxes[number].cancel_join_thread()
            self._inboxes[number].close()
            self._outboxes[number]._reader.close()
            self._processes[number], self._inboxes[number], self._tasks[number] = process, inbox, deque()
            self._outboxes[number] = outbox
        else:
            self._processes.append(process)
            self._inboxes.append(inbox)
            self._outboxes.append(outbox)
            self._tasks.append(deque())

    def read(self, index: int, path) -> None:
        if not self.count:
            self._events.append(perform(self.job, ("read", index, path), self._held))
            return
        worker = self._next % self.count
        self._next += 1
        self._owner[index] = worker
        self._slot[index] = self._slots.lend()
        self._tasks[worker].append(("read", index, path))
        self._inboxes[worker].put(("read", index, path, self._slot[index]))

    def write(self, index: int, paths: dict, probs: list, vessel: Optional[np.ndarray]) -> None:
        if not self.count:
            self._events.append(perform(self.job, ("write", index, paths, probs, vessel), self._held))
            return
        worker = self._owner[index]
        # the photo's inputs are spent: its probabilities go back in the same slot
        self._unwritten[index] = (paths, self._slots.put(self._slot.get(index), _numpy(probs)), vessel)
        self._tasks[worker].append(("write", index, None))
        self._inboxes[worker].put(("write", index, *self._unwritten[index]))

    def event(self) -> tuple:
        """The next result, waiting for one."""
        while not self._events:
            event = self._answer()
            if event is None:
                continue
            kind, index, value, _ = event
            worker = self._owner[index]
            self._tasks[worker].popleft()  # a worker answers its tasks in order
            if kind == "written":
                del self._owner[index]
                self._unwritten.pop(index, None)
                self._slots.take_back(self._slot.pop(index, None))
            elif value is not None:
                value.view_inputs = _tensors(self._slots.get(value.view_inputs))
            else:  # it failed to read: nothing comes back to write
                self._slots.take_back(self._slot.pop(index, None))
            return event
        return self._events.popleft()

    def _answer(self) -> Optional[tuple]:
        """A worker's next answer; or None, after replacing a worker whose answers have ended (it died, perhaps in
        the middle of one, every whole one before read) or after POLL_SECONDS without any."""
        readers = {outbox._reader: number for number, outbox in enumerate(self._outboxes)}
        ready = multiprocessing.connection.wait(list(readers), timeout=POLL_SECONDS)
        if not ready:
            self._replace_dead()  # a worker dead while something else holds its pipe open
            return None
        number = readers[ready[0]]
        try:
            return self._outboxes[number].get(timeout=POLL_SECONDS)
        except queue.Empty:
            return None
        except (EOFError, OSError):  # it closed its end: it is dead or exiting
            process = self._processes[number]
            process.join(timeout=POLL_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
            self._replace(number)
            return None

    def _replace_dead(self) -> None:
        for number, process in enumerate(self._processes):
            if not process.is_alive():
                self._replace(number)

    def _replace(self, number: int) -> None:
        """A dead worker's successor: the task it died on fails, the rest of its tasks go to the successor."""
        process = self._processes[number]
        tasks = list(self._tasks[number])
        self._start(number)
        for position, (kind, index, path) in enumerate(tasks):
            if position == 0:  # the task it died on
                ended = f"the worker process handling it ended (exit code {process.exitcode})"
                photo = shown(self.job.records[index].input)
                self._fail(kind, index, f"{photo}: {ended}" if kind == "read" else ended)
            elif kind == "read":
                self._tasks[number].append(("read", index, path))
                self._inboxes[number].put(("read", index, path, self._slot.get(index)))
            else:
                self._tasks[number].append(("write", index, None))
                self._inboxes[number].put(("redo", index, self.job.records[index].input, *self._unwritten[index]))

    def _fail(self, kind: str, index: int, message: str) -> None:
        self._owner.pop(index, None)
        self._unwritten.pop(index, None)
        self._slots.take_back(self._slot.pop(index, None))
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
        for outbox in self._outboxes:
            outbox._reader.close()
        self._processes, self._outboxes = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
