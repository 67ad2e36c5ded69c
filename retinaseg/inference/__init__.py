"""Inference: the sliding window (where tiles are planned and blended) and the batch runner."""

# Default cap on how much a photo is shrunk to the working scale, so high-resolution photos keep their finest
# vessels (chosen on the HRF-AV training split; see README); a model may declare its own. Here, not in
# runner.py, so the CLI can show it without importing torch.
MAX_DOWNSCALE = 3.5
