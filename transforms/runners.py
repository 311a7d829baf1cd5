"""What a transform needs to know of the runner: is the input streaming, is it Flink, and where
the runner files installed by the project's scripts live (`scripts/prism.sh`,
`scripts/flink.sh`)."""
from __future__ import annotations

import os
import pathlib

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

ROOT = pathlib.Path(__file__).resolve().parent.parent
FLINK_RUNNER = "FlinkRunner"
PRISM_BINARY = ROOT / ".cache" / "prism" / "bin" / "prism"
# scripts/flink.sh install: FlinkJobServerDriver with its jars (Beam 2.62.0, Flink 1.19).
FLINK_JOB_SERVER_JAR = ROOT / ".cache" / "flink-jobserver" / "beam-flink-1.19-job-server-2.62.0.jar"
# Beam's Java expansion service with KafkaIO, from the job server's jars (same script).
KAFKA_EXPANSION_JAR = ROOT / ".cache" / "flink-jobserver" / "beam-kafka-expansion-service-2.62.0.jar"


def is_streaming(pcoll) -> bool:
    """Whether `pcoll` is processed as a stream: unbounded, or the pipeline runs `--streaming`."""
    options = pcoll.pipeline.options
    return bool(options and options.view_as(StandardOptions).streaming) or not pcoll.is_bounded


def is_fn_api_runner(options: PipelineOptions | None) -> bool:
    """Whether `options` name the FnApiRunner (Beam's in-process batch runner, the default for
    a bounded job here), which gives each fused stage its whole input in one bundle.

    >>> is_fn_api_runner(PipelineOptions(["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"]))
    True
    """
    return options is not None and \
        (options.view_as(StandardOptions).runner or "").split(".")[-1].lower() == "fnapirunner"


def is_flink(options: PipelineOptions | None) -> bool:
    """Whether `options` name Beam's FlinkRunner (short name or full path, any case).

    >>> is_flink(PipelineOptions(["--runner=flinkrunner"])), is_flink(PipelineOptions([])), is_flink(None)
    (True, False, False)
    """
    if options is None:
        return False
    return (options.view_as(StandardOptions).runner or "").split(".")[-1].lower() == FLINK_RUNNER.lower()


def prism_binary() -> str:
    return _installed("STREAMML_PRISM", PRISM_BINARY, "Prism binary", "prism.sh install",
                      "name another runner with --runner")


def flink_job_server_jar() -> str:
    return _installed("STREAMML_FLINK_JOB_SERVER_JAR", FLINK_JOB_SERVER_JAR, "Flink job server jar",
                      "flink.sh install", "give --flink_job_server_jar")


def kafka_expansion_jar() -> str:
    return _installed("STREAMML_KAFKA_EXPANSION_JAR", KAFKA_EXPANSION_JAR, "Kafka expansion service jar",
                      "flink.sh install", "set $STREAMML_KAFKA_EXPANSION_JAR")


def _installed(variable: str, default: pathlib.Path, what: str, script: str, other: str) -> str:
    """The file at $variable, else `default`; a clear error naming the script that installs it."""
    path = pathlib.Path(os.environ.get(variable, default))
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}: run `bash scripts/{script}` (or {other})")
    return str(path)
