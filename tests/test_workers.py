"""The runner's worker processes (retinaseg/inference/workers.py): the same files for any --workers, a bad file
failing alone, and a worker that dies replaced while the run goes on."""
import json
import os

import imageio.v3 as iio
import pytest

from retinaseg.inference.runner import BatchConfig, _BatchJob, run_batch
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.models import load_model
from retinaseg.synthetic import synthetic_fundus


def photos_with_a_broken_one(folder):
    folder.mkdir()
    for i in range(5):
        iio.imwrite(folder / f"p{i}.png", synthetic_fundus((120 + 9 * i, 130), seed=i).image_uint8())
    (folder / "p2b.png").write_bytes(b"not a photo")
    return sorted(folder.iterdir())


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def test_any_number_of_workers_writes_the_same_files_and_one_line_per_bad_photo(tmp_path):
    photos = photos_with_a_broken_one(tmp_path / "photos")
    segmenter = Segmenter(load_model("vesselnet"), SegmentConfig(device="cpu"))
    written = {}
    for workers in (0, 1, 3):
        lines = []
        out = tmp_path / f"out{workers}"
        summary = run_batch(segmenter, photos, out, BatchConfig(workers=workers, save_prob=True, overlay=True),
                            notify=lines.append, progress=False)
        assert (summary.ok, summary.failed) == (5, 1)
        assert [line.split(":")[1].strip().rsplit("/", 1)[-1] for line in lines] == ["p2b.png"]
        report = json.loads((out / "run.json").read_text())
        assert [image["stem"] for image in report["images"]] == ["p0", "p1", "p2", "p2b", "p3", "p4"]
        written[workers] = files_of(out)
    assert len(written[0]) == 20 and written[0] == written[1] == written[3]


def test_arrays_cross_in_a_shared_slot_or_by_value_when_they_do_not_fit():
    import numpy as np

    from retinaseg.inference.workers import SharedSlots

    slots = SharedSlots(2, size=4096)
    image, fov = np.arange(300, dtype=np.float32).reshape(3, 10, 10), np.eye(10, dtype=bool)
    slot = slots.lend()
    sent = slots.put(slot, [(image, fov), "kept as it is"])
    assert not any(isinstance(part, np.ndarray) for part in sent[0])  # only where each array lies crosses
    got = slots.get(sent)
    assert np.array_equal(got[0][0], image) and np.array_equal(got[0][1], fov) and got[1] == "kept as it is"
    assert got[0][0].ctypes.data % 64 == 0 and got[0][1].ctypes.data % 64 == 0
    too_large = [np.zeros(2000, np.float32)]
    assert slots.put(slot, too_large) is too_large and slots.put(None, too_large) is too_large
    assert slots.lend() is not None and slots.lend() is None  # every slot lent: photos cross by value
    slots.take_back(slot)
    assert slots.lend() == slot


def test_a_framed_image_crosses_a_slot_in_its_channels_last_layout_so_the_network_copies_nothing():
    import numpy as np
    import torch

    from retinaseg.inference.sliding_window import SlidingWindow
    from retinaseg.inference.workers import SharedSlots, _numpy, _tensors

    framed = SlidingWindow(64, size_divisor=16, channels_last=True).frame(torch.randn(3, 50, 70))
    fov = torch.rand(50, 70) > 0.5
    slots = SharedSlots(1, size=1 << 20)
    got = _tensors(slots.get(slots.put(slots.lend(), _numpy([(framed, fov)]))))
    (frame, height, width), fov_got = got[0]
    assert type(got[0][0]) is type(framed) and (height, width) == (50, 70)
    assert torch.equal(frame, framed.frame) and torch.equal(fov_got, fov)
    assert frame[None].is_contiguous(memory_format=torch.channels_last)
    assert np.shares_memory(frame.numpy(), np.frombuffer(slots.blocks[0], np.uint8))
    sliced = np.arange(24.0).reshape(4, 6)[:, ::2]  # no order of its axes is its memory: it lies in C order
    assert np.array_equal(slots.get(slots.put(0, [sliced]))[0], sliced)


def test_a_system_that_will_not_map_the_slots_sends_photos_by_value(monkeypatch):
    import mmap

    from retinaseg.inference import workers

    def no_memory(*args):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", no_memory)
    slots = workers.SharedSlots(3)
    assert slots.lend() is None  # every photo by value, the run as before


