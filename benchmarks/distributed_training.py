"""`retinaseg train` steps per second in one process against torchrun with 2 (or more) processes, in the same run.

    python benchmarks/distributed_training.py --data-root ../shared/data        # DRIVE's training photos
    python benchmarks/distributed_training.py                                   # synthetic DRIVE-size photos
    python benchmarks/distributed_training.py --processes 1,2,4 --threads 4     # a bigger machine

Each configuration is the real command end to end (torchrun with gloo for several processes), with the same
global --batch-size, so the same work per step; only the split differs. The machine's --threads are shared out:
one process uses all of them, N processes use threads/N each (torchrun's OMP_NUM_THREADS). No images are held
out, so an epoch is steps only; the rate is the median over the epochs after the first (reading, warm-up).
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _synthetic_dataset(root: Path, count: int) -> list[str]:
    import imageio.v3 as iio
    import numpy as np

    from retinaseg.synthetic import synthetic_fundus

    for i in range(count):
        sample = synthetic_fundus((584, 565), seed=i)
        for folder, array in (("images", sample.image_uint8()), ("labels", (sample.vessels * 255).astype(np.uint8)),
                              ("fov", (sample.fov * 255).astype(np.uint8))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            iio.imwrite(root / folder / f"eye{i}{'_gt' if folder == 'labels' else ''}.png", array)
    return ["-d", "folder", "--data-root", str(root), "--dataset-option", "label_suffix=_gt"]


def _steps_per_second(processes: int, threads: int, data: list, args, scratch: Path) -> float:
    out = scratch / f"run-{processes}"
    settings = ["train", "-m", args.model, *data, "-o", str(out), "--epochs", str(args.epochs), "--iterations",
                str(args.iterations), "--batch-size", str(args.batch_size), "--patch-size", str(args.patch_size),
                "--val-fraction", "0", "--device", "cpu", "-q"]
    per_process = max(1, threads // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(per_process)}
    if processes == 1:
        command = [sys.executable, "-m", "retinaseg", *settings]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                   str(processes), "-m", "retinaseg", *settings]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(out / "metrics.csv", newline="") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)][1:]
    return args.iterations / statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help="holds DRIVE (docs/data.md); default: synthetic DRIVE-size photos")
    parser.add_argument("--model", default="vesselnet")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts to compare")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads shared out")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (every count must divide it)")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=20, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = (["-d", "drive", "--data-root", args.data_root] if args.data_root
                else _synthetic_dataset(scratch / "data", 6))
        rates = {n: _steps_per_second(n, args.threads, data, args, scratch) for n in counts}
    print(f"{args.model}, global batch {args.batch_size} x {args.patch_size} px, {args.threads} CPU threads, "
          f"{'DRIVE training photos' if args.data_root else 'synthetic DRIVE-size photos'}")
    for n, rate in rates.items():
        threads = max(1, args.threads // n)
        print(f"  {n} process{'es' if n > 1 else '  '} x {threads} thread{'s' if threads > 1 else ' '}  "
              f"{rate:6.2f} steps/s  {rate / rates[counts[0]]:5.2f}x")


if __name__ == "__main__":
    main()
