"""A Beam SDK worker pool on loopback that outlives the jobs it serves.

A job submitted with the LOOPBACK environment runs its Python workers inside the submitting
process: on Flink, once that client exits, the job loses its workers and restarts forever,
orphaned. An endless Flink job therefore runs its workers in this pool instead (the EXTERNAL
environment), which `scripts/flink.sh start` starts beside the cluster:

    python -m pipelines.workers --port 18099

and `bash scripts/flink.sh runner-args` names. The submitting client may then exit, and the job
runs on until it is cancelled (`bash scripts/flink.sh cancel`).

Beam's own `worker_pool_main` listens on `[::]` (every interface) with no option for the
address; this pool listens on 127.0.0.1 only.

Each worker is a process of its own (`--threads` runs them as threads of this process, Beam's
default): Python runs one thread at a time, so workers as threads share one core however many
the runner asks for (`--sdk_worker_parallelism`). The workers share one state-signing key
(`models.serde.KeySource`): $STREAMML_STATE_KEY if set, else a random key this pool makes at
start and hands to its workers through their environment (never written to disk).
"""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker import worker_pool_main
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.utils import thread_pool_executor

from models.serde import KEY_ENV

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 18099


class ProcessWorkerPool(worker_pool_main.BeamFnExternalWorkerPoolServicer):
    """Beam's pool with `use_process`, as it should run: each worker in this interpreter
    (Beam's runs whatever `python` is first on PATH), its output not piped to a reader that
    never comes (a full pipe would block the worker), and the pool's state-signing key."""

    def __init__(self, state_cache_size: int, data_buffer_time_limit_ms: int):
        super().__init__(use_process=True, state_cache_size=state_cache_size,
                         data_buffer_time_limit_ms=data_buffer_time_limit_ms)
        self._env = {**os.environ, KEY_ENV: os.environ.get(KEY_ENV) or secrets.token_hex(32)}

    def StartWorker(self, request, unused_context):  # noqa: N802 (the gRPC method's name)
        harness = (f"from apache_beam.runners.worker.sdk_worker import SdkHarness; "
                   f"SdkHarness({request.control_endpoint.url!r}, worker_id={request.worker_id!r}, "
                   f"state_cache_size={self._state_cache_size}, "
                   f"data_buffer_time_limit_ms={self._data_buffer_time_limit_ms}).run()")
        try:
            self._worker_processes[request.worker_id] = subprocess.Popen(
                [sys.executable, "-c", harness], env=self._env, stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as e:
            return beam_fn_api_pb2.StartWorkerResponse(error=f"cannot start a worker: {e}")
        logging.info("worker %s started (pid %d)", request.worker_id, self._worker_processes[request.worker_id].pid)
        return beam_fn_api_pb2.StartWorkerResponse()


def start_worker_pool(port: int = 0, use_process: bool = True, state_cache_size: int = 0,
                      data_buffer_time_limit_ms: int = -1) -> tuple[str, grpc.Server]:
    """(address, server) of an SDK worker pool on 127.0.0.1:`port` (0: any free port): Beam's
    `BeamFnExternalWorkerPoolServicer.start` with the same settings, which binds `[::]`; its
    workers are processes (`ProcessWorkerPool`), or threads of this one."""
    server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                         options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)])
    bound = server.add_insecure_port(f"{LOOPBACK}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {LOOPBACK}:{port} (in use?)")
    if use_process:
        pool = ProcessWorkerPool(state_cache_size, data_buffer_time_limit_ms)
    else:
        pool = worker_pool_main.BeamFnExternalWorkerPoolServicer(
            use_process=False, state_cache_size=state_cache_size,
            data_buffer_time_limit_ms=data_buffer_time_limit_ms)
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()
    atexit.register(lambda: [worker_pool_main.kill_process_gracefully(p)
                             for p in pool._worker_processes.values()])
    return f"{LOOPBACK}:{bound}", server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.workers",
        description="Serve Beam SDK workers on 127.0.0.1 for jobs submitted with "
                    "--environment_type=EXTERNAL --environment_config=127.0.0.1:PORT, until SIGTERM or Ctrl-C.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    parser.add_argument("--threads", action="store_true",
                        help="run the workers as threads of this process (one core between them), not as processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        address, server = start_worker_pool(args.port, use_process=not args.threads)
    except (OSError, RuntimeError) as e:
        parser.exit(1, f"workers: {e}\n")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.info("worker pool listening on %s", address)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop(grace=5).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
