"""Inference: the sliding window (where tiles are planned and blended) and the batch runner."""

# Default (models may declare their own) cap on how much a photo is shrunk to the working scale, so high-resolution photos keep their finest
# vessels (chosen on the HRF-AV training split; see README). Here, not in runner.py, so the CLI can show it
# without importing torch.
MAX_DOWNSCALE = 3.5
