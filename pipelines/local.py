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
# Beam's Java expansion service with KafkaIO, from the job server's jars (same script).
KAFKA_EXPANSION_JAR = ROOT / ".cache" / "flink-jobserver" / "beam-kafka-expansion-service-2.62.0.jar"


def _known_runner(short: str, qualified: str) -> str:
    """The short runner name where this Beam knows it, else its full path (Beam 2.62 has no
    short name for the FnApiRunner; 2.77 does)."""
    return short if short.lower() in getattr(_runner, "_RUNNER_MAP", {}) else qualified


BATCH_RUNNER = _known_runner("FnApiRunner", "apache_beam.runners.portability.fn_api_runner.FnApiRunner")


def prism_binary() -> str:
    return _installed("STREAMML_PRISM", PRISM_BINARY, "Prism binary", "prism.sh install",
                      "name another runner with --runner")


def flink_job_server_jar() -> str:
    return _installed("STREAMML_FLINK_JOB_SERVER_JAR", FLINK_JOB_SERVER_JAR, "Flink job server jar",
                      "flink.sh install", "give --flink_job_server_jar")


def kafka_expansion_jar() -> str:
    return _installed("STREAMML_KAFKA_EXPANSION_JAR", KAFKA_EXPANSION_JAR, "Kafka expansion service jar",
                      "flink.sh install", "set $STREAMML_KAFKA_EXPANSION_JAR")


def is_flink(options: PipelineOptions | None) -> bool:
    """Whether `options` name Beam's FlinkRunner (short name or full path, any case).

    >>> is_flink(PipelineOptions(["--runner=flinkrunner"])), is_flink(PipelineOptions([])), is_flink(None)
    (True, False, False)
    """
    if options is None:
        return False
    return (options.view_as(StandardOptions).runner or "").split(".")[-1].lower() == FLINK_RUNNER.lower()


def has_flag(beam_args: list[str], name: str) -> bool:
    return any(a.split("=")[0] == name for a in beam_args)


def _installed(variable: str, default: pathlib.Path, what: str, script: str, other: str) -> str:
    """The file at $variable, else `default`; a clear error naming the script that installs it."""
    path = pathlib.Path(os.environ.get(variable, default))
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}: run `bash scripts/{script}` (or {other})")
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
    if is_flink(options) and has_flag(beam_args, "--checkpointing_interval") \
            and not has_flag(beam_args, "--finish_bundle_before_checkpointing"):
        # Else Beam 2.62's Flink runner snapshots a stage's state while a bundle of the SDK
        # harness still runs: after a restore, a model held events that the source replayed
        # (measured: 488 of 1,500 impressions per model came back as `late`; tests/test_flink.py).
        return pipeline_options([*beam_args, "--finish_bundle_before_checkpointing"], **overrides)
    if is_flink(options):
        flink = options.view_as(FlinkRunnerOptions)
        if not flink.flink_job_server_jar:
            flink.flink_job_server_jar = flink_job_server_jar()
        portable = options.view_as(PortableOptions)
        if not portable.environment_type:
            # The SDK harness in this process: no Docker, and the workers see this machine's files.
            portable.environment_type = "LOOPBACK"
    return options
