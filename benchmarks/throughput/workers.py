"""Every measurement runs in a fresh Python process, so one run's memory and caches do not leak
into the next, on a copy of the project's packages taken at the start (others may edit the
working tree meanwhile; `code_snapshot_sha256` in the results names the copy). A worker's
peak RSS is that of its process tree (the measuring process and its children, e.g. Prism),
sampled from /proc.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from benchmarks.memory import descendants

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CODE_PACKAGES = ("benchmarks", "core", "models", "pipelines", "schemas", "simulator", "stores",
                 "transforms")


def run_worker(spec: dict, code_root: str) -> dict:
    """Runs one measurement in a fresh process on the code under `code_root`; adds the peak
    RSS of its process tree."""
    env = {**os.environ, "PYTHONPATH": code_root,
           "STREAMML_PRISM": os.environ.get("STREAMML_PRISM", _live_prism())}
    # cwd: `python -m` puts the working directory first on sys.path, before PYTHONPATH.
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.throughput", "--worker", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=code_root)
    sampler = _TreeRssSampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed ({proc.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_tree_rss_mb"] = round(sampler.peak_kb / 1024, 1)
    return result


def snapshot_code(workdir: str) -> tuple[str, str]:
    """Copies the project's packages to `workdir/code`, so that every worker of this run
    measures the same code while others edit the working tree; returns the copy's root and
    a short hash of its files."""
    dest = os.path.join(workdir, "code")
    shutil.rmtree(dest, ignore_errors=True)
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        shutil.copytree(os.path.join(PROJECT_ROOT, package), os.path.join(dest, package),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder, dirs, files in sorted(os.walk(dest)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, dest).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return dest, digest.hexdigest()[:12]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _live_prism() -> str:
    return os.path.join(PROJECT_ROOT, ".cache", "prism", "bin", "prism")


class _TreeRssSampler(threading.Thread):
    """Samples the summed VmRSS of a process and all its descendants; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval_s, self.peak_kb = pid, interval_s, 0
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in descendants(self.pid)))
            self._done.wait(self.interval_s)

    def stop(self):
        self._done.set()
        self.join()


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
