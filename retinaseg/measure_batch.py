"""`retinaseg measure` over a folder of maps: the photos to measure, each measured once (a stopped run resumes), in
worker processes side by side, each photo's disc found; then the tables (measurements.csv and .json), the discs to
check, and with --overlay an image per photo. The measures themselves are measure.py's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from retinaseg import av
from retinaseg import measure as measuring  # its MEASURING_FOV as set when a job is measured (benchmarks vary it)
from retinaseg.disc import Disc, around
from retinaseg.errors import RetinasegError, shown
from retinaseg.io.inputs import mask_of
from retinaseg.measure import BINARY_MAP, CALIBRES_FROM, ZONE_B, ZONE_C, Measurements, measure

DISC_SIZE_TOLERANCE = 0.3  # relative: over twice the ~13% spread of disc diameters between people (check_discs)
MIN_DISC_PEERS = 5  # photos of one size with a disc, for a median to compare a disc with


class MapItem(NamedTuple):
    """A map to measure, with what it belongs to."""
    stem: str  # the output name: the row's stem, and the name of its measured/ and measure_overlay/ files
    photo: Optional[Path]  # the photo (for the disc and the FOV); None for a label map without one
    map: Path
    probabilities: Optional[Path]  # prob/<stem>.tif of a run with --save-prob, for sub-pixel calibres


@dataclass(frozen=True)
class MeasureJob:
    """What `retinaseg measure` measures (MapItems), and how."""
    items: list
    out_dir: str
    disc_dir: Optional[str] = None
    pixel_size_um: Optional[float] = None
    disc_diameter_um: Optional[float] = None
    overlay: bool = False
    name: str = "measurements"  # the tables' file name, without extension (a shard's: measurements-K-of-N)
    overwrite: bool = False  # measure again what was measured before with the same files and settings
    calibres_from: str = CALIBRES_FROM  # zone B's calibres measured on the photo (when there is one) or the map
    maps_dir: Optional[str] = None  # where label maps no model made come from (--maps); None: the runs in out_dir
    discs_given: dict = field(default_factory=dict)  # stem -> (x, y, diameter), the photo's pixels, by hand (--discs)
    discs_file: Optional[str] = None  # the CSV they came from
    measuring_fov: Optional[int] = None  # maps measured resampled to this FOV diameter (--measuring-fov); None: as set
    # in measure.MEASURING_FOV (each map at its own size as shipped)
    fov_dir: Optional[str] = None  # FOV masks (a run's --fov-dir); None: the FOV estimated from each photo
    raw_fov_diameter: Optional[int] = None  # the FOV's diameter where it fills the frame (a run's --raw-fov-diameter)


# Each photo's row as measured, in OUT_DIR/measured/<stem>.json, so that a measure run that was stopped resumes:
# a photo whose map, probabilities, photo, disc mask or disc weights and settings are unchanged is not measured
# again. Raise the format whenever a measure's definition changes, so rows measured before are measured again.
MEASURED_FOLDER = "measured"
OVERLAY_FOLDER = "measure_overlay"  # with --overlay: <stem>.png, the disc, zones B and C and the CRAE/CRVE vessels
MEASURED_FORMAT = "retinaseg-measured/6"


def items_of_run(run_dir) -> list:
    """The photos earlier `retinaseg run`s wrote maps of, from their run records."""
    from retinaseg.inference.runner import run_records, task_of

    run_dir = Path(run_dir)
    done = {}
    for path, report in run_records(run_dir):  # run.json, and every shard's run-K-of-N.json
        if task_of(report) == "disc":
            raise RetinasegError(f"{shown(path)}: its maps are optic disc masks ({report.get('model')!r}), not "
                                 f"vessel maps; measure the folder of a vessel or artery/vein model's run (the disc is "
                                 f"found on the way)")
        done.update({r["stem"]: r for r in report["images"] if r.get("status") in ("ok", "skipped")})
    if not done:
        raise RetinasegError(f"{run_dir}: no run.json of a `retinaseg run` with photos done; give --maps and "
                             f"--photos for maps no run made")
    return items_of_records(run_dir, [done[stem] for stem in sorted(done)])


FOV_SETTINGS = ("fov_dir", "raw_fov_diameter")  # how the runs took each photo's FOV, which measuring takes too


def fov_settings_of_run(run_dir, fov_dir: Optional[str] = None, raw_fov_diameter: Optional[int] = None) -> tuple:
    """(fov_dir, raw_fov_diameter): those given, and for each not given the runs' whose maps are in run_dir, so
    their FOVs are measured as they were segmented; an error where run records differ in one not given."""
    from retinaseg.inference.runner import run_records

    if fov_dir and raw_fov_diameter:
        return fov_dir, raw_fov_diameter
    taken = {tuple((report.get("settings") or {}).get(key) for key in FOV_SETTINGS)
             for _, report in run_records(run_dir)}
    if len(taken) > 1:
        raise RetinasegError(f"{shown(run_dir)}: its run records took the FOV differently (--fov-dir, "
                             f"--raw-fov-diameter: {', '.join(map(str, sorted(taken, key=str)))}); give "
                             f"`retinaseg measure` --fov-dir and --raw-fov-diameter")
    run_fov_dir, run_diameter = taken.pop() if taken else (None, None)
    if not fov_dir and run_fov_dir and not Path(run_fov_dir).is_dir():
        raise RetinasegError(f"{shown(run_dir)}: the FOV masks its run took ({shown(run_fov_dir)}) are gone; "
                             f"give `retinaseg measure` --fov-dir")
    return fov_dir or run_fov_dir, raw_fov_diameter or run_diameter


def measure_run(out_dir, records: list, name: str = "measurements", overlay: bool = False, notify=print,
                progress: bool = True, process=None, workers: int = 0, overwrite: bool = False,
                fov_dir: Optional[str] = None, raw_fov_diameter: Optional[int] = None) -> list:
    """measure_items over the photos of a run that have maps (its ImageRecords ok or skipped): `run --measure`
    (with its --overlay, measure_overlay/ too; with its --overwrite, every photo measured again; the FOV taken as
    the run took it)."""
    done = [{"stem": r.stem, "input": r.input} for r in records if r.status in ("ok", "skipped")]
    job = MeasureJob(items_of_records(out_dir, done), str(out_dir), overlay=overlay, name=name, overwrite=overwrite,
                     fov_dir=fov_dir, raw_fov_diameter=raw_fov_diameter)
    return measure_items(job, notify, progress, process, workers)


def items_of_records(run_dir, records: list) -> list:
    """MapItems of run records' photos (dicts with stem and input)."""
    from retinaseg.inference.outputs import OUTPUT_FOLDERS

    items = []
    for record in records:
        stem = record["stem"]
        prob = Path(run_dir) / OUTPUT_FOLDERS["prob"] / f"{stem}.tif"
        items.append(MapItem(stem, Path(record["input"]), Path(run_dir) / OUTPUT_FOLDERS["raw"] / f"{stem}.png",
                             prob if prob.is_file() else None))
    return items