def test_photos_too_large_for_a_slot_cross_by_value_and_write_the_same_files(tmp_path, monkeypatch):
    from retinaseg.inference import workers

    photos = photos_with_a_broken_one(tmp_path / "photos")
    segmenter = Segmenter(load_model("vesselnet"), SegmentConfig(device="cpu"))
    written = {}
    for name, slot_bytes in (("inline", None), ("slots", None), ("by value", 1024)):
        monkeypatch.setattr(workers, "SLOT_BYTES", slot_bytes or workers.SLOT_BYTES)
        out = tmp_path / name
        config = BatchConfig(workers=0 if name == "inline" else 2, save_prob=True)
        assert run_batch(segmenter, photos, out, config, notify=lambda line: None, progress=False).ok == 5
        written[name] = files_of(out)
    assert written["inline"] == written["slots"] == written["by value"]


def test_a_worker_that_dies_fails_its_photo_and_is_replaced(tmp_path, monkeypatch):
    photos = photos_with_a_broken_one(tmp_path / "photos")
    real_read = _BatchJob._read

    def crash_on_p1(self, path, index):  # a decoder's segfault, as the workers (forked from here) meet it
        if path.name == "p1.png":
            os._exit(3)
        return real_read(self, path, index)

    monkeypatch.setattr(_BatchJob, "_read", crash_on_p1)
    segmenter = Segmenter(load_model("vesselnet"), SegmentConfig(device="cpu"))
    lines = []
    out = tmp_path / "out"
    summary = run_batch(segmenter, photos, out, BatchConfig(workers=2), notify=lines.append, progress=False)
    records = {r.stem: r for r in summary.records}
    assert records["p1"].status == "failed"
    assert records["p1"].message.endswith("p1.png: the worker process handling it ended (exit code 3)")
    # the rest went on to its successor, those it held for writing read again there
    assert [stem for stem, r in records.items() if r.status == "ok"] == ["p0", "p2", "p3", "p4"]
    assert [line for line in lines if line.startswith("failed:")] == [f"failed: {records[stem].message}"
                                                                       for stem in ("p1", "p2b")]


@pytest.mark.parametrize("in_flight", [0, 4])  # probabilities sent back by value, or in the photo's shared slot
def test_photos_held_by_a_dead_worker_for_writing_are_read_again_by_its_successor(tmp_path, in_flight):
    import signal
    from pathlib import Path

    from retinaseg.inference.runner import output_paths
    from retinaseg.inference.workers import Workers

    photos = photos_with_a_broken_one(tmp_path / "photos")[:2]
    segmenter = Segmenter(load_model("vesselnet"), SegmentConfig(device="cpu"))
    job = _BatchJob(segmenter, BatchConfig(workers=1), print, tmp_path / "out", photos)
    (tmp_path / "out" / "raw_pre").mkdir(parents=True)
    (tmp_path / "out" / "small_pre").mkdir()
    with Workers(job, 1, in_flight) as workers:
        for index, photo in enumerate(photos):
            workers.read(index, Path(photo))
        prepared = [workers.event()[2] for _ in photos]  # the worker now holds both photos' raw arrays
        assert all(fov is None and framed.frame.dim() == 3 for item in prepared for framed, fov in item.view_inputs)
        os.kill(workers._processes[0].pid, signal.SIGKILL)
        workers._processes[0].join()
        for item, probs in segmenter.predict_prepared(prepared, as_seen=True):  # as the runner does
            workers.write(item.index, output_paths(job.out_dir, job.records[item.index].stem, job.config), probs, None)
        events = sorted(workers.event() for _ in photos)
        assert len(workers._slots.free) == in_flight  # every slot lent is back, the dead worker's too
    # the first write was the task it "died on"; the second is read again and written by the new worker
    assert events[0][:3] == ("written", 0, None) and "ended (exit code -9)" in events[0][3]
    assert events[1][:2] == ("written", 1) and events[1][3] is None and 0 < events[1][2][0] < 1
    assert (tmp_path / "out" / "raw_pre" / "p1.png").is_file()


