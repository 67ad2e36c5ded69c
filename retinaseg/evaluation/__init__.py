"""Scoring predictions against manual labels by the literature's protocol."""