def items_of_folders(maps_dir, photos_dir) -> list:
    """Label maps no model made (e.g. a data set's manual A/V labels), paired with photos by file stem; a map
    whose stem is a photo's and then a separator and more (01_test_AVmanual for 01_test) counts as that photo's."""
    from retinaseg.io.images import is_image_name

    photos = {p.stem: p for p in sorted(Path(photos_dir).iterdir()) if is_image_name(p.name)} if photos_dir else {}
    items = []
    for map_path in sorted(Path(maps_dir).iterdir()):
        if not is_image_name(map_path.name):
            continue
        stem = _photo_stem_of(map_path.stem, photos) or map_path.stem
        items.append(MapItem(stem, photos.get(stem), map_path, None))
    return items


def _photo_stem_of(name: str, stems) -> Optional[str]:
    """The longest of the stems that name is, or begins before a character other than a letter or digit
    (01_test_AVmanual -> 01_test; eye12 is never eye1's). A few lookups a name, however many photos."""
    cuts = [i for i, char in enumerate(name) if not char.isalnum()] + [len(name)]
    return next((name[:i] for i in reversed(cuts) if name[:i] in stems), None)


GIVEN_DISC_COLUMNS = ("disc_x", "disc_y", "disc_diameter_px")  # as measurements.csv names them