def test_a_worker_killed_while_answering_holds_up_no_other(tmp_path):
    import signal
    from pathlib import Path

    from retinaseg.inference.workers import Workers

    photos = photos_with_a_broken_one(tmp_path / "photos")[:4]  # p0 p1 p2 p2b: two for each worker
    segmenter = Segmenter(load_model("vesselnet"), SegmentConfig(device="cpu"))
    job = _BatchJob(segmenter, BatchConfig(workers=2), print, tmp_path / "out", photos)
    def hung(*_):
        raise TimeoutError("no answer came through")

    previous = signal.signal(signal.SIGALRM, hung)  # a hang fails this test, not the suite
    signal.alarm(120)
    try:
        with Workers(job, 2) as workers:
            # as if worker 0 had been killed halfway through sending an answer: the lock of the queue it answers
            # on stays held. Were that queue shared, no other worker's answer would come through.
            workers._outboxes[0]._wlock.acquire()
            os.kill(workers._processes[0].pid, signal.SIGKILL)
            workers._processes[0].join()
            for index, photo in enumerate(photos):
                workers.read(index, Path(photo))
            events = sorted(workers.event()[1:4:2] for _ in photos)  # (index, error)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert [index for index, _ in events] == [0, 1, 2, 3]
    assert "ended (exit code -9)" in events[0][1]  # the task the dead worker was given first
    assert events[1][1] is None and events[2][1] is None  # p1 by worker 1, p2 by worker 0's successor
    assert "p2b.png" in events[3][1]  # not a photo, whoever read it


def test_a_killed_run_leaves_no_worker_behind(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(40):
        iio.imwrite(photos / f"p{i:02d}.png", synthetic_fundus((300, 320), seed=i % 4).image_uint8())
    run = subprocess.Popen([sys.executable, "-m", "retinaseg", "run", "-q", "--workers", "2", photos, tmp_path / "out"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children():
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == run.pid:
                found.append(int(stat.parent.name))
        return found

    deadline = time.time() + 60
    while len(children()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    workers = children()
    assert len(workers) >= 2
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.time() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() and "retinaseg" in Path(f"/proc/{pid}/cmdline").read_text()
                   for pid in workers)


def test_a_network_that_waits_for_its_workers_is_told_more_workers_may_help_where_cores_are_spare(tmp_path,
                                                                                                  monkeypatch,
                                                                                                  fake_models):
    from retinaseg.inference import runner

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(runner.SUGGEST_AFTER_PHOTOS):  # large photos for a network that takes no time
        iio.imwrite(folder / f"p{i:02d}.png", synthetic_fundus((480, 520), seed=i).image_uint8())
    segmenter = Segmenter(load_model("dark-vessels"), SegmentConfig(device="cpu"))
    for cores, told in ((8, True), (2, False)):
        monkeypatch.setattr(runner, "available_cores", lambda: cores)
        lines = []
        out = tmp_path / f"out{cores}"
        run_batch(segmenter, sorted(folder.iterdir()), out, BatchConfig(workers=1), notify=lines.append,
                  progress=False)
        notes = [line for line in lines if "more --workers (up to 7)" in line]
        assert len(notes) == (1 if told else 0), lines
        waited = json.loads((out / "run.json").read_text())["network_waited_for_workers"]
        assert 0.5 * waited["of_seconds"] < waited["seconds"] <= waited["of_seconds"]


@pytest.mark.parametrize("device, cores, expected", [("cpu", 16, 2), ("cuda", 2, 2), ("cuda", 16, 15),
                                                     ("cuda", 96, 16), ("mps", 8, 7)])
def test_workers_auto_feeds_a_gpu_from_every_spare_core_and_leaves_a_cpu_network_its_cores(monkeypatch, device,
                                                                                             cores, expected):
    from retinaseg import cores as machine

    monkeypatch.setattr(machine, "available_cores", lambda: cores)
    assert machine.run_workers(device) == expected


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 2), (6, 6), (64, 8)])
def test_measure_workers_auto_is_a_process_per_core_up_to_a_cap(monkeypatch, cores, expected):
    from retinaseg import cores as machine

    monkeypatch.setattr(machine, "available_cores", lambda: cores)
    assert machine.measure_workers() == expected


def test_run_and_measure_take_auto_or_a_count_of_workers_and_refuse_anything_else(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from retinaseg import cores as machine
    from retinaseg.cli import cli

    monkeypatch.setattr(machine, "available_cores", lambda: 6)  # a CPU network keeps its 2 workers all the same
    folder = tmp_path / "photos"
    folder.mkdir()
    iio.imwrite(folder / "p.png", synthetic_fundus((120, 130), seed=0).image_uint8())
    result = CliRunner().invoke(cli, ["run", "-q", "--device", "cpu", str(folder), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "run.json").read_text())["settings"]["workers"] == 2
    for command in (["run", str(folder), str(tmp_path / "bad")], ["measure", str(tmp_path / "out")]):
        result = CliRunner().invoke(cli, command + ["--workers", "many"])
        assert result.exit_code == 2
        assert "expected auto or a number from 0 to 64; got 'many'" in result.output
    result = CliRunner().invoke(cli, ["run", "-q", "--workers", "AUTO", "--device", "cpu", str(folder),
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
