"""Stores that outlive a job: `snapshots` (durable learner and profile snapshots, SQLite by
default). Next: the model registry and the online store read by the serving plane.

Imports neither Beam nor a web framework.
"""
