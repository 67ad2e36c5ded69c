"""Inference: the sliding window (where tiles are planned and blended) and the batch runner."""
