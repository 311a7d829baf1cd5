"""Beam's Prism runner, fit for endless jobs, listening on loopback only.

Beam 2.77's portable runner opens the job's state and message streams with
`--job_server_timeout` (default 60 s... 300 s in practice) as their gRPC *deadline*: when it
passes, the stream ends with DEADLINE_EXCEEDED, `wait_until_finish` raises, and since Prism
runs its job inside the submitting process, an endless job dies with it (measured: 305 s after
its start, every time; 51 s with `--job_server_timeout=45`). The timeout is meant for the
job service's short calls (prepare, run), which keep it; the two streams last as long as the
job and get no deadline here.

Nothing a local run opens listens beyond this machine (`tests/test_listeners.py`): Prism's job
service (which also serves artifact staging and the workers' Fn API) is built to listen on
127.0.0.1 (`scripts/prism.sh`), and the LOOPBACK worker pool, which Beam 2.77 starts on
`[::]:0` (every interface) with no option for the address, is started here on 127.0.0.1.
"""
from __future__ import annotations

import copy
import functools

import grpc
from apache_beam.options.pipeline_options import DebugOptions, PortableOptions
from apache_beam.portability import python_urns
from apache_beam.runners.portability import job_server, prism_runner
from apache_beam.runners.worker import sdk_worker_main
from apache_beam.transforms import environments
from apache_beam.utils import shared

from pipelines import workers

NAME = f"{__name__}.PrismRunner"  # for --runner


class PrismRunner(prism_runner.PrismRunner):
    """Beam's PrismRunner, whose job streams have no deadline and whose LOOPBACK worker pool
    listens on 127.0.0.1."""

    # Our own Prism per process, not Beam's shared one: a plain `beam.Pipeline()` (the
    # DirectRunner tries Prism first) leaves Beam's holding a Prism without a location, which
    # then tries to download one for every later job of the process (seen in the test suite).
    shared_handle = shared.Shared()

    def default_job_server(self, options):
        def start():
            return job_server.StopOnExitJobServer(prism_runner.PrismJobServer(options))
        if options.view_as(DebugOptions).lookup_experiment("disable_prism_server_singleton"):
            return start()
        return PrismRunner.shared_handle.acquire(start)

    def create_job_service_handle(self, job_service, options):
        handle = super().create_job_service_handle(job_service, options)
        handle.job_service = _StreamsWithoutDeadline(handle.job_service)
        return handle

    @staticmethod
    def start_and_replace_loopback_environments(pipeline, options):
        """Beam's `PortableRunner.start_and_replace_loopback_environments`, but the worker pool
        it starts for a LOOPBACK environment listens on 127.0.0.1 (`start_loopback_worker_pool`)."""
        cleanup_callbacks = []
        for env in pipeline.components.environments.values():
            if env.urn == python_urns.EMBEDDED_PYTHON_LOOPBACK:
                portable = copy.deepcopy(options.view_as(PortableOptions))
                portable.environment_type = "EXTERNAL"
                portable.environment_config, server = start_loopback_worker_pool(options)
                external = environments.ExternalEnvironment.from_options(portable).to_runner_api(None)
                env.urn, env.payload = external.urn, external.payload
                cleanup_callbacks.append(functools.partial(server.stop, 1))
        return cleanup_callbacks


def start_loopback_worker_pool(options) -> tuple[str, grpc.Server]:
    """(address, server) of an SDK worker pool in this process on 127.0.0.1, with the settings
    Beam's LOOPBACK environment gives it."""
    debug = options.view_as(DebugOptions)
    return workers.start_worker_pool(
        use_process=debug.lookup_experiment("use_loopback_process_worker", False),
        state_cache_size=sdk_worker_main._get_state_cache_size_bytes(options=options),
        data_buffer_time_limit_ms=sdk_worker_main._get_data_buffer_time_limit_ms(debug.experiments or []))


class _StreamsWithoutDeadline:
    """A job service stub whose two job-long streams are opened without a deadline."""

    def __init__(self, stub):
        self._stub = stub

    def __getattr__(self, name):
        return getattr(self._stub, name)

    def GetStateStream(self, request, timeout=None, **kwargs):  # noqa: N802  (the gRPC method's name)
        return self._stub.GetStateStream(request, **kwargs)

    def GetMessageStream(self, request, timeout=None, **kwargs):  # noqa: N802
        return self._stub.GetMessageStream(request, **kwargs)
