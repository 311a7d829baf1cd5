"""Benchmarks: `python -m benchmarks.<name> --help`. Not tests: they report, they do not assert."""
