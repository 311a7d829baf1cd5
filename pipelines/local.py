"""Pipeline options that run offline on this machine by default.

Beam's DirectRunner first tries Prism, a binary it downloads at run time; offline that fails
after a delay. Unless a runner is named:

- batch runs on the FnApiRunner (in-process, nothing to download);
- streaming runs on Prism built by `scripts/prism.sh install` (`.cache/prism/bin/prism`, or
  `$STREAMML_PRISM`), with its dynamic bundle splitting off (`prism_disable_sdf_split`). Not on Beam's Python streaming runner (BundleBasedDirectRunner): its
  timers do not hold the output watermark, so records that a timer emits at their own event
  time reach later windows and file sinks late, and are dropped there.
"""
from __future__ import annotations

import os
import pathlib

from apache_beam.options.pipeline_options import (DebugOptions, PipelineOptions, PrismRunnerOptions,
                                                  StandardOptions)

BATCH_RUNNER = "FnApiRunner"
STREAMING_RUNNER = "PrismRunner"
PRISM_BINARY = pathlib.Path(__file__).resolve().parent.parent / ".cache" / "prism" / "bin" / "prism"


def prism_binary() -> str:
    path = pathlib.Path(os.environ.get("STREAMML_PRISM", PRISM_BINARY))
    if not path.is_file():
        raise FileNotFoundError(f"no Prism binary at {path}: run `bash scripts/prism.sh install` "
                                "(or name another runner with --runner)")
    return str(path)


def pipeline_options(beam_args: list[str], **overrides) -> PipelineOptions:
    """PipelineOptions from Beam's own flags, with an offline local runner by default.

    >>> pipeline_options([]).view_as(StandardOptions).runner
    'FnApiRunner'
    >>> pipeline_options(["--streaming"]).view_as(StandardOptions).runner
    'PrismRunner'
    """
    options = PipelineOptions(beam_args, **overrides)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = STREAMING_RUNNER if standard.streaming else BATCH_RUNNER
    prism = options.view_as(PrismRunnerOptions)
    if standard.runner == STREAMING_RUNNER:
        if not prism.prism_location:
            prism.prism_location = prism_binary()
        # Prism splits a bundle that seems slow and re-schedules the rest of its input; on a
        # loaded machine this delivered some elements twice to stateful stages (seen in CI:
        # 9 duplicate impressions and 27 duplicate learner events in a 600-impression run).
        experiments = options.view_as(DebugOptions)
        if "prism_disable_sdf_split" not in (experiments.experiments or []):
            experiments.add_experiment("prism_disable_sdf_split")
    return options
