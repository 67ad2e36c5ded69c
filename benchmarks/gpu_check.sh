#!/usr/bin/env bash
# Issue 33's GPU check (docs/benchmarks.md, "The next GPU check"), in two halves:
#   bash benchmarks/gpu_check.sh prepare [DATA_ROOT]   here: the test photos into .gpu/data (ignored by git)
#   bash benchmarks/gpu_check.sh device                on the lent machine, the device tool told to carry .gpu
# That machine has torch but no imagecodecs, so DRIVE's LZW TIFFs go as PNG; HRF's JPEGs go as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  prepare)
    data_root="${2:-../shared/data}"
    python=".venv/bin/python"
    mkdir -p .gpu/data/DRIVE/test/images .gpu/data/HRF-AV/test/images
    for photo in "$data_root"/DRIVE/test/images/*.tif; do
      "$python" -c "import sys, imageio.v3 as iio; iio.imwrite(sys.argv[2], iio.imread(sys.argv[1]))" \
        "$photo" ".gpu/data/DRIVE/test/images/$(basename "$photo" .tif).png"
    done
    cp "$data_root"/HRF-AV/test/images/* .gpu/data/HRF-AV/test/images/
    du -sh .gpu  # the device tool carries at most 64 MB
    ;;
  device)
    test -d .gpu/data || { echo "gpu_check.sh: no .gpu/data: run 'prepare' here and carry .gpu" >&2; exit 2; }
    pip install -q --no-deps --no-build-isolation -e .
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    # every row of one size in one run: the naive loop beside the runner, with --workers auto (a worker per core)
    python benchmarks/runner_speed.py --device cuda --images 200 --threads 4 --data-root .gpu/data
    python benchmarks/runner_speed.py --device cuda --images 200 --threads 1 --sizes drive --data-root .gpu/data
    ;;
  *)
    echo "usage: bash benchmarks/gpu_check.sh prepare [DATA_ROOT] | device" >&2
    exit 2
    ;;
esac
