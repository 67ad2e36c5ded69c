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