def read_given_discs(path) -> dict:
    """{stem: (x, y, diameter)} from a CSV of discs set by hand: a stem column and GIVEN_DISC_COLUMNS, in the
    photo's pixels (a copy of measurements.csv does; other columns are ignored). Fields split by commas, or by
    semicolons or tabs as spreadsheets save them in many languages (with decimal commas then). A row whose three are
    all empty gives no disc; a row with some empty, a value that is no number, a diameter not above 0 or a stem
    listed twice is an error naming the file and the line."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            header = file.readline()
            file.seek(0)
            delimiter = max(",;\t", key=header.count)
            reader = csv.DictReader(file, delimiter=delimiter)
            missing = [name for name in ("stem",) + GIVEN_DISC_COLUMNS if name not in (reader.fieldnames or [])]
            if missing:
                raise RetinasegError(f"{shown(path)}: no {', '.join(missing)} column(s); a CSV of discs has stem, "
                                     f"{', '.join(GIVEN_DISC_COLUMNS)} (the photo's pixels)")
            discs = {}
            for row in reader:
                where = f"{shown(path)}, line {reader.line_num}"
                cells = [(row[name] or "").strip() for name in GIVEN_DISC_COLUMNS]
                if not any(cells) or all(cell.lower() == "nan" for cell in cells):
                    continue
                try:
                    x, y, diameter = (float(cell if delimiter == "," else cell.replace(",", ".")) for cell in cells)
                except ValueError:
                    raise RetinasegError(f"{where}: {', '.join(GIVEN_DISC_COLUMNS)} must all be numbers; got "
                                         f"{', '.join(repr(c) for c in cells)}") from None
                if not all(np.isfinite([x, y, diameter])) or diameter <= 0:
                    raise RetinasegError(f"{where}: a disc needs a finite centre and a diameter above 0")
                stem = (row["stem"] or "").strip()
                if stem in discs:
                    raise RetinasegError(f"{where}: {shown(stem)} is listed twice")
                discs[stem] = (x, y, diameter)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RetinasegError(f"{shown(path)}: cannot be read as a CSV ({exc})") from None
    return discs


def given_disc(job: MeasureJob, stem: str, shape: tuple) -> Optional[Disc]:
    """The disc set by hand for this photo (job.discs_given), or None; one outside the map is an error."""
    if stem not in job.discs_given:
        return None
    x, y, diameter = job.discs_given[stem]
    if not (0 <= x < shape[1] and 0 <= y < shape[0]) or diameter > max(shape):
        raise RetinasegError(f"{shown(job.discs_file)}: the disc given for {shown(stem)} (centre {x:g}, {y:g}, "
                             f"diameter {diameter:g}) does not fit its {shape[1]}x{shape[0]} map")
    return Disc("ok", row=y, col=x, diameter=diameter, source="given")


def read_map(path) -> np.ndarray:
    """A map as measure() takes it: bool for a binary vessel map (0/255 or 0/1), uint8 av codes for an A/V one
    (codes 0-3 or the red/blue/green colour map)."""
    from retinaseg.io.images import read_binary_mask, read_mask

    stored = read_mask(path)
    if stored.ndim == 3:
        return av.decode_colours(stored)
    if stored.max() <= 3 and stored.max() > 1:
        return stored.astype(np.uint8)
    return read_binary_mask(path)


def measure_items(job: MeasureJob, notify=print, progress: bool = True, process=None, workers: int = 0) -> list:
    """Measures each item into a row (dict); a bad item gives a failed row with its reason, never an exception.
    Writes measurements.csv and measurements.json (and measure_overlay/ with job.overlay) into job.out_dir.
    process(job, notify, progress), when given, measures the items elsewhere (the Ray executor) and returns
    measure_item's results in their order; by default they are measured here, in `workers` processes side by
    side when more than one (the graph and the measures run on one core each)."""
    unmatched = sorted(set(job.discs_given) - {item.stem for item in job.items})
    if unmatched:
        notify(f"note: {shown(job.discs_file)} gives discs for {len(unmatched)} photo(s) not measured here: "
               f"{', '.join(shown(stem) for stem in unmatched[:5])}{', ...' if len(unmatched) > 5 else ''}")
    before = {} if job.overwrite else _measured_before(job)
    if before:
        notify(f"{len(before)} of {len(job.items)} photo(s) measured before with the same files and settings: "
               f"their rows are reused (--overwrite measures them again)")
    todo = replace(job, items=[item for index, item in enumerate(job.items) if index not in before])
    if process is None:
        side_by_side = workers > 1 and len(todo.items) > 1 and _can_fork()
        process = partial(_measure_in_processes, workers=workers) if side_by_side else _measure_here
    measured = iter(process(todo, notify, progress) if todo.items else [])
    results = [before[index] if index in before else next(measured) for index in range(len(job.items))]
    without = sum(item.probabilities is None for item in job.items) if job.maps_dir is None else 0
    if without:  # a run's maps, measured as validated only with their probabilities
        notify(f"note: {without} of {len(job.items)} map(s) have no probabilities (`retinaseg run --save-prob`), so "
               f"their calibres are read on the binary map (within about half a pixel) rather than on the "
               f"probabilities (0.2 px), as validated (docs/measurements.md)")
    binary = sum(BINARY_MAP in row["reason"] for row, _ in results)
    if binary:
        notify(f"note: {binary} of {len(results)} map(s) are binary vessel maps, so their artery and vein measures "
               f"are empty (their rows are partial for that alone unless another reason is given)")
    no_disc = sum(row.get("disc_from") == "model" and not _number(row.get("disc_x")) for row, _ in results)
    if no_disc:
        notify(f"note: the disc model found no disc in {no_disc} photo(s), so their zone measures are empty; "
               f"`retinaseg measure --discs` can take their discs set by hand (docs/measurements.md)")
    check_discs([row for row, _ in results], notify)
    for row, detail in results:
        detail["disc_check"] = row["disc_check"]
    _write_tables(job, [row for row, _ in results], [detail for _, detail in results])
    return [row for row, _ in results]


def check_discs(rows: list, notify=print) -> None:
    """Sets each row's disc_check: empty, or a note to look at its overlay where the disc's diameter relative to the
    FOV's is more than DISC_SIZE_TOLERANCE off the median over this table's photos of the same size (one camera, one
    setting), at least MIN_DISC_PEERS of them with a disc, where another region of the photo would pass as a disc
    (disc_rivals), or where the vessels do not converge on it (disc_vessel_ratio under 1). Disc diameters vary by
    about 13% between people (Jonas et al. 1988: disc area 2.7 +- 0.7 mm2); a disc this far off is most likely a
    fragment of a pale disc or a bright region beyond it, which moves zone B and every measure made there. The row's
    measures stand."""
    groups: dict = {}
    for row in rows:
        rivals, ratio = row.get("disc_rivals"), row.get("disc_vessel_ratio")
        row["disc_check"] = "; ".join(filter(None, [
            f"{rivals} other region(s) would pass as a disc" if _number(rivals) and rivals > 0 else "",
            f"the vessels do not converge on it (ring / FOV vessel density {ratio:.2f})"
            if _number(ratio) and ratio < 1 else ""]))
        disc, fov = row.get("disc_diameter_px"), row.get("fov_diameter_px")
        if _number(disc) and _number(fov) and fov > 0:
            groups.setdefault(row.get("photo_size"), []).append((row, disc / fov))
    for size, members in groups.items():
        if len(members) < MIN_DISC_PEERS:
            continue
        median = float(np.median([ratio for _, ratio in members]))
        for row, ratio in members:
            if abs(ratio / median - 1) > DISC_SIZE_TOLERANCE:
                row["disc_check"] = "; ".join(filter(None, [
                    f"disc {ratio / median:.2f} times the median of the {len(members)} {size} photos with a disc",
                    row["disc_check"]]))
    for row in rows:
        if row["disc_check"]:
            row["disc_check"] += ": check its overlay"
            notify(f"check: {row['stem']}: {row['disc_check']}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and value == value


def measured_line(rows: list) -> str:
    """The rows' statuses counted, and the discs to check: the last line `retinaseg measure` prints."""
    counts = {status: sum(row["status"] == status for row in rows) for status in ("ok", "partial", "failed")}
    checks = sum(bool(row.get("disc_check")) for row in rows)
    return (f"{counts['ok']} ok, {counts['partial']} partial, {counts['failed']} failed"
            + (f", {checks} disc(s) to check (disc_check)" if checks else ""))


