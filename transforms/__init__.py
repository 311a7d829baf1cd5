"""Beam transforms shared by the batch and the streaming pipelines."""
