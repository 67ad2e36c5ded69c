"""How many processes `--workers auto` (the default) means: the cores this process may run on, and what the
network and the measuring need of them. Torch-free, so `--help` stays instant.
"""
from __future__ import annotations

import os

# Where the network runs on the CPU it needs the cores itself, and two workers keep it fed: on 2 cores with the
# default model it waited for them 0.026 s of a 5.8-s run (docs/benchmarks.md).
CPU_NETWORK_WORKERS = 2
# On a GPU the CPU work around the network sets the pace (issue 33's H200: 29 photos/s with two threads' worth of
# it, 104 with six processes), so each core but the network's gets a worker, up to this many (a worker's peak on
# HRF-size photos is 0.5-0.7 GB, pages shared with the main process included: docs/benchmarks.md).
MAX_GPU_WORKERS = 16
# Measuring is one core per photo; a process measuring HRF-size A/V maps peaks at about 1.3 GB (`measure --workers 0`
# on three HRF-AV test photos), so the default stays at this many processes however many cores a server has.
MAX_MEASURE_WORKERS = 8


def available_cores() -> int:
    """The cores this process may run on (its affinity, where the system says; else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def run_workers(device_type: str) -> int:
    """`retinaseg run --workers auto` for a network on this device type ("cpu", "cuda", "mps")."""
    if device_type == "cpu":
        return CPU_NETWORK_WORKERS
    return max(CPU_NETWORK_WORKERS, min(available_cores() - 1, MAX_GPU_WORKERS))


def measure_workers() -> int:
    """`retinaseg measure --workers auto`: a process per core, up to MAX_MEASURE_WORKERS."""
    return max(1, min(available_cores(), MAX_MEASURE_WORKERS))
