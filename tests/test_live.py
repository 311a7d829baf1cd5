"""`python -m pipelines.live`: the whole loop (broker, streaming learner, server, simulated users)
from one command, learning what it serves, and Ctrl-C stopping every process it started."""
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import requests

from tests.servers import free_port

HISTORY = 600  # impressions


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_live_loop_learns_what_it_serves_and_ctrl_c_stops_it_all(kafka_bootstrap, tmp_path):
    port, name = free_port(), f"test-live-{uuid.uuid4().hex[:8]}"
    live = subprocess.Popen(
        [sys.executable, "-m", "pipelines.live", "--output", str(tmp_path), "--port", str(port),
         "--bootstrap", kafka_bootstrap, "--topic", f"{name}.interactions", "--kafka_out", name,
         "--history", str(HISTORY), "--users", "100", "--visits_per_s", "4", "--attribution_s", "10",
         "--allowed_lateness_s", "2", "--status_s", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in live.stdout:
            lines.append(line)
            if line.startswith("serving at"):
                break
        assert live.poll() is None, "".join(lines)
        pids = [int(p) for p in re.findall(r"pid (\d+)", next(x for x in lines if x.startswith("started:")))]
        url = f"http://127.0.0.1:{port}"
        serving_from_ms = time.time() * 1000

        def newest():
            models = requests.get(f"{url}/models", timeout=5).json()["models"]
            return models[0] if models else None

        # The streaming learner publishes from the history, then learns the served impressions:
        # its versions come to hold more labels than the history had impressions, learned past
        # the window of the first impression served.
        deadline = time.monotonic() + 240
        while True:
            model = newest()
            if model and model["step"] > HISTORY + 100 and model["clock_ms"] > serving_from_ms + 10_000:
                break
            assert live.poll() is None and time.monotonic() < deadline, (model, "".join(lines))
            time.sleep(2)
        ranking = requests.get(f"{url}/recommendations/u00001", params={"k": 3}, timeout=5).json()
        assert ranking["source"] == "live" and len(ranking["items"]) == 3
        assert ranking["model_version"] >= model["version"]
        truth = (tmp_path / "truth.jsonl").read_text().splitlines()
        assert len(truth) > 100  # the users saw what was served, and their truth went apart
    finally:
        live.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = live.communicate(timeout=120)
        lines.append(rest)
    output = "".join(lines)
    assert live.returncode == 130, output
    assert re.search(r"\d\d:\d\d:\d\d  recommender v\d+ \([\d,]+ labels learned", output), output
    assert "stopped: server (pid" in output and "Traceback" not in output, output
    for pid in pids:  # the learner (and the runner it started) and the server are gone
        assert not _alive(pid), (pid, output)
    assert not [p for p in _session_members(pids)], output


def _session_members(sessions):
    """Processes still in the sessions the children led (what they started)."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.split("\n")
    return [line for line in ps if line.split() and int(line.split()[1]) in sessions]
