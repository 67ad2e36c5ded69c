"""The training engine: data preparation, augmentation, sampling, the loop, checkpoints."""