def measurement_tables(out_dir) -> list[tuple[Path, list]]:
    """(path, rows) of each measurements table in out_dir (measurements.csv, and a shard's measurements-K-of-N.csv)
    that can be read."""
    import csv
    import re

    tables = []
    for path in sorted(Path(out_dir).glob("measurements*.csv")):
        if re.fullmatch(r"measurements(-\d+-of-\d+)?\.csv", path.name):
            try:
                with open(path, newline="") as f:
                    tables.append((path, list(csv.DictReader(f))))
            except (OSError, csv.Error, UnicodeDecodeError):
                continue
    return tables


def _measure_here(job: MeasureJob, notify, progress: bool) -> list:
    from tqdm import tqdm

    disc = DiscFinder(job, notify)
    return [measure_item(job, item, disc, notify)
            for item in tqdm(job.items, desc="measuring", unit="img", disable=not progress)]


def _measured_before(job: MeasureJob) -> dict:
    """{item index: (row, detail)} of the photos measured before with the same files and settings (with --overlay,
    their overlays written too)."""
    import json

    found = {}
    for index, item in enumerate(job.items):
        path = _measured_path(job, item.stem)
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        overlay = _overlay_path(job, item.stem)
        if saved.get("key") == _key(job, item) and (overlay.is_file() or not job.overlay):
            found[index] = (saved["row"], saved["detail"])
    return found


