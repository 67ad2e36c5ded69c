"""The runner's worker processes (retinaseg/inference/workers.py): the same files for any --workers, a bad file
failing alone, and a worker that dies replaced while the run goes on."""
import json
import os

import imageio.v3 as iio

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
    # the rest went on: each photo is done, or said to need another run (its raw arrays died with the worker)
    for stem in ("p0", "p2", "p3", "p4"):
        assert records[stem].status == "ok" or "run again to redo it" in records[stem].message, records[stem]
    assert sum(r.status == "ok" for r in summary.records) >= 3
    monkeypatch.setattr(_BatchJob, "_read", real_read)
    again = run_batch(segmenter, photos, out, BatchConfig(workers=2), notify=lines.append, progress=False)
    assert again.ok + again.skipped == 5 and again.failed == 1  # only the broken file is left
