"""What runs beside a server under load in `benchmarks.serving`: a streaming learner fed by the
simulator, publishing to the stores the server reads, and the broker, pinned to the learner's
cores so that the server has its own."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def pin_broker(cores: str) -> str | None:
    """Pins every thread of our broker (`scripts/kafka.sh`'s) to `cores`; returns the cores it had."""
    pid_file = ROOT / ".run" / "kafka" / "kafka.pid"
    if not cores or not pid_file.exists():
        return None
    pid = pid_file.read_text().strip()
    had = subprocess.run(["taskset", "-c", "-p", pid], capture_output=True, text=True)
    if had.returncode != 0:
        return None
    subprocess.run(["taskset", "-a", "-c", "-p", cores, pid], check=True, stdout=subprocess.DEVNULL)
    return had.stdout.rsplit(":", 1)[1].strip()


def start_learner(out: pathlib.Path, bootstrap: str, rate: float, prefix: str, cores: str, nice: int = 0) -> list:
    """The simulator into a topic at `rate` records/s and a streaming learner publishing to the
    stores in `out`, on `cores` at niceness `nice`; returns both processes once the learner has
    published a new version."""
    from stores.registry import open_registry
    registry = open_registry(str(out / "registry.sqlite"))
    published = registry.latest("recommender").version
    topic, log = f"{prefix}.interactions", open(out / "learner.log", "ab")
    pin = (["taskset", "-c", cores] if cores else []) + (["nice", "-n", str(nice)] if nice else [])
    feed = subprocess.Popen([*pin, sys.executable, "-m", "simulator", "--kafka", bootstrap, "--topic", topic, "--partitions",
                             "1", "--rate", str(rate), "--impressions", "1000000", "--seed", "11"], stdout=log, stderr=log)
    time.sleep(3)  # the topic exists
    learner = subprocess.Popen([*pin, sys.executable, "-m", "pipelines.recommend", "--source", "kafka", "--streaming",
                                "--no_baselines", "--bootstrap", bootstrap, "--topic", topic, "--kafka_out", prefix,
                                "--output", str(out / "learner"), "--registry", str(out / "registry.sqlite"),
                                "--online_store", str(out / "online.sqlite"), "--attribution_minutes", "1"],
                               stdout=log, stderr=log, cwd=ROOT, start_new_session=True)  # with its runner
    deadline = time.monotonic() + 180
    while registry.latest("recommender").version == published:
        if time.monotonic() > deadline or learner.poll() is not None:
            raise SystemExit(f"the learner published nothing; see {out / 'learner.log'}")
        time.sleep(1)
    registry.close()
    return [feed, learner]
