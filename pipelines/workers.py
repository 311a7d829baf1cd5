"""A Beam SDK worker pool on loopback that outlives the jobs it serves.

A job submitted with the LOOPBACK environment runs its Python workers inside the submitting
process: on Flink, once that client exits, the job loses its workers and restarts forever,
orphaned. An endless Flink job therefore runs its workers in this pool instead (the EXTERNAL
environment), which `scripts/flink.sh start` starts beside the cluster:

    python -m pipelines.workers --port 18099

and `bash scripts/flink.sh runner-args` names. The submitting client may then exit, and the job
runs on until it is cancelled (`bash scripts/flink.sh cancel`).

Beam's own `worker_pool_main` listens on `[::]` (every interface) with no option for the
address; this pool listens on 127.0.0.1 only. Its workers run as threads of this process (Beam's
default), so they share one model-signing key (`models.serde.KeySource`).
"""
from __future__ import annotations

import argparse
import atexit
import logging
import signal
import threading

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker import worker_pool_main
from apache_beam.utils import thread_pool_executor

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 18099


def start_worker_pool(port: int = 0, use_process: bool = False, state_cache_size: int = 0,
                      data_buffer_time_limit_ms: int = -1) -> tuple[str, grpc.Server]:
    """(address, server) of an SDK worker pool on 127.0.0.1:`port` (0: any free port): Beam's
    `BeamFnExternalWorkerPoolServicer.start` with the same settings, which binds `[::]`."""
    server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                         options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)])
    bound = server.add_insecure_port(f"{LOOPBACK}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {LOOPBACK}:{port} (in use?)")
    pool = worker_pool_main.BeamFnExternalWorkerPoolServicer(
        use_process=use_process, state_cache_size=state_cache_size,
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        address, server = start_worker_pool(args.port)
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
