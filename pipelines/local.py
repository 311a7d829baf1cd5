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

from apache_beam.options.pipeline_options import (DebugOptions, FlinkRunnerOptions, PipelineOptions,
                                                  PortableOptions, PrismRunnerOptions, StandardOptions)
from apache_beam.runners import runner as _runner

ROOT = pathlib.Path(__file__).resolve().parent.parent
STREAMING_RUNNER = "PrismRunner"
FLINK_RUNNER = "FlinkRunner"
PRISM_BINARY = ROOT / ".cache" / "prism" / "bin" / "prism"
# scripts/flink.sh install: FlinkJobServerDriver with its jars (Beam 2.62.0, Flink 1.19).
FLINK_JOB_SERVER_JAR = ROOT / ".cache" / "flink-jobserver" / "beam-flink-1.19-job-server-2.62.0.jar"


def _known_runner(short: str, qualified: str) -> str:
    """The short runner name where this Beam knows it, else its full path (Beam 2.62 has no
    short name for the FnApiRunner; 2.77 does)."""
    return short if short.lower() in getattr(_runner, "_RUNNER_MAP", {}) else qualified


BATCH_RUNNER = _known_runner("FnApiRunner", "apache_beam.runners.portability.fn_api_runner.FnApiRunner")


def prism_binary() -> str:
    path = pathlib.Path(os.environ.get("STREAMML_PRISM", PRISM_BINARY))
    if not path.is_file():
        raise FileNotFoundError(f"no Prism binary at {path}: run `bash scripts/prism.sh install` "
                                "(or name another runner with --runner)")
    return str(path)


def flink_job_server_jar() -> str:
    path = pathlib.Path(os.environ.get("STREAMML_FLINK_JOB_SERVER_JAR", FLINK_JOB_SERVER_JAR))
    if not path.is_file():
        raise FileNotFoundError(f"no Flink job server jar at {path}: run `bash scripts/flink.sh install` "
                                "(or give --flink_job_server_jar)")
    return str(path)


def pipeline_options(beam_args: list[str], **overrides) -> PipelineOptions:
    """PipelineOptions from Beam's own flags, with an offline local runner by default.

    >>> pipeline_options([]).view_as(StandardOptions).runner in ("FnApiRunner", BATCH_RUNNER)
    True
    >>> pipeline_options(["--streaming"]).view_as(StandardOptions).runner
    'PrismRunner'
    >>> flink = pipeline_options(["--runner=FlinkRunner", "--flink_master=127.0.0.1:18081",
    ...                           "--flink_job_server_jar=/x.jar"])
    >>> flink.view_as(PortableOptions).environment_type
    'LOOPBACK'
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
    if standard.runner == FLINK_RUNNER:
        flink = options.view_as(FlinkRunnerOptions)
        if not flink.flink_job_server_jar:
            flink.flink_job_server_jar = flink_job_server_jar()
        portable = options.view_as(PortableOptions)
        if not portable.environment_type:
            # The SDK harness in this process: no Docker, and the workers see this machine's files.
            portable.environment_type = "LOOPBACK"
    return options
