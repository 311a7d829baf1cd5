"""Beam's Prism runner, fit for endless jobs.

Beam 2.77's portable runner opens the job's state and message streams with
`--job_server_timeout` (default 60 s... 300 s in practice) as their gRPC *deadline*: when it
passes, the stream ends with DEADLINE_EXCEEDED, `wait_until_finish` raises, and since Prism
runs its job inside the submitting process, an endless job dies with it (measured: 305 s after
its start, every time; 51 s with `--job_server_timeout=45`). The timeout is meant for the
job service's short calls (prepare, run), which keep it; the two streams last as long as the
job and get no deadline here.
"""
from __future__ import annotations

from apache_beam.runners.portability import prism_runner

NAME = f"{__name__}.PrismRunner"  # for --runner


class PrismRunner(prism_runner.PrismRunner):
    """Beam's PrismRunner, whose job streams have no deadline."""

    def create_job_service_handle(self, job_service, options):
        handle = super().create_job_service_handle(job_service, options)
        handle.job_service = _StreamsWithoutDeadline(handle.job_service)
        return handle


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
