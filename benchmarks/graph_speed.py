"""Time of the vessel graph step (building the graph and one A/V type per vessel) beside the network's, in one run.

    python benchmarks/graph_speed.py [--data-root ../shared/data] [--images 5] [--threads 2]

On the first --images DRIVE-AV and HRF-AV test photos (synthetic photos of those sizes when the data are absent):
av-fusion's prediction at raw size (`Segmenter.predict`, default options), then `vessel_graph.consistent_av` on
it, each timed per photo after one untimed warm-up photo (numba compiles skan's functions on first use). Prints
median seconds per photo for each, and the graph's node and segment counts.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.models import load_model
from retinaseg.synthetic import synthetic_fundus
from retinaseg.vessel_graph import consistent_av

SETS = {"DRIVE-size 565x584": ("DRIVE_AV/test/images", (584, 565)),
        "HRF-size 3504x2336": ("HRF-AV/test/images", (2336, 3504))}


def photos(data_root: Path, folder: str, size: tuple, count: int) -> tuple[str, list]:
    found = sorted((data_root / folder).glob("*"))[:count] if (data_root / folder).is_dir() else []
    if found:
        return "real", [read_photo(path) for path in found]
    return "synthetic", [synthetic_fundus(size, seed=i).image for i in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    segmenter = Segmenter(load_model("av-fusion"), SegmentConfig(device="cpu", av_graph=False), notify=lambda m: None)
    print(f"av-fusion, {args.threads} threads; median s/photo over {args.images} photos after one warm-up")
    print(f"{'photos':<34}{'network':>10}{'graph step':>12}{'nodes':>8}{'segments':>10}")
    for label, (folder, size) in SETS.items():
        kind, images = photos(Path(args.data_root), folder, size, args.images + 1)
        network, graph_step, counts = [], [], []
        for index, photo in enumerate(images):
            started = time.perf_counter()
            prob = segmenter.predict(photo)
            predicted = time.perf_counter()
            _, graph = consistent_av(prob)
            done = time.perf_counter()
            if index:  # the first is the warm-up
                network.append(predicted - started)
                graph_step.append(done - predicted)
                counts.append((len(graph.nodes), len(graph.segments)))
        nodes, segments = (statistics.median(c[i] for c in counts) for i in (0, 1))
        print(f"{label + ' (' + kind + ')':<34}{statistics.median(network):>10.3f}{statistics.median(graph_step):>12.3f}"
              f"{nodes:>8.0f}{segments:>10.0f}")


if __name__ == "__main__":
    main()