def _measured_path(job: MeasureJob, stem: str) -> Path:
    return Path(job.out_dir) / MEASURED_FOLDER / f"{stem}.json"


def _overlay_path(job: MeasureJob, stem: str) -> Path:
    return Path(job.out_dir) / OVERLAY_FOLDER / f"{stem}.png"


def _key(job: MeasureJob, item: MapItem) -> dict:
    """What a photo's row follows from: its files (path, size, modification time) and the settings."""
    def state(path) -> Optional[list]:  # the absolute path: OUT_DIR may be named another way the next time
        try:
            stat = os.stat(path)
            return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]
        except (OSError, TypeError, ValueError):
            return None if path is None else [os.path.abspath(path)]

    stem, photo_path, map_path, prob_path = item
    disc_mask = mask_of(job.disc_dir, stem) if job.disc_dir else None
    given = job.discs_given.get(stem)
    fov = {"fov_mask": state(mask_of(job.fov_dir, stem))} if job.fov_dir else {}  # keys as before without
    return {"format": MEASURED_FORMAT, "map": state(map_path), "probabilities": state(prob_path),
            "photo": state(photo_path), "disc_mask": state(disc_mask) if disc_mask else None,
            "disc_given": list(given) if given else None, **fov, **_settings(job)}


def _settings(job: MeasureJob) -> dict:
    """How every row of the job is measured: the disc's finding (the disc model's weights and rules, or none with
    --disc-dir) and the options."""
    from retinaseg import disc as disc_finding

    weights = None
    if not job.disc_dir:  # the disc model's shipped weights find the disc (torch imported only then)
        from retinaseg.models import shipped_weights_sha256

        weights = shipped_weights_sha256("disc")
    return {"disc_weights": weights, "disc_grown_to": disc_finding.GROW_TO,
            "disc_among_rivals": None if job.disc_dir else disc_finding.AMONG_RIVALS,
            "jpeg_decoding": None if job.disc_dir else _jpeg_decoding(),
            "pixel_size_um": job.pixel_size_um, "disc_diameter_um": job.disc_diameter_um,
            "calibres_from": job.calibres_from, "measuring_fov": job.measuring_fov or measuring.MEASURING_FOV,
            **({"raw_fov_diameter": job.raw_fov_diameter} if job.raw_fov_diameter else {})}


def made_with(job: MeasureJob) -> dict:
    """What a table's numbers follow from, for a methods section: the versions, the measures' format, the maps (the
    model and weights of each run that made them, from its run record, or the folder of maps no model made), the
    disc (masks, or the disc model's weights and rules) and the options."""
    from retinaseg.inference.runner import run_records
    from retinaseg.provenance import versions

    if job.maps_dir is None:
        maps = {"runs": [{"record": path.name, **(report.get("made_with") or {"model": report.get("model"),
                                                                             "weights_sha256": None})}
                         for path, report in run_records(job.out_dir)]}
    else:
        maps = {"folder": str(job.maps_dir)}
    given = {"file": job.discs_file, "photos": len(job.discs_given)} if job.discs_given else None
    return {"versions": versions("numpy", "scipy", "scikit-image", "torch"), "measures": MEASURED_FORMAT,
            "maps": maps, "discs_given": given, "disc_masks": job.disc_dir, "fov_masks": job.fov_dir,
            **_settings(job)}


