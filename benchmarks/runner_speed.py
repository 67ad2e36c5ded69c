"""Runner speed and peak memory, against the seeds' naive loop, in the same run.

    python benchmarks/runner_speed.py [--data-root ../shared/data] [--model vesselnet] [--images 10]
    python benchmarks/runner_speed.py --device cuda --images 200 --threads 4   # on a GPU machine (--workers auto)
    python benchmarks/runner_speed.py --device cuda --images 200 --threads 1 --sizes drive
    python benchmarks/runner_speed.py --weights runs/candidate/best.pt   # a candidate instead of the shipped file

DRIVE-size (565x584) and HRF-size (3504x2336) photos come from --data-root (DRIVE/test/images,
HRF-AV/test/images); without it, synthetic photos of those sizes are used and the table says so. Each
configuration runs in a fresh process, which reports its own wall time and peak resident memory, and that of
its largest worker process (forked, so pages shared with the main process count in both). Each first
runs its method on one photo untimed, so the kernels it uses are loaded and chosen before the clock starts
(the runner's bfloat16 channels-last path on CUDA is not the one a plain forward pass warms up); the time
is the steady state a long folder sees.

naive   the seeds' way: one photo at a time, resize to 512x512, one forward pass under no_grad, resize the
        probabilities back, threshold, write the PNG. Same model, same weights, same reader.
runner  `retinaseg run`'s batch runner end to end (read, FOV, working scale, forward, raw size, write raw_pre and
        small_pre), with the batch size given, at the default --max-downscale (3.5: an HRF photo's FOV
        becomes ~940 px across) and, for HRF, also with no limit (the FOV at the weights' working scale: 640 px
        for the default file, about the naive loop's pixel count); and batch 1 with --tta (the model's test-time
        views).

main CPU ms: the CPU time of the row's main process per photo (all its threads; not its workers'). For the runner
that is the network and taking photos in and out; on a GPU machine, where the network's share is small, it bounds
how many photos a second one runner can take (1000 / it), however many workers prepare them.

null    the runner with a model that returns zeros at once (`null`, registered by this script, at the default
        model's working scale), with --workers 1 and 2: the pipeline's own cost per photo (reading, FOV,
        scaling, resizing back, encoding, writing), and how it scales with workers. `--null-only` runs only these.

HRF's photos are JPEGs, which the runner decodes at a reduced size where the working scale allows
(docs/experiments.md); rows marked "JPEG decoded whole" run them as before that, for comparison (only with JPEGs).

With --device cuda both methods run on the GPU (the runner under its bfloat16 autocast, batches 1 and 8), every
timing ends with a synchronize, and a column adds the peak GPU memory torch allocated.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from retinaseg.cores import run_workers
from retinaseg.inference import MAX_DOWNSCALE, RUNNER_ENVIRONMENT


def _photos(data_root, kind: str, count: int, scratch: Path) -> tuple[list, str]:
    if data_root:
        folder = Path(data_root) / ("DRIVE/test/images" if kind == "drive" else "HRF-AV/test/images")
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.is_file())
            return (files * count)[:count] if len(files) < count else files[:count], "real"
    import imageio.v3 as iio

    from retinaseg.synthetic import synthetic_fundus

    size = (584, 565) if kind == "drive" else (2336, 3504)
    fraction = 0.92 if kind == "drive" else 1.4
    files = []
    for i in range(min(count, 3)):
        path = scratch / f"{kind}_{i}.png"
        iio.imwrite(path, synthetic_fundus(size, seed=i, fov_fraction=fraction).image_uint8())
        files.append(path)
    return (files * count)[:count], "synthetic"


NULL_FOV_DIAMETER = 640  # the default model's working scale (vesselnet.pt runs at 640 px across the FOV)


def _register_null_model() -> None:
    """The `null` model: zeros (a logit of -10 everywhere) straight from its input, no weights."""
    import torch

    from retinaseg import hookimpl
    from retinaseg.plugins import load_plugins, pm
    from retinaseg.registry import ModelSpec

    class Null(torch.nn.Module):
        def __init__(self, in_channels=3, classes=1):
            super().__init__()

        def forward(self, x):
            return torch.full_like(x[:, :1], -10.0)

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register(ModelSpec(name="null", build=Null, description="zeros", fov_diameter=NULL_FOV_DIAMETER))

    load_plugins()
    pm.register(Plugin(), name="null-model")


def _worker(args) -> None:
    """Runs one configuration and prints {seconds, images, peak_mb}."""
    import numpy as np
    import torch

    from retinaseg.inference.runner import BatchConfig, run_batch
    from retinaseg.inference.segmenter import SegmentConfig, Segmenter
    from retinaseg.io.atomic import write_png
    from retinaseg.io.images import read_photo
    from retinaseg.models import load_model, to_probabilities

    torch.set_num_threads(args.threads)
    if args.decode_whole:
        from retinaseg.inference import segmenter

        segmenter.DECODE_REDUCED = False
    if args.model == "null":
        _register_null_model()
    files = [Path(p) for p in json.loads(args.files)]
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model = load_model(args.model, args.weights)
    out = Path(args.out)

    def naive(files, out):
        module = model.module.eval()
        for i, path in enumerate(files):
            photo = read_photo(path)
            x = torch.from_numpy(photo).permute(2, 0, 1)[None].to(device)
            x = torch.nn.functional.interpolate(x, size=(512, 512), mode="bilinear", align_corners=False)
            x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True)
            with torch.no_grad():
                prob = to_probabilities(module(x))
            prob = torch.nn.functional.interpolate(prob, size=photo.shape[:2], mode="bilinear", align_corners=False)
            write_png(out / f"{i}_{path.stem}.png", ((prob[0, 0] >= 0.5).cpu().numpy() * 255).astype(np.uint8))

    def runner(files, out):
        links = out / "in"
        links.mkdir(parents=True, exist_ok=True)
        inputs = []
        for i, path in enumerate(files):  # distinct names so repeated photos are all processed
            link = links / f"{i}_{path.name}"
            link.symlink_to(path.resolve())
            inputs.append(link)
        segmenter = Segmenter(model, SegmentConfig(device=args.device, batch_size=args.batch_size, tta=args.tta,
                                                   max_downscale=args.max_downscale, backend=args.backend))
        summary = run_batch(segmenter, inputs, out / "run", BatchConfig(workers=args.workers), progress=False)
        assert summary.failed == 0, summary.line()

    method = naive if args.mode == "naive" else runner
    model.module.to(device)
    # One photo first, untimed, so each method's own kernels (the runner's bf16 channels-last path on CUDA)
    # are loaded and chosen before the clock starts.
    (out / "warm-up").mkdir()
    method(files[:1], out / "warm-up")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    (out / "timed").mkdir()
    method(files, out / "timed")
    if cuda:
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest worker process
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    print(json.dumps({"seconds": seconds, "images": len(files), "peak_mb": peak_mb, "worker_mb": worker_mb,
                      "gpu_mb": gpu_mb, "main_cpu_seconds": cpu_seconds}))


def _cpu_seconds() -> float:
    """CPU time of this process alone (user and system, all its threads; not its workers')."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(args, mode, files, batch_size, max_downscale, tta, backend="torch", workers=2, whole=False) -> dict:
    """Runs one configuration in a fresh process, with the model, weights, threads and device of `args` (the null
    model for mode "null"); whole: JPEG photos decoded whole, as before they were decoded at a reduced size."""
    with tempfile.TemporaryDirectory() as out:
        model = "null" if mode == "null" else args.model
        command = [sys.executable, __file__, "--worker", "runner" if mode == "null" else mode,
                   "--files", json.dumps([str(f) for f in files]), "--model", model, "--batch-size", str(batch_size),
                   "--max-downscale", str(max_downscale), "--out", out, "--threads", str(args.threads),
                   "--device", args.device, "--workers", str(workers)]
        command += ["--weights", args.weights] if args.weights and mode != "null" else []
        command += ["--tta"] if tta else []
        command += ["--backend", backend] + (["--decode-whole"] if whole else [])
        # the runner's rows in the environment `retinaseg run` sets (the naive loop's as the seeds ran it)
        environment = os.environ if mode == "naive" else {**RUNNER_ENVIRONMENT, **os.environ}
        result = subprocess.run(command, capture_output=True, text=True, env=environment)
        if result.returncode:
            raise SystemExit(result.stderr)
        return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--model", default="vesselnet")
    parser.add_argument("--weights", default=None, help="default: the model's shipped weights")
    parser.add_argument("--images", type=int, default=10, help="photos per configuration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda[:N] on a GPU machine")
    parser.add_argument("--worker", choices=["naive", "runner"], help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--max-downscale", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--tta", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--decode-whole", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=None,
                        help="the runner rows' --workers; default `retinaseg run`'s auto for --device (2 on the CPU; "
                             "on a GPU one per core but one, up to 16); null rows use 1 and 2")
    parser.add_argument("--null-only", action="store_true", help="only the null model's rows (the pipeline's cost)")
    parser.add_argument("--sizes", default="drive,hrf",
                        help="which photos' rows: drive, hrf or both (a short second run on a lent GPU: drive)")
    args = parser.parse_args()
    if args.worker:
        args.mode = args.worker
        return _worker(args)

    cuda = args.device.startswith("cuda")
    if args.workers is None:
        args.workers = run_workers("cuda" if cuda else "cpu")
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"Error: --device {args.device}: CUDA is not available on this machine")
    print(f"model {args.model} ({args.weights or 'shipped weights'}), {args.device}, {args.threads} CPU threads, "
          f"{args.images} photos per row; each row is a fresh process (peak RSS includes torch itself)")
    print(f"{'photos':<32}{'method':<52}{'s/photo':>10}{'photos/s':>10}{'peak MB':>10}{'worker MB':>10}"
          f"{'main CPU ms':>12}" + (f"{'GPU MB':>10}" if cuda else ""))
    with tempfile.TemporaryDirectory() as scratch:
        sizes = {"drive": "DRIVE-size 565x584", "hrf": "HRF-size 3504x2336"}
        chosen = [kind.strip() for kind in args.sizes.split(",")]
        if not chosen or set(chosen) - set(sizes):
            raise SystemExit(f"Error: --sizes {args.sizes}: give drive, hrf or drive,hrf")
        for kind, label in ((kind, sizes[kind]) for kind in chosen):
            count = args.images if kind == "drive" else max(2, args.images // 2)
            files, source = _photos(args.data_root, kind, count, Path(scratch))
            batches = (1, 8) if cuda else (1, 4)
            rows = [("naive", 1, 0, False, "torch")] + [("runner", b, MAX_DOWNSCALE, False, "torch") for b in batches]
            if kind == "hrf":
                rows.insert(1, ("runner", 1, 0, False, "torch"))
            rows.append(("runner", 1, MAX_DOWNSCALE, True, "torch"))
            if not cuda and importlib.util.find_spec("onnxruntime"):  # the ONNX Runtime backend beside torch's
                rows += [("runner", 1, MAX_DOWNSCALE, False, "onnxruntime"),
                         ("runner", 1, MAX_DOWNSCALE, True, "onnxruntime")]
            rows = [row + (args.workers, False) for row in rows]
            jpeg = any(path.suffix.lower() in (".jpg", ".jpeg") for path in files)
            if jpeg:  # the default row again with the JPEGs decoded whole, as before
                rows.insert(3, ("runner", 1, MAX_DOWNSCALE, False, "torch", args.workers, True))
            null_rows = [("null", 1, MAX_DOWNSCALE, False, "torch", workers, whole) for workers in (1, 2)
                         for whole in ((True, False) if jpeg else (False,))]
            rows = null_rows if args.null_only else rows + null_rows
            for mode, batch, max_downscale, tta, backend, workers, whole in rows:
                r = _measure(args, mode, files, batch, max_downscale, tta, backend, workers, whole)
                name = ("naive 512x512 loop" if mode == "naive" else
                        f"null model, --workers {workers}" if mode == "null" else
                        f"runner, batch {batch}" + ("" if max_downscale else ", no downscale limit")
                        + ("" if workers == 2 else f", --workers {workers}")
                        + (", --tta" if tta else "") + (", onnxruntime" if backend == "onnxruntime" else ""))
                name += ", JPEG decoded whole" if whole else ""
                per = r["seconds"] / r["images"]
                gpu = f"{r['gpu_mb']:>10.0f}" if cuda else ""
                main_ms = 1000 * r["main_cpu_seconds"] / r["images"]
                print(f"{label + f' ({source})':<32}{name:<52}{per:>10.3f}{1 / per:>10.2f}{r['peak_mb']:>10.0f}"
                      f"{r['worker_mb']:>10.0f}{main_ms:>12.1f}{gpu}", flush=True)


if __name__ == "__main__":
    main()
