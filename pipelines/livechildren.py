"""The processes `pipelines.live` starts, and stops whatever happens: each in a session of its
own (so a stop reaches what it started in turn, such as the learner's runner), logging to a
file, stopped by SIGINT and, if that is not enough, killed.
"""
from __future__ import annotations

import os
import signal
import sys
import subprocess
import time

from core import kafka
from pipelines.console import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOP_S = 20.0  # how long a child may take to stop cleanly before it is killed


class Child:
    """A process started by `command`, its output in `log`."""

    def __init__(self, name: str, command: list, log: str, env: dict | None = None):
        self.name, self.log = name, log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
        self.pid = self.process.pid

    def check(self) -> None:
        """UserError, with the end of its log, if it stopped."""
        code = self.process.poll()
        if code is not None:
            raise UserError(f"the {self.name} stopped (exit {code}); the end of {self.log}:\n{self.tail()}")

    def wait_for(self, ready, timeout_s: float) -> None:
        """Waits until `ready()` is true (its exceptions count as not yet)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check()
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 (not up yet)
                pass
            if time.monotonic() > deadline:
                raise UserError(f"the {self.name} was not ready within {timeout_s:.0f} s; see {self.log}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGINT to its session, then SIGKILL after STOP_S; waits until it is gone."""
        if self.process.poll() is not None:
            return
        _signal_group(self.pid, signal.SIGINT)
        try:
            self.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            _signal_group(self.pid, signal.SIGKILL)
            self.process.wait()
        _signal_group(self.pid, signal.SIGKILL)  # what it started and left behind

    def tail(self, lines: int = 15) -> str:
        with open(self.log, errors="replace") as f:
            return "".join(f.readlines()[-lines:])


class Broker:
    """The local broker `scripts/kafka.sh` started (it runs as a daemon: stopped by the script)."""

    name, pid = "Kafka broker", None

    def __init__(self, port: str, log: str):
        self.env, self.log = {**os.environ, "KAFKA_PORT": port}, log
        self._script("start", timeout=600)
        status = self._script("status", timeout=30)  # "kafka: running (pid N) ..."
        self.pid = status.partition("(pid ")[2].partition(")")[0] or None

    def check(self) -> None:
        pass

    def stop(self) -> None:
        self._script("stop", timeout=120)

    def _script(self, command: str, timeout: float) -> str:
        done = subprocess.run(["bash", f"{ROOT}/scripts/kafka.sh", command], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        with open(self.log, "a") as f:
            f.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise UserError(f"bash scripts/kafka.sh {command} failed; see {self.log}")
        return done.stdout


def start_kafka(bootstrap: str, out: str, console) -> Broker | None:
    """None if a broker answers at `bootstrap`; else the local one, started."""
    try:
        kafka.topics(bootstrap, timeout_s=3)
        console.say(f"using the Kafka broker at {bootstrap}")
        return None
    except ConnectionError:
        pass
    host, _, port = bootstrap.partition(":")
    if host not in ("127.0.0.1", "localhost") or "," in bootstrap:
        raise UserError(f"no Kafka broker answers at {bootstrap}")
    console.say(f"starting the Kafka broker on {bootstrap} (bash scripts/kafka.sh start)")
    return Broker(port, f"{out}/kafka.log")


def _signal_group(pid: int, sig) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def owner_command(args, out: str, registry: str) -> list:
    """The experiment's owner over the loop's topic, its state in the registry's database (where
    the server reads it), its report in OUTPUT/experiment."""
    return [sys.executable, "-m", "pipelines.experiment", "--experiment", args.experiment, "--bootstrap",
            args.bootstrap, "--topic", args.topic, "--store", registry, "--registry", registry,
            "--report", os.path.join(out, "experiment"), "--attribution_minutes", str(args.attribution_s / 60),
            "--allowed_lateness_s", str(args.allowed_lateness_s), "--check_s", "5"]
