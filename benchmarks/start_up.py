"""Start-up: from command to the first photo written, and how light `--help` and `plugins` are, beside the floors
measured in the same run (the interpreter alone, and `import torch`).

    python benchmarks/start_up.py [--data-root ../shared/data] [--repeats 5]

Each command runs in a fresh process, `--repeats` times, one after the other; the table gives the median wall time.
"first photo" is the time from starting `retinaseg run -q PHOTO_DIR OUT` until OUT/raw_pre/<stem>.png exists
(polled every 5 ms), for the default model on one DRIVE test photo (synthetic DRIVE-size without --data-root).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(command: list, until: Path | None = None) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if until is None:
        process.wait()
        return time.perf_counter() - started
    while not until.exists():
        if process.poll() is not None and not until.exists():
            raise SystemExit(f"{' '.join(map(str, command))} ended without writing {until}")
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    process.wait()
    return seconds


def _photo(data_root, folder: Path) -> str:
    folder.mkdir()
    source = Path(data_root or "") / "DRIVE/test/images/01_test.tif"
    if data_root and source.is_file():
        (folder / source.name).write_bytes(source.read_bytes())
        return source.stem
    import imageio.v3 as iio

    from retinaseg.synthetic import synthetic_fundus

    iio.imwrite(folder / "drive_size.png", synthetic_fundus((584, 565), seed=1).image_uint8())
    return "drive_size"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help="holds DRIVE (docs/data.md); default: a synthetic DRIVE-size photo")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    python, retinaseg = [sys.executable], [sys.executable, "-m", "retinaseg"]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        stem = _photo(args.data_root, scratch / "photo")
        rows = {"python -c pass (the interpreter)": lambda i: _timed([*python, "-c", "pass"]),
                "python -c 'import torch' (the floor for a torch run)": lambda i: _timed(
                    [*python, "-c", "import torch"]),
                "retinaseg --help": lambda i: _timed([*retinaseg, "--help"]),
                "retinaseg plugins": lambda i: _timed([*retinaseg, "plugins"]),
                "retinaseg run, to the first photo written": lambda i: _timed(
                    [*retinaseg, "run", "-q", scratch / "photo", scratch / f"out{i}"],
                    until=scratch / f"out{i}" / "raw_pre" / f"{stem}.png")}
        print(f"median of {args.repeats} fresh processes, "
              f"{'a DRIVE test photo' if args.data_root else 'a synthetic DRIVE-size photo'}")
        for name, measure in rows.items():
            print(f"  {name:55s} {statistics.median(measure(i) for i in range(args.repeats)):6.2f} s")


if __name__ == "__main__":
    main()
