"""The benchmarks' Flink runner: its Beam flags, and its jobs through Flink's REST API (a
streaming job outlives its Beam client and is cancelled here)."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

from transforms.runners import ROOT

FLINK_MASTER = f"127.0.0.1:{os.environ.get('FLINK_REST_PORT', '18081')}"


def runner_args(runner: str) -> list[str]:
    """Beam flags of `local` or `flink:PARALLELISM`."""
    if runner == "local":
        return []
    name, _, parallelism = runner.partition(":")
    if name != "flink" or not parallelism.isdigit():
        raise ValueError(f"runner {runner!r}: use local or flink:PARALLELISM (e.g. flink:2)")
    return ["--runner=FlinkRunner", f"--flink_master={FLINK_MASTER}", f"--parallelism={parallelism}"]


def flink_jobs(state: str) -> set:
    with urllib.request.urlopen(f"http://{FLINK_MASTER}/jobs/overview", timeout=10) as r:
        return {j["jid"] for j in json.load(r)["jobs"] if j["state"] == state}


def wait_until_flink_runs(before: set, timeout_s: float = 300) -> None:
    """Until a new Flink job runs with all its tasks (job server, expansion and deployment
    take tens of seconds: not latency of the pipeline)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for jid in flink_jobs("RUNNING") - before:
            with urllib.request.urlopen(f"http://{FLINK_MASTER}/jobs/{jid}", timeout=10) as r:
                if all(v["status"] == "RUNNING" for v in json.load(r)["vertices"]):
                    return
        time.sleep(1)
    raise TimeoutError("the Flink job did not start running")


def cancel_flink_jobs(jids) -> None:
    """Cancels Flink jobs by REST: cancelling through Beam's job service left them running."""
    for jid in jids:
        request = urllib.request.Request(f"http://{FLINK_MASTER}/jobs/{jid}?mode=cancel", method="PATCH")
        urllib.request.urlopen(request, timeout=10).close()


def endless_runner_args(runner: str) -> list[str]:
    """Beam flags of `runner` for a job that outlives its client: on Flink its Python code runs
    in the cluster's worker pool (`scripts/flink.sh runner-args`), not in the client."""
    if runner == "local":
        return []
    pool = subprocess.run(["bash", str(ROOT / "scripts" / "flink.sh"), "runner-args"], capture_output=True,
                          text=True, timeout=60, check=True).stdout.split()
    return pool + [f"--parallelism={runner.partition(':')[2]}"]
