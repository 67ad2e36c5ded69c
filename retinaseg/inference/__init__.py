"""Inference: the sliding window (where tiles are planned and blended) and the batch runner."""

# Default cap on how much a photo is shrunk to the working scale, so high-resolution photos keep their finest
# vessels (chosen on the HRF-AV training split; docs/experiments.md); a model may declare its own. Here, not in
# runner.py, so the CLI can show it without importing torch.
MAX_DOWNSCALE = 3.5

# A vessel probability at or above this is vessel: the literature's protocol, used by run, eval and validation
VESSEL_THRESHOLD = 0.5

# Below this share of the FOV labelled vessel a photo is flagged "check the photo". The default model marks
# 5.8-15.9% on every DRIVE, LES-AV and HRF-AV test photo; noise and blank discs get under 1.1%, most heavily
# blurred copies under 3% (benchmarks/degraded_photos.py).
FEW_VESSELS = 0.03

# OpenMP threads waiting for work sleep instead of spinning: spinning, the runner's main process keeps the cores busy
# between forward passes that its worker processes need (the null model's pipeline 16% faster on 2 cores, the
# network no slower; docs/benchmarks.md). Set by `retinaseg run` and `serve` before torch is imported; a user's own
# value stays.
RUNNER_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}