def _jpeg_decoding() -> str:
    """How the disc model's photos are decoded (torch imported here: only where the disc model runs)."""
    from retinaseg.inference.segmenter import jpeg_decoding

    return jpeg_decoding()



def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _measure_in_processes(job: MeasureJob, notify, progress: bool, workers: int) -> list:
    """measure_item on each item in forked processes, the results in the items' order; each process's messages
    said here as its photos finish. A process that dies (the out-of-memory killer, a crash) breaks its pool: the
    photos not yet begun go on in a new pool, and those being measured then are measured again one at a time, each
    in a process of its own, so only a photo that kills its process fails, with that reason."""
    import multiprocessing

    from tqdm import tqdm

    results: list = [None] * len(job.items)
    started = multiprocessing.get_context("fork").Array("b", len(job.items), lock=False)  # set by the processes
    with tqdm(total=len(job.items), desc="measuring", unit="img", disable=not progress) as bar:
        pending, suspects = list(range(len(job.items))), []
        while pending:
            broken = _pool_pass(job, pending, workers, started, results, notify, bar)
            if len(broken) == len(pending) and not any(started[index] for index in broken):
                suspects += broken  # the pool broke before it began any: no new pool, each alone below
                break
            suspects += [index for index in broken if started[index]]
            pending = [index for index in broken if not started[index]]
        for index in suspects:  # alone, a photo that kills its process again is the one that did
            _pool_pass(job, [index], 1, started, results, notify, bar, last=True)
    return results


def _pool_pass(job: MeasureJob, indices: list, workers: int, started, results: list, notify, bar,
               last: bool = False) -> list:
    """The items at indices measured in a pool of processes, each result in results; the indices left unmeasured
    when a process died and broke the pool (with last, failed instead)."""
    import gc
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    broken = []
    with ProcessPoolExecutor(min(workers, len(indices)), mp_context=multiprocessing.get_context("fork"),
                             initializer=_start_measuring, initargs=(job, started)) as pool:
        gc.freeze()  # the processes fork at the first submit; no finaliser of this process's objects runs there
        try:
            futures = {pool.submit(_measure_in_process, index): index for index in indices}
        finally:
            gc.unfreeze()
        for future in as_completed(futures):
            index = futures[future]
            try:
                row, detail, messages = future.result()
            except BrokenProcessPool:
                if not last:
                    broken.append(index)
                    continue
                reason = f"{shown(job.items[index][2])}: its measuring process died (out of memory, or a crash)"
                row, detail, messages = *_failed(job.items[index], reason), [f"failed: {reason}"]
            for message in messages:
                notify(message)
            results[index] = (row, detail)
            bar.update()
    return sorted(broken)


_process_job: Optional[MeasureJob] = None  # in a measuring process: its job, disc model and messages
_process_disc = None
_process_started = None  # one flag per item, shared: set when its measuring begins
_process_messages: list = []


def _start_measuring(job: MeasureJob, started) -> None:
    global _process_job, _process_disc, _process_started
    import sys

    if "torch" in sys.modules:  # OpenMP's thread team does not survive fork: a second thread would hang
        sys.modules["torch"].set_num_threads(1)
    _process_job, _process_disc, _process_started = job, DiscFinder(job, _process_messages.append), started


def _measure_in_process(index: int) -> tuple:
    _process_started[index] = 1
    row, detail = measure_item(_process_job, _process_job.items[index], _process_disc, _process_messages.append)
    messages = list(_process_messages)
    _process_messages.clear()
    return row, detail, messages


class DiscFinder:
    """The disc model, loaded at the first photo whose disc it finds (none with job.disc_dir, and none whose disc is
    given by hand); it scales crops by the job's raw FOV diameter, as the maps' run did."""

    def __init__(self, job: MeasureJob, notify):
        self.needed, self.notify, self._segmenter = not job.disc_dir, notify, None
        self.raw_fov_diameter = job.raw_fov_diameter

    @property
    def segmenter(self):
        if self.needed and self._segmenter is None:
            from retinaseg.inference.segmenter import SegmentConfig, Segmenter
            from retinaseg.models import load_model

            self._segmenter = Segmenter(load_model("disc"), SegmentConfig(raw_fov_diameter=self.raw_fov_diameter),
                                        notify=self.notify)
        return self._segmenter


