"""Pipeline options that run offline on this machine by default.

Beam's DirectRunner first tries Prism, a binary it downloads at run time; offline that fails
after a delay. Unless a runner is named:

- batch runs on the FnApiRunner (in-process, nothing to download);
- streaming runs on Prism built by `scripts/prism.sh install` (`.cache/prism/bin/prism`, or
  `$STREAMML_PRISM`), with its dynamic bundle splitting off (`prism_disable_sdf_split`).
  Not on Beam's Python streaming runner (BundleBasedDirectRunner): its
  timers do not hold the output watermark, so records that a timer emits at their own event
  time reach later windows and file sinks late, and are dropped there.
"""
from __future__ import annotations

import uuid

from apache_beam.options.pipeline_options import (DebugOptions, FlinkRunnerOptions, GoogleCloudOptions, PipelineOptions,
                                                  PortableOptions, PrismRunnerOptions, StandardOptions)
from apache_beam.runners import runner as _runner

from transforms.runners import flink_job_server_jar, is_flink, prism_binary

STREAMING_RUNNER = "PrismRunner"


def _known_runner(short: str, qualified: str) -> str:
    """The short runner name where this Beam knows it, else its full path (Beam 2.62 has no
    short name for the FnApiRunner; 2.77 does)."""
    return short if short.lower() in getattr(_runner, "_RUNNER_MAP", {}) else qualified


BATCH_RUNNER = _known_runner("FnApiRunner", "apache_beam.runners.portability.fn_api_runner.FnApiRunner")


def has_flag(beam_args: list[str], name: str) -> bool:
    return any(a.split("=")[0] == name for a in beam_args)


