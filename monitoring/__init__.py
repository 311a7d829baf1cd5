"""Monitoring and model lifecycle, Beam-free: drift detection on a model's live stream."""