def measure_item(job: MeasureJob, item: MapItem, disc: DiscFinder, notify) -> tuple[dict, dict]:
    """(the table row, the JSON detail) of one MapItem; writes its overlay and keeps the row in measured/ for a later
    run to reuse."""
    from retinaseg.io.atomic import write_json, write_png

    stem = item.stem
    try:
        result, overlay_image = _measure_one(job, item, disc)
    except Exception as exc:  # one bad map must not stop the folder
        reason = str(exc) if isinstance(exc, RetinasegError) \
            else f"{shown(item.map)}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        notify(f"failed: {reason}")
        return _failed(item, reason)
    row = _row_of(item)
    row.update(status=result.status, reason="; ".join(result.reasons), **result.values)
    own = [reason for reason in result.reasons if reason != BINARY_MAP]  # that one is said once, for the batch
    if result.status != "ok" and own:
        notify(f"{result.status}: {shown(stem)}: {'; '.join(own)}")
    if overlay_image is not None:
        write_png(_overlay_path(job, stem), overlay_image)
    detail = {**row, "zone_b": result.zone_b}
    write_json(_measured_path(job, stem), {"key": _key(job, item), "row": row, "detail": detail}, indent=None)
    return row, detail


def _row_of(item: MapItem) -> dict:
    return {"stem": item.stem, "input": str(item.photo) if item.photo else "", "map": str(item.map)}


def _failed(item: MapItem, reason: str) -> tuple[dict, dict]:
    row = {**_row_of(item), "status": "failed", "reason": reason}
    return row, {**row, "zone_b": []}


def _measure_one(job: MeasureJob, item: MapItem, disc_finder: DiscFinder):
    from retinaseg.disc import find_disc
    from retinaseg.io.images import read_binary_mask, read_photo, read_probabilities

    stem, photo_path, map_path, prob_path = item
    labels = read_map(map_path)
    photo = read_photo(photo_path) if photo_path is not None and Path(photo_path).exists() else None
    if photo is not None and photo.shape[:2] != labels.shape:
        raise RetinasegError(f"{shown(map_path)}: the map is {labels.shape[1]}x{labels.shape[0]} but its photo "
                             f"{shown(photo_path)} is {photo.shape[1]}x{photo.shape[0]}")
    probability = read_probabilities(prob_path) if prob_path is not None else None
    fov = _fov(job, stem, photo, labels.shape)
    disc = given_disc(job, stem, labels.shape)
    if disc is None and job.disc_dir:
        disc_mask = mask_of(job.disc_dir, stem)
        if disc_mask is None:
            raise RetinasegError(f"{shown(job.disc_dir)}: no disc mask for {shown(stem)}")
        disc = replace(find_disc(read_binary_mask(disc_mask).astype(np.float32)), source="mask")
    elif disc is None and photo is not None:
        # found in the disc model's map before the others are dropped: its rivals counted and, where there are
        # some, the one the map's vessels converge on kept (not always the largest, which `run -m disc` keeps)
        segmenter = disc_finder.segmenter
        prob = segmenter.predict_file(photo_path, fov if job.fov_dir else None, finished=False, whole=photo)[0]
        disc = replace(segmenter.find_disc(prob, labels > 0, fov), source="model")
    elif disc is None:
        raise RetinasegError(f"{shown(map_path)}: no photo to find the optic disc in (give --photos, --disc-dir "
                             f"or --discs)")
    pixel_size = job.pixel_size_um
    if pixel_size is None and job.disc_diameter_um and disc.found:
        pixel_size = job.disc_diameter_um / disc.diameter
    result = measure(labels, disc, fov, probability, pixel_size, photo, job.calibres_from, job.measuring_fov,
                     job.raw_fov_diameter)
    return result, (_overlay(photo, labels, disc, result) if job.overlay else None)