def pipeline_options(beam_args: list[str], **overrides) -> PipelineOptions:
    """PipelineOptions from Beam's own flags, with an offline local runner by default.

    >>> pipeline_options([]).view_as(StandardOptions).runner in ("FnApiRunner", BATCH_RUNNER)
    True
    >>> pipeline_options(["--streaming"]).view_as(StandardOptions).runner
    'pipelines.prism.PrismRunner'
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
    if standard.runner.split(".")[-1].lower() in ("prism", "prismrunner"):
        from pipelines import prism as endless_prism

        # Beam's, but an endless job outlives --job_server_timeout (see pipelines.prism).
        standard.runner = endless_prism.NAME
        if not prism.prism_location:
            prism.prism_location = prism_binary()
        # Prism splits a bundle that seems slow and re-schedules the rest of its input; on a
        # loaded machine this delivered some elements twice to stateful stages (seen in CI:
        # 9 duplicate impressions and 27 duplicate learner events in a 600-impression run).
        experiments = options.view_as(DebugOptions)
        if "prism_disable_sdf_split" not in (experiments.experiments or []):
            experiments.add_experiment("prism_disable_sdf_split")
    if is_flink(options):
        extra = _flink_defaults(beam_args, options)
        if extra:
            return pipeline_options([*beam_args, *extra], **overrides)
        flink = options.view_as(FlinkRunnerOptions)
        if not flink.flink_job_server_jar:
            flink.flink_job_server_jar = flink_job_server_jar()
        portable = options.view_as(PortableOptions)
        if not portable.environment_type:
            # The SDK harness in this process: no Docker, and the workers see this machine's files.
            portable.environment_type = "LOOPBACK"
    return options


def _flink_defaults(beam_args: list[str], options: PipelineOptions) -> list[str]:
    """Flags the Flink runner needs here and was not given (Beam's Python options do not know
    some of them: they are passed on to the job server as flags).

    >>> args = ["--runner=FlinkRunner", "--streaming", "--environment_type=EXTERNAL", "--parallelism=2"]
    >>> _flink_defaults(args, PipelineOptions(args))
    ['--max_bundle_time_millis=100', '--sdk_worker_parallelism=2']
    >>> _flink_defaults(args + ["--sdk_worker_parallelism=1"], PipelineOptions(args))
    ['--max_bundle_time_millis=100']
    """
    extra = []
    if has_flag(beam_args, "--checkpointing_interval") and not has_flag(beam_args, "--finish_bundle_before_checkpointing"):
        # Else Beam 2.62's Flink runner snapshots a stage's state while a bundle of the SDK
        # harness still runs: after a restore, a model held events that the source replayed
        # (measured: 488 of 1,500 impressions per model came back as `late`; tests/test_flink.py).
        extra.append("--finish_bundle_before_checkpointing")
    if options.view_as(StandardOptions).streaming and not has_flag(beam_args, "--max_bundle_time_millis"):
        # A stage passes its watermark on when its bundle ends: Flink's default of 1 s per
        # bundle is paid at every stateful stage (full job at 300/s: freshness p50 40 -> 26 s).
        extra.append("--max_bundle_time_millis=100")
    parallelism = options.view_as(FlinkRunnerOptions).parallelism or 1
    if options.view_as(PortableOptions).environment_type == "EXTERNAL" and parallelism > 1 \
            and not has_flag(beam_args, "--sdk_worker_parallelism"):
        # One Python worker per parallel task, each a process of the worker pool
        # (pipelines.workers), not one interpreter for all of them.
        extra.append(f"--sdk_worker_parallelism={parallelism}")
    return extra


def runner_name(options: PipelineOptions) -> str:
    """The runner a job runs on, as a person reads it.

    >>> runner_name(PipelineOptions(["--runner=FlinkRunner", "--flink_master=127.0.0.1:18081"]))
    'FlinkRunner at 127.0.0.1:18081'
    """
    runner = (options.view_as(StandardOptions).runner or "").split(".")[-1]
    if is_flink(options):
        return f"{runner} at {options.view_as(FlinkRunnerOptions).flink_master}"
    return runner


LOCAL_RUNNERS = ("", "fnapirunner", "prismrunner", "prism", "directrunner", "direct", "bundlebaseddirectrunner")


def unknown_flags(beam_args: list[str]) -> list[str]:
    """The flags among a job's leftover arguments that no PipelineOptions knows, for the local
    runners: Beam would only log that it discards them, so a mistyped flag would silently change
    nothing. A portable runner such as Flink's forwards them to its job server, whose Java
    options Python does not know (`--checkpointing_interval`): none are refused there.

    >>> unknown_flags(["--streaming", "--parallelism", "2", "--paralellism=2"])
    ['--paralellism=2']
    >>> unknown_flags(["--runner=FlinkRunner", "--checkpointing_interval=2000"])
    []
    """
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    runner = (PipelineOptions(beam_args).view_as(StandardOptions).runner or "").split(".")[-1].lower()
    if runner not in LOCAL_RUNNERS:
        return []
    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # as Beam's own get_all_options() does
    _, unknown = parser.parse_known_args(beam_args)
    return [a for a in unknown if a.startswith("-")]


def name_endless_flink_job(options: PipelineOptions, prefix: str) -> str | None:
    """For an endless job on Flink, its Flink job name (`--job_name`, else `prefix-<random>`),
    which `scripts/flink.sh cancel NAME` takes; None on other runners.

    The job must outlive the process that submits it, so its Python code must not run there:
    LOOPBACK workers die with this process and leave the job restarting forever, orphaned.

    >>> name_endless_flink_job(pipeline_options([]), "recommend") is None
    True
    >>> name_endless_flink_job(pipeline_options(["--runner=FlinkRunner", "--flink_job_server_jar=/x.jar",
    ...     "--environment_type=EXTERNAL", "--environment_config=127.0.0.1:18099", "--job_name=recs"]), "r")
    'recs'
    >>> name_endless_flink_job(pipeline_options(["--runner=FlinkRunner", "--flink_job_server_jar=/x.jar"]), "r")
    Traceback (most recent call last):
    ...
    ValueError: an endless job on Flink must not run its Python workers in this process (LOOPBACK): they would die with it and leave the job orphaned; run them in the worker pool that `bash scripts/flink.sh start` starts (the flags: bash scripts/flink.sh runner-args)
    """
    if not is_flink(options):
        return None
    if options.view_as(PortableOptions).environment_type.upper() == "LOOPBACK":
        raise ValueError("an endless job on Flink must not run its Python workers in this process (LOOPBACK): "
                         "they would die with it and leave the job orphaned; run them in the worker pool that "
                         "`bash scripts/flink.sh start` starts (the flags: bash scripts/flink.sh runner-args)")
    cloud = options.view_as(GoogleCloudOptions)
    if not cloud.job_name:
        cloud.job_name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return cloud.job_name