def _fov(job: MeasureJob, stem: str, photo: Optional[np.ndarray], shape: tuple) -> np.ndarray:
    """The FOV the map is measured in: its mask in job.fov_dir, else estimated from the photo, else the frame."""
    from retinaseg.fov import estimate_fov
    from retinaseg.io.images import read_binary_mask

    if job.fov_dir:
        path = mask_of(job.fov_dir, stem)
        if path is None:
            raise RetinasegError(f"{shown(job.fov_dir)}: no FOV mask for {shown(stem)}")
        fov = read_binary_mask(path)
        if fov.shape != shape:
            raise RetinasegError(f"{shown(path)}: the FOV mask is {fov.shape[1]}x{fov.shape[0]} but the map is "
                                 f"{shape[1]}x{shape[0]}")
        return fov
    return estimate_fov(photo) if photo is not None else np.ones(shape, bool)


def _overlay(photo, labels, disc: Disc, result: Measurements) -> np.ndarray:
    """The photo (or the map) with the disc, the zone B and zone C rings, and the zone-B vessels that CRAE and
    CRVE were computed from drawn over it, and the row's main measures written in a corner."""
    base = (photo * 255).astype(np.uint8) if photo is not None else av.encode_colours(labels.astype(np.uint8))
    image = base.copy()
    if disc.found:
        _draw_zones(image, disc, result)
    return _captioned(image, result)


def _captioned(image: np.ndarray, result: Measurements) -> np.ndarray:
    """The image with CRAE, CRVE, AVR and the fractal dimension (and the row's status, if not ok) in its top left
    corner, white on black, so a look through a study's overlays shows the numbers beside the vessels they came
    from."""
    from PIL import Image, ImageDraw, ImageFont

    values = result.values

    def value(key: str, digits: int) -> str:
        return f"{values[key]:.{digits}f}" if _number(values.get(key)) else "-"

    text = (f"CRAE {value('crae_px', 1)} px  CRVE {value('crve_px', 1)} px  AVR {value('avr', 3)}  "
            f"FD {value('fractal_dimension_all', 3)}" + ("" if result.status == "ok" else f"  ({result.status})"))
    size = max(12, round(image.shape[0] / 45))
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=size)
    corner = (size // 2, size // 2)
    left, top, right, bottom = draw.textbbox(corner, text, font=font)
    margin = max(2, size // 4)
    draw.rectangle((left - margin, top - margin, right + margin, bottom + margin), fill=(0, 0, 0))
    draw.text(corner, text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def _draw_zones(image: np.ndarray, disc: Disc, result: Measurements) -> None:
    """The disc's margin, the zone B and zone C rings, and the zone-B vessels of CRAE and CRVE, as wide as measured."""
    line = 1.5 / disc.diameter
    window, radius = around(disc, ZONE_C[1] + line, image.shape[:2])
    for ring, colour in ((0.5, (255, 255, 255)), (ZONE_B[0], (255, 255, 0)), (ZONE_B[1], (255, 255, 0)),
                         (ZONE_C[1], (0, 255, 255))):
        image[window][np.abs(radius - ring) < line] = colour
    colours = {av.ARTERY: (255, 40, 40), av.VEIN: (40, 80, 255)}
    for path, code, calibre in result.used:  # each drawn as wide as it was measured
        half = max(calibre / 2, 0.5)
        reach = int(np.ceil(half))
        for row, col in path:
            box = np.s_[max(row - reach, 0):min(row + reach + 1, image.shape[0]),
                        max(col - reach, 0):min(col + reach + 1, image.shape[1])]
            rows, cols = np.ogrid[box]
            image[box][np.hypot(rows - row, cols - col) <= half] = colours[code]


def _write_tables(job: MeasureJob, rows: list, details: list) -> None:
    import csv
    import io

    from retinaseg.io.atomic import atomic_path, write_json

    fields = ["stem", "input", "map", "status", "reason"]
    for row in rows:
        fields += [key for key in row if key not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    for row in rows:  # a measure that could not be made is an empty cell, its reason in the reason column
        writer.writerow({k: ("" if v != v else f"{v:.6g}") if isinstance(v, float) else v for k, v in row.items()})
    out_dir = Path(job.out_dir)
    with atomic_path(out_dir / f"{job.name}.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in details]
    write_json(out_dir / f"{job.name}.json", {"format": "retinaseg-measurements/2", "made_with": made_with(job),
                                              "photos": clean})
